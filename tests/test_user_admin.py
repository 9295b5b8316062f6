"""Users and teams as an administrator manages them: who may grant what, unique emails, offboarding."""

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Scope
from tests.factories import Tenant, make_api_key


def _user(role: str, email: str | None = None) -> dict[str, str]:
    return {
        "email": email or f"{uuid.uuid4().hex[:8]}@example.com",
        "name": "李娜",
        "password": "a-long-password",
        "role": role,
    }


@pytest.mark.parametrize("role", ["admin", "manager", "support"])
async def test_a_caller_cannot_create_a_user_whose_role_it_does_not_hold(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, role: str
) -> None:
    key = await make_api_key(db, tenant, scopes=[Scope.USERS_WRITE, Scope.USERS_READ, Scope.CUSTOMERS_READ])
    response = await client.post("/api/v1/users", json=_user(role), headers={"X-API-Key": key})
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    listed = await client.get("/api/v1/users", headers=tenant.headers())
    assert len(listed.json()["items"]) == len(tenant.users)


async def test_a_caller_creates_users_within_its_own_scopes(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    key = await make_api_key(db, tenant, scopes=[Scope.USERS_WRITE, Scope.USERS_READ, Scope.CUSTOMERS_READ])
    created = await client.post("/api/v1/users", json=_user("readonly"), headers={"X-API-Key": key})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/api/v1/users/{created.json()['id']}"
