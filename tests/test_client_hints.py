"""Mistakes a client makes while it is being written get a problem that says what to do instead."""

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer
from tests.factories import Tenant, customer_body, make_api_key


async def _customers(db: AsyncSession, tenant: Tenant) -> int:
    return int(await db.scalar(select(func.count()).where(Customer.workspace_id == tenant.id)) or 0)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"name=%E7%8E%8B%E4%BC%9F"),
        ("text/plain", b'{"name": "\xe7\x8e\x8b\xe4\xbc\x9f"}'),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nW\r\n--x--'),
    ],
)
async def test_a_body_that_is_not_json_is_told_to_send_json(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, content_type: str, body: bytes
) -> None:
    response = await client.post(
        "/api/v1/customers", content=body, headers={**tenant.headers(), "Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert error["loc"] == ["body"] and error["type"] == "json_required"
    assert "Content-Type: application/json" in error["msg"]
    assert await _customers(db, tenant) == 0


async def test_a_json_body_of_the_wrong_shape_keeps_its_own_message(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/api/v1/customers", json=["not", "an", "object"], headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] != "json_required"


async def test_messages_carry_no_validator_prefix(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/api/v1/customers", json=customer_body(phones=["12"]), headers=tenant.headers())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["type"] == "value_error"
    assert not body["errors"][0]["msg"].startswith("Value error")
    assert "Value error" not in body["detail"]


async def test_an_api_key_sent_as_a_bearer_token_is_pointed_to_the_api_key_header(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    key = await make_api_key(db, tenant)
    response = await client.get("/api/v1/customers", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401, response.text
    assert "X-API-Key" in response.json()["detail"]
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": key})).status_code == 200
