"""The customer read lane answers GET /customers/{id} exactly as the route does, or leaves it to the route."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Scope
from app.core.pagination import encode_cursor
from app.core.settings import get_settings
from app.http.read_lane import ReadPool
from tests.factories import Tenant, customer_body, make_api_key
from tests.read_lane_helpers import both_ways, comparable, counting, lane_off

CALLERS = ["admin", "manager", "sales", "sales2", "sales_west", "support", "readonly"]


@pytest.fixture
async def api_key(db: AsyncSession, tenant: Tenant) -> str:
    """A key with every scope, committed into the test's transaction, not yet used."""
    key = await make_api_key(db, tenant)
    await db.commit()
    return key


@pytest.fixture
async def users_looked_up(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """Every caller's user state read by this process once, as a signed-in user's first request
    does: from then on the lane answers that user's tokens."""
    for who in CALLERS:
        assert (await client.get("/api/v1/workspace", headers=tenant.headers(who))).status_code == 200


@pytest.fixture
async def customer_id(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = customer_body(
        phones=["13800138000"],
        owner_id=str(tenant.users["sales"].id),
        tags=["vip"],
        address={"city": "上海", "street": "南京东路 1 号"},
        preferences={"channel": "wechat"},
    )
    created = await client.post("/api/v1/customers", json=body, headers=tenant.headers())
    assert created.status_code == 201
    return str(created.json()["id"])


async def test_every_caller_gets_from_the_lane_what_the_route_sends(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, customer_id: str, users_looked_up: None
) -> None:
    for who in CALLERS:
        path = f"/api/v1/customers/{customer_id}"
        with_lane, without, counts = await both_ways(app, client, path, tenant.headers(who))
        assert comparable(with_lane) == comparable(without), who
        if with_lane.status_code == 200:
            assert counts == {"answered": 1, "unavailable": 0, "passed": 0}, who
        else:
            assert counts == {"answered": 0, "unavailable": 0, "passed": 1}, who
    # Visibility and masking came out as the route has them: the owner, its manager and the
    # see-all roles read the customer, the others get 404; readonly sees it masked.
    seen = {who: (await client.get(f"/api/v1/customers/{customer_id}", headers=tenant.headers(who))) for who in CALLERS}
    assert {who for who, response in seen.items() if response.status_code == 200} == {
        "admin",
        "manager",
        "sales",
        "support",
        "readonly",
    }
    assert seen["readonly"].json()["pii_masked"] is True
    assert seen["readonly"].json()["phones"] == ["+861******8000"]
    assert seen["sales"].json()["phones"] == ["+8613800138000"]
    assert seen["admin"].headers["etag"] == '"1"'


async def test_an_api_key_is_answered_by_the_lane_once_this_process_has_verified_it(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, customer_id: str, api_key: str
) -> None:
    path = f"/api/v1/customers/{customer_id}"
    with counting() as first:
        response = await client.get(path, headers={"X-API-Key": api_key})
    # Not cached yet: the route verified it against the database and answered.
    assert response.status_code == 200
    assert first == {"answered": 0, "unavailable": 0, "passed": 1}
    with_lane, without, second = await both_ways(app, client, path, {"X-API-Key": api_key})
    assert second == {"answered": 1, "unavailable": 0, "passed": 0}
    assert comparable(with_lane) == comparable(without)


async def test_a_token_is_answered_by_the_lane_once_this_process_has_looked_its_user_up(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, customer_id: str
) -> None:
    path = f"/api/v1/customers/{customer_id}"
    with counting() as first:
        response = await client.get(path, headers=tenant.headers("support"))
    # The user's active state and role come from the database, through the route, the first time.
    assert response.status_code == 200
    assert first == {"answered": 0, "unavailable": 0, "passed": 1}
    with_lane, without, second = await both_ways(app, client, path, tenant.headers("support"))
    assert second == {"answered": 1, "unavailable": 0, "passed": 0}
    assert comparable(with_lane) == comparable(without)


async def test_a_revoked_key_is_refused_at_once_in_the_process_that_revoked_it(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, api_key: str
) -> None:
    path = f"/api/v1/customers/{customer_id}"
    assert (await client.get(path, headers={"X-API-Key": api_key})).status_code == 200
    keys = (await client.get("/api/v1/api-keys", headers=tenant.headers())).json()["items"]
    key_id = next(item["id"] for item in keys if api_key.startswith(f"gx_{item['prefix']}_"))
    assert (await client.delete(f"/api/v1/api-keys/{key_id}", headers=tenant.headers())).status_code == 200
    refused = await client.get(path, headers={"X-API-Key": api_key})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown id", 404),
        ("other workspace", 404),
        ("deleted", 404),
        ("no hyphens", 200),
        ("upper case", 200),
        ("malformed id", 422),
        ("trailing newline", 422),
        ("sub-resource", 200),
        ("no credential", 401),
        ("bad key", 401),
        ("two credentials", 401),
        ("basic scheme", 401),
        ("no read scope", 403),
    ],
)
async def test_what_the_lane_does_not_answer_the_route_does(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: AsyncSession,
    tenant: Tenant,
    other_tenant: Tenant,
    customer_id: str,
    case: str,
    expected: int,
) -> None:
    headers = tenant.headers()
    path_id = customer_id
    if case == "unknown id":
        path_id = str(uuid.uuid4())
    elif case == "other workspace":
        headers = other_tenant.headers()
    elif case == "deleted":
        deleted = await client.delete(f"/api/v1/customers/{customer_id}", headers={**headers, "If-Match": '"1"'})
        assert deleted.status_code == 204
    elif case == "no hyphens":
        path_id = customer_id.replace("-", "")
    elif case == "upper case":
        path_id = customer_id.upper()
    elif case == "malformed id":
        path_id = customer_id[:-1] + "g"
    elif case == "trailing newline":
        path_id = customer_id + "%0A"
    elif case == "sub-resource":
        path_id = customer_id + "/audit"
    elif case == "no credential":
        headers = {}
    elif case == "bad key":
        headers = {"X-API-Key": "gx_abcdefghij_" + "x" * 40}
    elif case == "two credentials":
        key = await make_api_key(db, tenant)
        await db.commit()
        assert (await client.get(f"/api/v1/customers/{customer_id}", headers={"X-API-Key": key})).status_code == 200
        headers = {**headers, "X-API-Key": key}
    elif case == "basic scheme":
        headers = {"Authorization": "Basic YWRtaW46YWRtaW4="}
    elif case == "no read scope":
        key = await make_api_key(db, tenant, scopes=[Scope.EVENTS_READ])
        await db.commit()
        assert (await client.get(f"/api/v1/customers/{customer_id}", headers={"X-API-Key": key})).status_code == 403
        headers = {"X-API-Key": key}
    with_lane, without, counts = await both_ways(app, client, f"/api/v1/customers/{path_id}", headers)
    assert with_lane.status_code == expected
    assert comparable(with_lane) == comparable(without)
    # The lane takes the id in every spelling the route takes; the rest went to the route.
    assert counts["answered"] == (1 if case in ("no hyphens", "upper case") else 0)


async def test_over_the_rate_limit_the_route_answers_429(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, three_a_minute: None
) -> None:
    """The limit is set after the customer is made (fixtures are set up in argument order)."""
    path = f"/api/v1/customers/{customer_id}"
    with counting() as counts:
        statuses = [(await client.get(path, headers=tenant.headers())).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert counts == {"answered": 3, "unavailable": 0, "passed": 1}


@pytest.fixture
async def unreachable_lane(app: FastAPI) -> AsyncIterator[ReadPool]:
    """A lane pool pointed at a port nothing listens on: a database the lane cannot reach."""
    saved = app.state.read_connections
    settings = get_settings().model_copy(update={"db_connect_timeout_seconds": 1.0})
    pool = ReadPool("postgresql+asyncpg://guanxi@127.0.0.1:9/guanxi", settings)
    app.state.read_connections = pool
    try:
        yield pool
    finally:
        app.state.read_connections = saved
        await pool.close()


async def test_a_lane_without_a_database_leaves_the_request_to_the_route(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, unreachable_lane: ReadPool
) -> None:
    path = f"/api/v1/customers/{customer_id}"
    with counting() as counts:
        responses = [await client.get(path, headers=tenant.headers()) for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert counts == {"answered": 0, "unavailable": 0, "passed": 3}


async def test_the_lane_reads_on_its_own_pool_what_other_requests_committed(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """Outside the tests' rolled-back transaction: the production pool, opened at first use."""
    assert isinstance(app.state.read_connections, ReadPool)
    created = await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    path = f"/api/v1/customers/{created.json()['id']}"
    with_lane, without, counts = await both_ways(app, live_client, path, live_tenant.headers())
    assert with_lane.status_code == 200
    assert counts == {"answered": 1, "unavailable": 0, "passed": 0}
    assert comparable(with_lane) == comparable(without)
    changed = await live_client.patch(
        path, json={"name": "李娜"}, headers={**live_tenant.headers(), "If-Match": with_lane.headers["etag"]}
    )
    assert changed.status_code == 200
    reread = await live_client.get(path, headers=live_tenant.headers())
    assert (reread.json()["name"], reread.headers["etag"]) == ("李娜", '"2"')


async def test_plain_list_pages_come_from_the_lane_as_the_route_sends_them(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, users_looked_up: None
) -> None:
    for owner in ["sales", "sales", "sales2", "sales_west", "admin"]:
        body = customer_body(owner_id=str(tenant.users[owner].id), phones=[f"1380{uuid.uuid4().int % 10**7:07d}"])
        assert (await client.post("/api/v1/customers", json=body, headers=tenant.headers())).status_code == 201
    for who in CALLERS:
        path, pages, seen = "/api/v1/customers?limit=2", 0, 0
        while path:
            with_lane, without, counts = await both_ways(app, client, path, tenant.headers(who))
            assert with_lane.status_code == 200, who
            assert comparable(with_lane) == comparable(without), who
            assert counts == {"answered": 1, "unavailable": 0, "passed": 0}, who
            page = with_lane.json()
            pages, seen = pages + 1, seen + len(page["items"])
            path = f"/api/v1/customers?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
        # What each caller may see: its own, its team's, or the whole workspace.
        assert seen == {"sales": 2, "sales2": 1, "sales_west": 1, "manager": 3}.get(who, 5), who
        # A cursor only when another row follows, so a full last page ends the walk.
        assert pages == (seen + 1) // 2, who


# What the lane does with each: answers it, reads and passes it on, or leaves it alone at once.
@pytest.mark.parametrize(
    ("query", "expected", "lane"),
    [
        ("", 200, "answered"),
        ("?cursor=", 200, "answered"),
        ("?limit=100", 200, "answered"),
        ("?cursor=not-a-cursor", 422, "passed"),
        ("?limit=0", 422, "skipped"),
        ("?limit=101", 422, "skipped"),
        ("?limit=020", 200, "answered"),
        ("?limit=5%0A", 200, "answered"),
        ("?limit=abc", 422, "skipped"),
        ("?limit=5&limit=6", 200, "answered"),
        ("?cursor=" + "x" * 513, 422, "skipped"),
        ("?q=%E5%BC%A0", 200, "skipped"),
        ("?sort=name", 200, "skipped"),
        ("?tag=vip", 200, "skipped"),
        ("?custom.grade=A", 422, "skipped"),
        ("?unknown=1", 200, "skipped"),
    ],
)
async def test_list_queries_the_lane_does_not_take_go_to_the_route(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, customer_id: str, query: str, expected: int, lane: str
) -> None:
    with_lane, without, counts = await both_ways(app, client, f"/api/v1/customers{query}", tenant.headers())
    assert with_lane.status_code == expected
    assert comparable(with_lane) == comparable(without)
    assert counts == {
        "answered": float(lane == "answered"),
        "unavailable": 0,
        "passed": float(lane == "passed"),
    }


async def test_a_cursor_past_the_range_of_timestamps_is_422_either_way(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # Signed as the service signs, so only the value itself is wrong.
    cursor = encode_cursor("customers:-created_at", ["0001-01-01T00:00:00+14:00", str(uuid.uuid4())])
    with_lane, without, counts = await both_ways(app, client, f"/api/v1/customers?cursor={cursor}", tenant.headers())
    assert with_lane.status_code == 422
    assert comparable(with_lane) == comparable(without)
    assert counts["passed"] == 1


async def lane_reads_waiting_on_a_lock(locker: asyncpg.Connection) -> list[int]:
    """The backends of lane reads blocked on a lock, as soon as there is one (within 5 s)."""
    for _ in range(1000):
        pids = [
            row["pid"]
            for row in await locker.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'guanxi-read-lane'"
                " AND wait_event_type = 'Lock'"
            )
        ]
        if pids:
            return pids
        await asyncio.sleep(0.005)
    return []


@pytest.fixture
async def locked_out_lane(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str, pool: asyncpg.Pool
) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A committed customer, a lane pool whose statements may run 200 ms, and a connection ready to
    lock the customers table so that the lane's next read waits on the lock."""
    created = await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    path = f"/api/v1/customers/{created.json()['id']}"
    saved = app.state.read_connections
    lane = ReadPool(database_url, get_settings().model_copy(update={"statement_timeout_ms": 200}))
    app.state.read_connections = lane
    try:
        assert (await live_client.get(path, headers=live_tenant.headers())).status_code == 200
        async with pool.acquire() as locker:
            yield path, locker
    finally:
        app.state.read_connections = saved
        await lane.close()


async def test_a_lane_read_cut_by_the_statement_timeout_is_503_at_once(
    live_client: httpx.AsyncClient, live_tenant: Tenant, locked_out_lane: tuple[str, asyncpg.Connection]
) -> None:
    path, locker = locked_out_lane
    async with locker.transaction():
        await locker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        with counting() as counts:
            response = await live_client.get(path, headers=live_tenant.headers())
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(get_settings().retry_after_seconds)
    assert response.json()["detail"] == "The request took longer than the statement time limit."
    # Answered by the lane: the route would have waited on the same lock a second time.
    assert counts == {"answered": 0, "unavailable": 1, "passed": 0}
    assert (await live_client.get(path, headers=live_tenant.headers())).status_code == 200


async def test_a_lane_read_whose_connection_dies_is_503_and_the_next_read_reconnects(
    live_client: httpx.AsyncClient, live_tenant: Tenant, locked_out_lane: tuple[str, asyncpg.Connection]
) -> None:
    path, locker = locked_out_lane
    with counting() as counts:
        async with locker.transaction():
            await locker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
            read = asyncio.create_task(live_client.get(path, headers=live_tenant.headers()))
            waiting = await lane_reads_waiting_on_a_lock(locker)
            assert len(waiting) == 1
            await locker.execute("SELECT pg_terminate_backend($1)", waiting[0])
            response = await read
    assert response.status_code == 503
    assert response.json()["detail"] == "The database is unavailable; retry shortly."
    assert counts["unavailable"] == 1
    assert (await live_client.get(path, headers=live_tenant.headers())).status_code == 200


async def test_credential_spellings_get_what_the_route_gives_them(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, customer_id: str, api_key: str
) -> None:
    path = f"/api/v1/customers/{customer_id}"
    assert (await client.get(path, headers={"X-API-Key": api_key})).status_code == 200
    token = tenant.headers()["Authorization"].removeprefix("Bearer ")
    spellings: list[list[tuple[str, str]]] = [
        [("X-API-Key", api_key), ("X-API-Key", api_key)],
        [("x-api-key", api_key)],
        [("X-API-Key", ""), ("Authorization", f"Bearer {token}")],
        [("Authorization", f"bearer {token}")],
        [("Authorization", f"Bearer  {token}")],
        [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
        [("Authorization", "Bearer")],
    ]
    for headers in spellings:
        with counting() as counts:
            with_lane = await client.get(path, headers=headers)
        with lane_off(app):
            without = await client.get(path, headers=headers)
        assert comparable(with_lane) == comparable(without), headers
        assert counts["answered"] + counts["passed"] == 1, headers


async def test_a_request_the_lane_passes_on_is_counted_against_the_rate_once(
    client: httpx.AsyncClient, tenant: Tenant, customer_id: str, three_a_minute: None
) -> None:
    """The limit is set after the customer is made (fixtures are set up in argument order)."""
    paths = [f"/api/v1/customers/{uuid.uuid4()}"] * 2 + [f"/api/v1/customers/{customer_id}"] * 2
    statuses = [(await client.get(path, headers=tenant.headers())).status_code for path in paths]
    # Counted twice, the second 404 would already have been a 429.
    assert statuses == [404, 404, 200, 429]


async def test_requests_queued_behind_a_failing_open_do_not_try_it_again(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """A database that accepts connections and never answers (a silent network): the first open
    waits out the connect timeout, and the requests that queued behind it pass to the route
    without trying again."""
    attempts: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = get_settings().model_copy(update={"db_connect_timeout_seconds": 0.5})
    lane = ReadPool(f"postgresql+asyncpg://guanxi@127.0.0.1:{port}/guanxi", settings)
    created = await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    saved = app.state.read_connections
    app.state.read_connections = lane
    try:
        path = f"/api/v1/customers/{created.json()['id']}"
        with counting() as counts:
            responses = await asyncio.gather(*(live_client.get(path, headers=live_tenant.headers()) for _ in range(5)))
        assert [response.status_code for response in responses] == [200] * 5
        assert counts == {"answered": 0, "unavailable": 0, "passed": 5}
        assert len(attempts) == 1
    finally:
        app.state.read_connections = saved
        await lane.close()
        for writer in attempts:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_read_that_gets_no_lane_connection_in_time_is_503(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str, pool: asyncpg.Pool
) -> None:
    """One lane connection, held by a read that waits on a lock: the next read waits its pool
    timeout for a turn and is answered 503 by the lane, without going on to the route."""
    created = await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    path = f"/api/v1/customers/{created.json()['id']}"
    settings = get_settings().model_copy(update={"read_lane_pool_size": 1, "db_pool_timeout_seconds": 0.2})
    lane = ReadPool(database_url, settings)
    saved = app.state.read_connections
    app.state.read_connections = lane
    try:
        assert (await live_client.get(path, headers=live_tenant.headers())).status_code == 200
        async with pool.acquire() as locker, locker.transaction():
            await locker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
            held = asyncio.create_task(live_client.get(path, headers=live_tenant.headers()))
            assert len(await lane_reads_waiting_on_a_lock(locker)) == 1
            with counting() as counts:
                refused = await live_client.get(path, headers=live_tenant.headers())
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == str(get_settings().retry_after_seconds)
        assert counts == {"answered": 0, "unavailable": 1, "passed": 0}
        # The held read goes on once the lock is gone.
        assert (await held).status_code == 200
    finally:
        app.state.read_connections = saved
        await lane.close()


async def test_a_lane_connection_the_server_ended_while_idle_fails_no_read(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    created = await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    path = f"/api/v1/customers/{created.json()['id']}"
    assert (await live_client.get(path, headers=live_tenant.headers())).status_code == 200
    lane_backends = "SELECT pid FROM pg_stat_activity WHERE application_name = 'guanxi-read-lane'"
    async with pool.acquire() as conn:
        ended = await conn.fetch(f"SELECT pg_terminate_backend(pid) FROM ({lane_backends}) lane")
        assert ended
        for _ in range(1000):
            if not await conn.fetch(lane_backends):
                break
            await asyncio.sleep(0.005)
    # Time for the driver to read the end of each stream, as it would between requests.
    await asyncio.sleep(0.1)
    with counting() as counts:
        response = await live_client.get(path, headers=live_tenant.headers())
    assert response.status_code == 200
    assert counts == {"answered": 1, "unavailable": 0, "passed": 0}
