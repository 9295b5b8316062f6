"""Users and teams as an administrator manages them: who may grant what, unique emails, offboarding."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Role, Scope
from app.http.rate_limits import SignInThrottle
from app.models import AuditEntry, OutboxEvent, User
from app.services.identity import user_state
from tests.factories import PASSWORD, Tenant, make_api_key, make_user
from tests.test_serve_processes import _serving


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


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Li.Na@Example.com", "li.na@example.COM"),
        ("li.na@example.com", "ｌｉ.ｎａ@example.com"),
        ("strasse@example.com", "STRAßE@example.com"),
    ],
)
async def test_emails_differing_only_by_case_or_normalisation_are_one_user(
    client: httpx.AsyncClient, tenant: Tenant, first: str, second: str
) -> None:
    created = await client.post("/api/v1/users", json=_user("sales", first), headers=tenant.headers())
    assert created.status_code == 201, created.text
    duplicate = await client.post("/api/v1/users", json=_user("sales", second), headers=tenant.headers())
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["existing_id"] == created.json()["id"]
    signed_in = await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "password",
            "workspace": tenant.workspace.slug,
            "email": second,
            "password": "a-long-password",
        },
    )
    assert signed_in.status_code == 200, signed_in.text


async def _patch_user(
    client: httpx.AsyncClient, tenant: Tenant, user_id: uuid.UUID | str, patch: dict[str, object], who: str = "admin"
) -> httpx.Response:
    version = (await client.get(f"/api/v1/users/{user_id}", headers=tenant.headers())).json()["version"]
    return await client.patch(
        f"/api/v1/users/{user_id}", json=patch, headers={**tenant.headers(who), "If-Match": f'"{version}"'}
    )


async def _sign_in(client: httpx.AsyncClient, tenant: Tenant, who: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "password",
            "workspace": tenant.workspace.slug,
            "email": tenant.users[who].email,
            "password": password,
        },
    )


async def test_deactivating_a_user_stops_its_tokens_and_keys_at_once(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    tokens = (await _sign_in(client, tenant, "sales")).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    manager_key = await client.post(
        "/api/v1/api-keys", json={"name": "mine", "scopes": ["customers:read"]}, headers=tenant.headers()
    )
    assert (await client.get("/api/v1/customers", headers=bearer)).status_code == 200
    key = {"X-API-Key": manager_key.json()["key"]}
    assert (await client.get("/api/v1/customers", headers=key)).status_code == 200
    tenant.users["second"] = await make_user(db, tenant.id, Role.ADMIN, team_id=None, email="a2@example.com")
    await db.commit()

    response = await _patch_user(client, tenant, tenant.users["sales"].id, {"is_active": False})
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert response.headers["etag"] == f'"{response.json()["version"]}"'
    assert (await client.get("/api/v1/customers", headers=bearer)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401
    assert (await _sign_in(client, tenant, "sales")).status_code == 401

    admin = tenant.users["admin"].id
    assert (await _patch_user(client, tenant, admin, {"role": "readonly"})).status_code == 200
    # The key holds at most its creator's present scopes: `customers:read` the readonly role keeps.
    assert (await client.get("/api/v1/customers", headers=key)).status_code == 200
    assert (await client.get("/api/v1/api-keys", headers=key)).status_code == 403
    assert (await _patch_user(client, tenant, admin, {"is_active": False}, who="second")).status_code == 200
    assert (await client.get("/api/v1/customers", headers=key)).status_code == 401


async def test_a_demotion_narrows_a_token_still_valid(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = tenant.headers("manager")
    assert (await client.post("/api/v1/customers", json={"name": "李雷"}, headers=headers)).status_code == 201
    assert (await _patch_user(client, tenant, tenant.users["manager"].id, {"role": "readonly"})).status_code == 200
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 200
    response = await client.post("/api/v1/customers", json={"name": "张伟"}, headers=headers)
    assert response.status_code == 403


async def test_another_process_sees_a_deactivation_within_the_cache_bound(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = tenant.headers("support")
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 200
    # As another process would: the row changes without this process hearing of it.
    await db.execute(
        update(User)
        .where(User.workspace_id == tenant.id, User.id == tenant.users["support"].id)
        .values(is_active=False)
    )
    await db.commit()
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 200
    monkeypatch.setattr(user_state, "_ttl", lambda: 0.0)
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 401


async def test_the_last_admin_cannot_be_demoted_or_deactivated(client: httpx.AsyncClient, tenant: Tenant) -> None:
    admin = tenant.users["admin"].id
    patches: list[dict[str, object]] = [{"role": "manager"}, {"is_active": False}]
    for patch in patches:
        response = await _patch_user(client, tenant, admin, patch)
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/api/v1/users/{admin}", headers=tenant.headers())).json()["role"] == "admin"


async def test_two_admins_demoting_each_other_at_once_leave_one(
    live_client: httpx.AsyncClient, live_tenant: Tenant, app: FastAPI
) -> None:
    async with app.state.sessions() as session:
        second = await make_user(session, live_tenant.id, Role.ADMIN, team_id=None, email=f"a2@{live_tenant.id}.test")
        await session.commit()
    live_tenant.users["admin2"] = second
    first = live_tenant.users["admin"]

    async def demote(who: str, target: User) -> int:
        response = await live_client.patch(
            f"/api/v1/users/{target.id}",
            json={"role": "sales"},
            headers={**live_tenant.headers(who), "If-Match": "*"},
        )
        return response.status_code

    statuses = await asyncio.gather(demote("admin", second), demote("admin2", first))
    assert sorted(statuses) == [200, 409], statuses
    async with app.state.sessions() as session:
        admins = await session.scalar(
            select(func.count()).where(User.workspace_id == live_tenant.id, User.role == "admin", User.is_active)
        )
    assert admins == 1


async def test_a_caller_cannot_change_or_reset_a_user_above_its_scopes(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    key = {"X-API-Key": await make_api_key(db, tenant, scopes=[Scope.USERS_WRITE, Scope.USERS_READ])}
    admin, sales = tenant.users["admin"].id, tenant.users["sales"].id
    patches: list[tuple[uuid.UUID, dict[str, object]]] = [
        (sales, {"role": "admin"}),
        (admin, {"is_active": False}),
        (admin, {"name": "x"}),
    ]
    for user_id, patch in patches:
        response = await client.patch(f"/api/v1/users/{user_id}", json=patch, headers={**key, "If-Match": "*"})
        assert response.status_code == 403, response.text
    reset = await client.post(f"/api/v1/users/{admin}/password", json={"new_password": "taken-over-now"}, headers=key)
    assert reset.status_code == 403
    assert (await _sign_in(client, tenant, "admin")).status_code == 200


async def test_a_user_changes_its_password_and_older_tokens_stop(client: httpx.AsyncClient, tenant: Tenant) -> None:
    old = (await _sign_in(client, tenant, "sales")).json()
    bearer = {"Authorization": f"Bearer {old['access_token']}"}
    wrong = await client.post(
        "/api/v1/users/me/password", json={"current_password": "nope", "new_password": "a-new-password"}, headers=bearer
    )
    assert wrong.status_code == 403
    # A token issued in an earlier second than the change, as any real earlier session is.
    stale = tenant.headers("sales")
    await asyncio.sleep(1.05)
    changed = await client.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a-new-password"},
        headers=bearer,
    )
    assert changed.status_code == 200, changed.text
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await client.get("/api/v1/customers", headers=fresh)).status_code == 200
    assert (await client.get("/api/v1/customers", headers=stale)).status_code == 401
    refresh = await client.post(
        "/api/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": old["refresh_token"]}
    )
    assert refresh.status_code == 401
    assert (await _sign_in(client, tenant, "sales")).status_code == 401
    assert (await _sign_in(client, tenant, "sales", "a-new-password")).status_code == 200


async def test_an_admin_resets_a_password(client: httpx.AsyncClient, tenant: Tenant) -> None:
    user_id = tenant.users["support"].id
    reset = await client.post(
        f"/api/v1/users/{user_id}/password", json={"new_password": "reset-by-admin"}, headers=tenant.headers()
    )
    assert reset.status_code == 200, reset.text
    assert (await _sign_in(client, tenant, "support", "reset-by-admin")).status_code == 200
    assert (await _sign_in(client, tenant, "support")).status_code == 401


async def test_user_changes_are_audited_and_emit_events(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    user_id = tenant.users["sales"].id
    response = await _patch_user(client, tenant, user_id, {"team_id": None, "name": "王芳"})
    assert response.status_code == 200, response.text
    entry = await db.scalar(
        select(AuditEntry).where(AuditEntry.workspace_id == tenant.id, AuditEntry.entity_id == user_id)
    )
    assert entry is not None
    assert entry.changes["team_id"] == {"before": str(tenant.team.id), "after": None}
    event = await db.scalar(
        select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "user.updated")
    )
    assert event is not None
    assert event.data["changed_fields"] == ["name", "team_id"]


@pytest.mark.parametrize(
    "patch",
    [{"role": None}, {"name": None}, {"is_active": None}, {"role": "owner"}, {"email": "x@y.z"}, {"team_id": "nope"}],
)
async def test_a_bad_user_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, patch: dict[str, object]
) -> None:
    user_id = tenant.users["sales"].id
    response = await _patch_user(client, tenant, user_id, patch)
    assert response.status_code == 422, response.text
    assert (await client.get(f"/api/v1/users/{user_id}", headers=tenant.headers())).json()["version"] == 1


async def test_a_team_of_another_workspace_is_422(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = await _patch_user(client, tenant, tenant.users["sales"].id, {"team_id": str(other_tenant.team.id)})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "team_id"]


async def test_users_and_teams_of_another_workspace_are_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    headers = {**tenant.headers(), "If-Match": "*"}
    user, team = other_tenant.users["sales"].id, other_tenant.team.id
    assert (await client.get(f"/api/v1/users/{user}", headers=headers)).status_code == 404
    assert (await client.patch(f"/api/v1/users/{user}", json={"name": "x"}, headers=headers)).status_code == 404
    reset = await client.post(f"/api/v1/users/{user}/password", json={"new_password": "long-enough-1"}, headers=headers)
    assert reset.status_code == 404
    assert (await client.get(f"/api/v1/teams/{team}", headers=headers)).status_code == 404
    assert (await client.patch(f"/api/v1/teams/{team}", json={"name": "x"}, headers=headers)).status_code == 404
    assert (await client.delete(f"/api/v1/teams/{team}", headers=headers)).status_code == 404


async def test_teams_are_renamed_with_if_match_and_deleted_only_when_empty(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = tenant.headers()
    created = await client.post("/api/v1/teams", json={"name": "North"}, headers=headers)
    assert created.status_code == 201
    team = created.json()
    assert created.headers["location"] == f"/api/v1/teams/{team['id']}"
    url = f"/api/v1/teams/{team['id']}"
    assert (await client.patch(url, json={"name": "Nord"}, headers=headers)).status_code == 428
    renamed = await client.patch(url, json={"name": "Nord"}, headers={**headers, "If-Match": '"1"'})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["version"] == 2
    stale = await client.patch(url, json={"name": "Sud"}, headers={**headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert (await client.patch(url, json={"name": ""}, headers={**headers, "If-Match": "*"})).status_code == 422

    full = f"/api/v1/teams/{tenant.team.id}"
    busy = await client.delete(full, headers={**headers, "If-Match": "*"})
    assert busy.status_code == 409, busy.text
    assert (await client.get(full, headers=headers)).status_code == 200
    assert (await client.delete(url, headers={**headers, "If-Match": '"2"'})).status_code == 204
    assert (await client.get(url, headers=headers)).status_code == 404


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttle_clock(app: FastAPI) -> Iterator[_Clock]:
    """A fresh sign-in throttle on a clock the test moves."""
    clock = _Clock()
    saved = app.state.sign_in_throttle
    # A low source limit keeps the test short: each refused guess costs an Argon2 verification.
    app.state.sign_in_throttle = SignInThrottle(per_source=12, clock=clock)
    try:
        yield clock
    finally:
        app.state.sign_in_throttle = saved


async def test_password_guessing_is_throttled_with_a_growing_retry_after(
    client: httpx.AsyncClient, tenant: Tenant, throttle_clock: _Clock
) -> None:
    for _ in range(5):
        assert (await _sign_in(client, tenant, "sales", "wrong-guess")).status_code == 401
    refused = await _sign_in(client, tenant, "sales", "wrong-guess")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "60"
    # Locked means locked: the right password is not even checked, so a guess learns nothing.
    assert (await _sign_in(client, tenant, "sales")).status_code == 429
    # Another account is not locked by this one's guesses.
    assert (await _sign_in(client, tenant, "support")).status_code == 200

    throttle_clock.now += 61
    assert (await _sign_in(client, tenant, "sales", "wrong-guess")).status_code == 401
    assert (await _sign_in(client, tenant, "sales")).headers["retry-after"] == "120"
    throttle_clock.now += 121
    assert (await _sign_in(client, tenant, "sales")).status_code == 200
    # A success starts the count again.
    for _ in range(4):
        assert (await _sign_in(client, tenant, "sales", "wrong-guess")).status_code == 401
    assert (await _sign_in(client, tenant, "sales")).status_code == 200


async def test_the_account_lock_is_capped(client: httpx.AsyncClient, tenant: Tenant, throttle_clock: _Clock) -> None:
    for _ in range(5):
        await _sign_in(client, tenant, "sales", "wrong-guess")
    # One guess each time the lock ends: the lock doubles up to its cap, and no further.
    for _ in range(8):
        throttle_clock.now += 901
        assert (await _sign_in(client, tenant, "sales", "wrong-guess")).status_code == 401
    refused = await _sign_in(client, tenant, "sales")
    assert int(refused.headers["retry-after"]) == 900
    throttle_clock.now += 900
    assert (await _sign_in(client, tenant, "sales")).status_code == 200


async def test_one_source_guessing_at_many_accounts_is_throttled(
    client: httpx.AsyncClient, tenant: Tenant, throttle_clock: _Clock
) -> None:
    for n in range(12):
        guess = await client.post(
            "/api/v1/auth/token",
            json={
                "grant_type": "password",
                "workspace": tenant.workspace.slug,
                "email": f"guess{n}@example.com",
                "password": "wrong-guess",
            },
        )
        assert guess.status_code == 401
    refused = await _sign_in(client, tenant, "admin")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"


async def test_a_key_without_events_read_cannot_subscribe_to_the_event_stream(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    """A webhook endpoint receives every event of its types, customers' personal data included: it
    is a way to read the event stream, so it needs the scope that reads it."""
    key = await make_api_key(db, tenant, scopes=[Scope.WEBHOOKS_WRITE])
    body = {"url": "https://hooks.example.com/guanxi", "event_types": ["customer.*"]}
    response = await client.post("/api/v1/webhook-endpoints", json=body, headers={"X-API-Key": key})
    assert response.status_code == 403, response.text
    assert response.json()["missing_scopes"] == ["events:read"]


async def test_bad_password_changes_are_refused(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    headers = tenant.headers("sales")
    short = await client.post(
        "/api/v1/users/me/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=headers
    )
    assert short.status_code == 422
    key = {"X-API-Key": await make_api_key(db, tenant)}
    keyed = await client.post(
        "/api/v1/users/me/password", json={"current_password": PASSWORD, "new_password": "a-new-password"}, headers=key
    )
    assert keyed.status_code == 403
    reset = await client.post(
        f"/api/v1/users/{tenant.users['sales'].id}/password",
        json={"password": "a-new-password"},
        headers=tenant.headers(),
    )
    assert reset.status_code == 422
    assert (await _sign_in(client, tenant, "sales")).status_code == 200


async def test_two_api_processes_refuse_a_deactivated_user_within_the_cache_bound(
    live_tenant: Tenant, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 2.0
    monkeypatch.setenv("GUANXI_API_KEY_CACHE_SECONDS", str(bound))
    with _serving(database_url, tmp_path, "--workers", "2", "--no-migrate") as base:

        async def spread(headers: dict[str, str]) -> set[int]:
            # A new connection per request: the kernel spreads them over both processes.
            statuses = set()
            for _ in range(16):
                async with httpx.AsyncClient(base_url=base, timeout=10) as fresh:
                    statuses.add((await fresh.get("/api/v1/customers", headers=headers)).status_code)
            return statuses

        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            sign_in = {
                "grant_type": "password",
                "workspace": live_tenant.workspace.slug,
                "email": live_tenant.users["sales"].email,
                "password": PASSWORD,
            }
            signed_in = (await http.post("/api/v1/auth/token", json=sign_in)).json()
            bearer = {"Authorization": f"Bearer {signed_in['access_token']}"}
            assert await spread(bearer) == {200}
            deactivated = await http.patch(
                f"/api/v1/users/{live_tenant.users['sales'].id}",
                json={"is_active": False},
                headers={**live_tenant.headers(), "If-Match": "*"},
            )
            assert deactivated.status_code == 200, deactivated.text
            refresh = {"grant_type": "refresh_token", "refresh_token": signed_in["refresh_token"]}
            assert (await http.post("/api/v1/auth/token", json=refresh)).status_code == 401
            await asyncio.sleep(bound + 0.5)
            assert await spread(bearer) == {401}


async def test_a_key_made_with_a_users_key_stops_with_that_user(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    tenant.users["second"] = await make_user(db, tenant.id, Role.ADMIN, team_id=None, email="a2@example.com")
    await db.commit()
    body = {"name": "parent", "scopes": ["api_keys:write", "customers:read"]}
    parent = (await client.post("/api/v1/api-keys", json=body, headers=tenant.headers())).json()["key"]
    child = await client.post(
        "/api/v1/api-keys", json={"name": "child", "scopes": ["customers:read"]}, headers={"X-API-Key": parent}
    )
    assert child.status_code == 201, child.text
    headers = {"X-API-Key": child.json()["key"]}
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 200
    response = await _patch_user(client, tenant, tenant.users["admin"].id, {"is_active": False}, who="second")
    assert response.status_code == 200
    assert (await client.get("/api/v1/customers", headers=headers)).status_code == 401


async def test_two_api_processes_refuse_a_revoked_key_within_the_cache_bound(
    app: FastAPI, live_tenant: Tenant, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 2.0
    monkeypatch.setenv("GUANXI_API_KEY_CACHE_SECONDS", str(bound))
    async with app.state.sessions() as session:
        key = await make_api_key(session, live_tenant, scopes=[Scope.CUSTOMERS_READ])
        await session.commit()
    headers = {"X-API-Key": key}
    with _serving(database_url, tmp_path, "--workers", "2", "--no-migrate") as base:

        async def spread() -> set[int]:
            # A new connection per request: the kernel spreads them over both processes, and each
            # caches the key it verified.
            statuses = set()
            for _ in range(16):
                async with httpx.AsyncClient(base_url=base, timeout=10) as fresh:
                    statuses.add((await fresh.get("/api/v1/customers", headers=headers)).status_code)
            return statuses

        assert await spread() == {200}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            listed = (await http.get("/api/v1/api-keys", headers=live_tenant.headers())).json()
            key_id = next(item["id"] for item in listed["items"] if key.startswith(f"gx_{item['prefix']}_"))
            revoked = await http.delete(f"/api/v1/api-keys/{key_id}", headers=live_tenant.headers())
            assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
        await asyncio.sleep(bound + 0.5)
        assert await spread() == {401}
