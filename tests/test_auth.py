"""Authentication (tokens and API keys) and scope checks."""

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Scope
from app.core.settings import get_settings
from tests.factories import PASSWORD, Tenant, customer_body, make_api_key


def _unsigned(claims: dict[str, object]) -> str:
    """A token with `alg: none` and no signature, built by hand: libraries differ on whether they
    write one at all."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _claims(tenant: Tenant, **overrides: object) -> dict[str, object]:
    settings = get_settings()
    user = tenant.users["admin"]
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(user.id),
        "ws": str(tenant.id),
        "role": "admin",
        "typ": "access",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


async def test_password_grant_issues_tokens_that_work(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "password",
            "workspace": tenant.workspace.slug,
            "email": "sales@" + tenant.workspace.slug + ".test",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "bearer"
    me = await client.get("/api/v1/workspace", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["id"] == str(tenant.id)
    refreshed = await client.post(
        "/api/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200


async def test_wrong_password_is_401(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "password",
            "workspace": tenant.workspace.slug,
            "email": f"admin@{tenant.workspace.slug}.test",
            "password": "wrong",
        },
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_refresh_token_is_not_an_access_token(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "password",
            "workspace": tenant.workspace.slug,
            "email": f"admin@{tenant.workspace.slug}.test",
            "password": PASSWORD,
        },
    )
    refresh = response.json()["refresh_token"]
    assert (await client.get("/api/v1/customers", headers={"Authorization": f"Bearer {refresh}"})).status_code == 401


async def test_no_credentials_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/customers")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "make_token",
    [
        lambda t: "garbled.token.value",
        lambda t: jwt.encode(_claims(t, exp=int(time.time()) - 10), get_settings().jwt_secret, algorithm="HS256"),
        lambda t: jwt.encode(_claims(t, aud="someone-else"), get_settings().jwt_secret, algorithm="HS256"),
        lambda t: jwt.encode(_claims(t, iss="someone-else"), get_settings().jwt_secret, algorithm="HS256"),
        lambda t: jwt.encode(_claims(t), "another-secret-of-sufficient-length-000", algorithm="HS256"),
        lambda t: jwt.encode(_claims(t), get_settings().jwt_secret, algorithm="HS512"),
        lambda t: _unsigned(_claims(t)),
        lambda t: jwt.encode({k: v for k, v in _claims(t).items() if k != "exp"}, get_settings().jwt_secret),
        lambda t: jwt.encode(_claims(t, role="superuser"), get_settings().jwt_secret, algorithm="HS256"),
        lambda t: jwt.encode(_claims(t, team="not-a-uuid"), get_settings().jwt_secret, algorithm="HS256"),
        lambda t: jwt.encode(_claims(t, ws=12345), get_settings().jwt_secret, algorithm="HS256"),
    ],
    ids=[
        "garbled",
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "wrong-key",
        "other-alg",
        "alg-none",
        "no-exp",
        "bad-role",
        "bad-team",
        "numeric-workspace",
    ],
)
async def test_bad_tokens_are_401(client: httpx.AsyncClient, tenant: Tenant, make_token: object) -> None:
    token = make_token(tenant)  # type: ignore[operator]
    response = await client.get("/api/v1/customers", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text


async def test_api_key_authenticates_and_revocation_takes_effect(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    key = await make_api_key(db, tenant)
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": key})).status_code == 200
    keys = (await client.get("/api/v1/api-keys", headers=tenant.headers())).json()["items"]
    assert all("key" not in k and "secret_hash" not in k for k in keys)
    revoked = await client.delete(f"/api/v1/api-keys/{keys[0]['id']}", headers=tenant.headers())
    assert revoked.status_code == 200
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": key})).status_code == 401


@pytest.mark.parametrize("authorization", ["Bearer not.a.token", "Basic YTpi", "", "valid"])
async def test_a_key_with_an_authorization_header_beside_it_is_401(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, authorization: str
) -> None:
    """One credential per request: an invalid second one never passes unnoticed, a valid one never
    leaves the caller guessing which identity acted."""
    key = await make_api_key(db, tenant)
    if authorization == "valid":
        authorization = tenant.headers("sales")["Authorization"]
    response = await client.get("/api/v1/customers", headers={"X-API-Key": key, "Authorization": authorization})
    assert response.status_code == 401
    assert "not both" in response.json()["detail"]
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": key})).status_code == 200


async def test_an_empty_api_key_beside_a_bearer_token_is_401(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get("/api/v1/customers", headers={"X-API-Key": "", **tenant.headers()})
    assert response.status_code == 401
    assert "not both" in response.json()["detail"]


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_a_credential_header_sent_twice_is_401(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, header: str
) -> None:
    """The same rule as for two kinds: the second copy, valid or not, is never silently ignored."""
    key = await make_api_key(db, tenant)
    value = key if header == "X-API-Key" else tenant.headers()["Authorization"]
    for second in (value, "garbage"):
        response = await client.get("/api/v1/customers", headers=[(header, value), (header, second)])
        assert response.status_code == 401
        assert "not both" in response.json()["detail"]
    assert (await client.get("/api/v1/customers", headers={header: value})).status_code == 200


@pytest.mark.parametrize("key", ["gx_nope", "gx_abcdefghij_" + "x" * 40, "Bearer x", "gx_" + "a" * 200])
async def test_garbled_or_unknown_api_keys_are_401(client: httpx.AsyncClient, key: str) -> None:
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": key})).status_code == 401


async def test_api_key_with_right_prefix_and_wrong_secret_is_401(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    key = await make_api_key(db, tenant)
    forged = key[: key.rindex("_") + 1] + "A" * 43
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": forged})).status_code == 401


async def test_created_api_key_is_shown_once_and_limited_to_its_scopes(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await client.post(
        "/api/v1/api-keys", json={"name": "reader", "scopes": ["customers:read"]}, headers=tenant.headers()
    )
    assert created.status_code == 201
    key = created.json()["key"]
    headers = {"X-API-Key": key}
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 200
    denied = await client.post("/api/v1/customers", json=customer_body(), headers=headers)
    assert denied.status_code == 403
    assert denied.json()["missing_scopes"] == ["customers:write"]


async def test_a_key_cannot_get_scopes_its_creator_lacks(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    key = await make_api_key(db, tenant, scopes=[Scope.API_KEYS_WRITE, Scope.CUSTOMERS_READ])
    response = await client.post(
        "/api/v1/api-keys", json={"name": "escalate", "scopes": ["customers:write"]}, headers={"X-API-Key": key}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["manager", "sales", "support", "readonly"])
async def test_admin_operations_need_admin_scopes(client: httpx.AsyncClient, tenant: Tenant, role: str) -> None:
    headers = tenant.headers(role)
    assert (
        await client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["customers:read"]}, headers=headers)
    ).status_code == 403
    body = {"email": f"{uuid.uuid4().hex[:8]}@x.test", "name": "n", "password": "long-enough-pass", "role": "admin"}
    assert (await client.post("/api/v1/users", json=body, headers=headers)).status_code == 403
    field = {"key": "level", "label": "Level", "type": "text"}
    assert (await client.post("/api/v1/custom-fields", json=field, headers=headers)).status_code == 403


async def test_readonly_role_sees_masked_personal_data(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (
        await client.post(
            "/api/v1/customers",
            json=customer_body(
                emails=["zhang.wei@example.com"], phones=["13800138000"], address={"street": "科技园路 1 号"}
            ),
            headers=tenant.headers(),
        )
    ).json()
    seen = (await client.get(f"/api/v1/customers/{created['id']}", headers=tenant.headers("readonly"))).json()
    assert seen["pii_masked"] is True
    assert seen["emails"] == ["z***@example.com"]
    assert seen["phones"] == ["+861******8000"]
    assert seen["address"]["street"] == "***"
    assert (
        await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers("readonly"))
    ).status_code == 403


async def test_admin_creates_a_user_who_can_sign_in(client: httpx.AsyncClient, tenant: Tenant) -> None:
    email = f"new-{uuid.uuid4().hex[:6]}@example.com"
    created = await client.post(
        "/api/v1/users",
        json={
            "email": email,
            "name": "李娜",
            "password": "a-long-password",
            "role": "sales",
            "team_id": str(tenant.team.id),
        },
        headers=tenant.headers(),
    )
    assert created.status_code == 201, created.text
    assert "password" not in created.text
    token = await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "password",
            "workspace": tenant.workspace.slug,
            "email": email,
            "password": "a-long-password",
        },
    )
    assert token.status_code == 200
    duplicate = await client.post(
        "/api/v1/users",
        json={"email": email.upper(), "name": "x", "password": "a-long-password", "role": "sales"},
        headers=tenant.headers(),
    )
    assert duplicate.status_code == 409
