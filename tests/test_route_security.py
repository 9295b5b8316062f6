"""Every route of the API, read from the route table, against missing, garbled and foreign
credentials: a new route is covered the day it is added."""

import re
import uuid

import httpx
import pytest
from fastapi import FastAPI

from app.core.settings import get_settings
from app.main import create_app
from tests.factories import Tenant

# Authenticated by what they carry: a password, a CSAT token, an intake form token.
PUBLIC = {("POST", "/api/v1/auth/token"), ("POST", "/api/v1/csat/{token}"), ("POST", "/api/v1/intake/{token}")}
# Provider callbacks: the channel's callback token in the path is the credential.
PUBLIC |= {
    ("POST", f"/api/v1/channel-callbacks/{{token}}/{path}")
    for path in ("tencent/status", "tencent/reply", "aliyun/report", "aliyun/reply", "email/bounce")
}


def _routes() -> list[tuple[str, str]]:
    # A throwaway app with no database behind it: only its route table (as published) is read.
    app = create_app(get_settings(), database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    paths = app.openapi()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/api/v1")
        for method in operations
    ]


ROUTES = _routes()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def test_the_route_table_is_not_empty() -> None:
    assert len(ROUTES) > 60


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r not in PUBLIC])
async def test_every_route_needs_credentials(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, _concrete(path), json={})
    assert response.status_code == 401, f"{method} {path}: {response.status_code}"
    garbled = await client.request(method, _concrete(path), json={}, headers={"Authorization": "Bearer x.y.z"})
    assert garbled.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if "{" in r[1]])
async def test_unknown_or_foreign_ids_never_succeed_or_fail_500(
    client: httpx.AsyncClient, app: FastAPI, tenant: Tenant, method: str, path: str
) -> None:
    """With an admin of a workspace that owns none of these ids: never 2xx, never 5xx, no trace."""
    headers = {**tenant.headers(), "If-Match": '"1"'}
    response = await client.request(method, _concrete(path), json={}, headers=headers)
    assert 400 <= response.status_code < 500, f"{method} {path}: {response.status_code} {response.text[:200]}"
    assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower()
