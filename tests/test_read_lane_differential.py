"""The read lane against the route: generated requests sent once with the lane and once without
it get the same status, headers and bytes, and the lane answered a good share of them itself."""

import asyncio
import base64
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import jwt
import orjson
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Role, Scope
from app.core.settings import get_settings
from app.services.identity import tokens
from tests.factories import Tenant, customer_body, make_api_key
from tests.read_lane_helpers import OUTCOMES, both_ways, comparable, lane_off

LIST = "/api/v1/customers"
# Who creates the tenant's customers, one each: the sales people's own, a team's, the unowned.
OWNERS = ["sales", "sales", "sales2", "sales_west", "manager", "admin", None, "sales", "sales_west", "admin"]
ROLES = ["admin", "manager", "sales", "sales2", "sales_west", "support", "readonly"]
# Callers without the PII scope, who get the customers masked.
MASKED = {"readonly", "read-only key"}

# Spellings of an id that the route takes, and that it refuses (or that name another route).
TAKEN_SPELLINGS: dict[str, Callable[[str], str]] = {
    "canonical": lambda i: i,
    "upper case": str.upper,
    "no hyphens": lambda i: i.replace("-", ""),
    "braces": lambda i: "{" + i + "}",
    "urn": lambda i: "urn:uuid:" + i,
}
REFUSED_SPELLINGS: dict[str, Callable[[str], str]] = {
    "trailing newline": lambda i: i + "\n",
    "leading space": lambda i: " " + i,
    "one short": lambda i: i[:-1],
    "not hex": lambda i: i[:-1] + "g",
    "hyphen moved": lambda i: i[:7] + "-" + i[7] + i[9:],
    "audit": lambda i: i + "/audit",
}
# Not ids at all: other routes' paths, or none.
SEGMENTS = ["duplicates", "batch", "merges", "search", ""]
PLAIN_LIMITS = [None, "1", "2", "20", "100"]
# Other spellings of a valid limit, and limits the route refuses.
ODD_LIMITS = ["020", " 5", "5\n", "+5", "5.0", "1_0"]
BAD_LIMITS = ["0", "101", "abc", "", "-1", "1e1", "٣", "5.5"]
ODD_EXTRAS: list[list[tuple[str, str]]] = [
    [("limit", "3")],
    [("sort", "name")],
    [("sort", "-created_at")],
    [("deleted", "only")],
    [("tag", "vip")],
    [("unknown", "1")],
    [("q", "张")],
    [("Limit", "5")],
]


def forged(values: object) -> str:
    """A cursor made by hand, the way a client could make one, not by the API's pager."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


FORGED_CURSORS = [
    forged(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
    forged(["not-a-time", str(uuid.uuid4())]),
    forged(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),
    forged(["9999-12-31T23:59:59+00:00", str(uuid.uuid4())]),
    forged([1, 2]),
    forged(["2026-01-01T00:00:00+00:00"]),
    forged(["substring", 20]),
    forged({"after": 1}),
    "not-a-cursor",
    "!!!",
    "x" * 513,
    "\x00",
]


@dataclass(frozen=True)
class Probe:
    path: str
    caller: str


@dataclass
class World:
    """What the probes are drawn from: ids and cursors of every kind, and named credentials."""

    # The tenant's customers not deleted, its deleted ones, the other tenant's, and an unknown id.
    live_ids: list[str] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)
    foreign_ids: list[str] = field(default_factory=list)
    unknown_ids: list[str] = field(default_factory=list)
    # Absent, empty, or from the tenant's own pages; from the other tenant's; altered or forged.
    plain_cursors: list[str | None] = field(default_factory=list)
    foreign_cursors: list[str] = field(default_factory=list)
    bad_cursors: list[str] = field(default_factory=list)
    credentials: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # The tenant's callers with the scope to read customers.
    plain_callers: list[str] = field(default_factory=list)


def item_path(segment: str) -> str:
    return f"{LIST}/{quote(segment, safe='/')}"


def list_path(limit: str | None, cursor: str | None, extra: list[tuple[str, str]]) -> str:
    query = [*([("limit", limit)] if limit is not None else []), *([("cursor", cursor)] if cursor is not None else [])]
    query += extra
    return f"{LIST}?{urlencode(query, quote_via=quote)}" if query else LIST


def probes(world: World) -> st.SearchStrategy[Probe]:
    """Plain reads by callers who may read customers, which the lane should answer when the
    customer is theirs to see; the same with one thing odd (the id, limit, cursor, other query
    parameters or the credential), so that each odd value meets a request the lane would otherwise
    take; and requests drawn from everything at once."""
    plain_caller = st.sampled_from(world.plain_callers)
    any_caller = st.sampled_from(sorted(world.credentials))
    id_kinds = (world.live_ids, world.deleted_ids, world.foreign_ids, world.unknown_ids)
    some_id = st.one_of(*(st.sampled_from(ids) for ids in id_kinds))
    spelled = st.builds(
        lambda spell, raw: spell(raw),
        st.one_of(st.sampled_from(list(TAKEN_SPELLINGS.values())), st.sampled_from(list(REFUSED_SPELLINGS.values()))),
        some_id,
    )
    plain_item = st.builds(item_path, st.sampled_from(world.live_ids))
    odd_item = st.builds(item_path, st.one_of(spelled, st.sampled_from(SEGMENTS)))
    plain_limit = st.sampled_from(PLAIN_LIMITS)
    odd_limit = st.one_of(st.sampled_from(ODD_LIMITS), st.sampled_from(BAD_LIMITS))
    plain_cursor = st.sampled_from(world.plain_cursors)
    odd_cursor = st.one_of(st.sampled_from(world.foreign_cursors), st.sampled_from(world.bad_cursors))
    no_extra: st.SearchStrategy[list[tuple[str, str]]] = st.just([])
    odd_extra = st.sampled_from(ODD_EXTRAS)
    plain_list = st.builds(list_path, plain_limit, plain_cursor, no_extra)
    plain_path = st.one_of(plain_item, plain_list)
    return st.one_of(
        st.builds(Probe, plain_path, plain_caller),
        st.builds(Probe, odd_item, plain_caller),
        st.builds(Probe, st.builds(list_path, odd_limit, plain_cursor, no_extra), plain_caller),
        st.builds(Probe, st.builds(list_path, plain_limit, odd_cursor, no_extra), plain_caller),
        st.builds(Probe, st.builds(list_path, plain_limit, plain_cursor, odd_extra), plain_caller),
        st.builds(Probe, plain_path, any_caller),
        st.builds(
            Probe,
            st.one_of(
                plain_item,
                odd_item,
                st.builds(
                    list_path,
                    st.one_of(plain_limit, odd_limit),
                    st.one_of(plain_cursor, odd_cursor),
                    st.one_of(no_extra, odd_extra),
                ),
            ),
            any_caller,
        ),
    )


def kinds(probe: Probe) -> set[str]:
    """What a request the lane answered shows it answering."""
    path, _, query = probe.path.partition("?")
    found = {"list" if path == LIST else "item"}
    if dict(parse_qsl(query)).get("cursor"):
        found.add("next page")
    if probe.caller in MASKED:
        found.add("masked")
    if probe.caller.endswith("key"):
        found.add("api key")
    return found


async def create_customers(client: httpx.AsyncClient, tenant: Tenant, owners: list[str | None]) -> list[str]:
    ids = []
    for n, owner in enumerate(owners):
        body = customer_body(
            phones=[f"1380013{n:04d}"],
            owner_id=str(tenant.users[owner].id) if owner else None,
            tags=["vip"] if n % 2 else [],
            address={"city": "上海", "street": f"南京东路 {n} 号"},
        )
        created = await client.post(LIST, json=body, headers=tenant.headers())
        assert created.status_code == 201, created.text
        ids.append(str(created.json()["id"]))
    return ids


async def cursors_of(client: httpx.AsyncClient, tenant: Tenant, callers: list[str]) -> list[str]:
    """Every next_cursor of walking the list as each caller, one and three at a time."""
    found = []
    for who in callers:
        for limit in (1, 3):
            path: str | None = f"{LIST}?limit={limit}"
            while path:
                page = await client.get(path, headers=tenant.headers(who))
                assert page.status_code == 200, page.text
                cursor = page.json()["next_cursor"]
                found += [cursor] if cursor else []
                path = f"{LIST}?limit={limit}&cursor={cursor}" if cursor else None
    return found


async def make_world(app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, tenant: Tenant, other: Tenant) -> World:
    world = World()
    ours = await create_customers(client, tenant, OWNERS)
    theirs = await create_customers(client, other, ["admin", "sales", None])
    for deleted in ours[-2:]:
        response = await client.delete(f"{LIST}/{deleted}", headers={**tenant.headers(), "If-Match": '"1"'})
        assert response.status_code == 204
    world.live_ids, world.deleted_ids = ours[:-2], ours[-2:]
    world.foreign_ids, world.unknown_ids = theirs, [str(uuid.uuid4())]
    with lane_off(app):
        ours_cursors = await cursors_of(client, tenant, ["admin", "manager", "sales", "readonly"])
        foreign = await cursors_of(client, other, ["admin"])
    world.plain_cursors = [None, "", *ours_cursors]
    world.foreign_cursors = foreign
    world.bad_cursors = [ours_cursors[0] + "A", ours_cursors[0][:-2], ours_cursors[0] + "==", *FORGED_CURSORS]

    keys = {
        "key": await make_api_key(db, tenant),
        "read-only key": await make_api_key(db, tenant, scopes=[Scope.CUSTOMERS_READ]),
        "events key": await make_api_key(db, tenant, scopes=[Scope.EVENTS_READ]),
        "other key": await make_api_key(db, other),
    }
    await db.commit()
    config = get_settings()
    admin = tenant.users["admin"]
    expired = jwt.encode(
        {
            "sub": str(admin.id),
            "ws": str(tenant.id),
            "role": "admin",
            "typ": "access",
            "iss": config.jwt_issuer,
            "aud": config.jwt_audience,
            "iat": int(time.time()) - 7200,
            "exp": int(time.time()) - 3600,
        },
        config.jwt_secret,
        algorithm="HS256",
    )
    refresh, _ = tokens.issue(
        config, token_type="refresh", user_id=admin.id, workspace_id=tenant.id, role=Role.ADMIN, team_id=None
    )
    bearer = tenant.headers()["Authorization"]
    credentials: dict[str, list[tuple[str, str]]] = {
        **{who: list(tenant.headers(who).items()) for who in ROLES},
        "other admin": list(other.headers().items()),
        **{name: [("X-API-Key", key)] for name, key in keys.items()},
        "unknown key": [("X-API-Key", "gx_abcdefghij_" + "x" * 40)],
        "garbled key": [("X-API-Key", "gx_nope")],
        "forged secret": [("X-API-Key", keys["key"][: keys["key"].rindex("_") + 1] + "A" * 43)],
        "no credential": [],
        "key and bearer": [("X-API-Key", keys["key"]), ("Authorization", bearer)],
        "key twice": [("X-API-Key", keys["key"])] * 2,
        "bearer twice": [("Authorization", bearer)] * 2,
        "empty key and bearer": [("X-API-Key", ""), ("Authorization", bearer)],
        "lower-case scheme": [("Authorization", "bearer " + bearer.removeprefix("Bearer "))],
        "basic": [("Authorization", "Basic YWRtaW46YWRtaW4=")],
        "bearer without token": [("Authorization", "Bearer")],
        "garbled token": [("Authorization", "Bearer not.a.token")],
        "expired token": [("Authorization", f"Bearer {expired}")],
        "refresh token": [("Authorization", f"Bearer {refresh}")],
    }
    world.credentials = credentials
    world.plain_callers = [*ROLES, "key", "read-only key"]
    return world


async def test_the_lane_and_the_route_answer_every_generated_request_alike(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, tenant: Tenant, other_tenant: Tenant
) -> None:
    world = await make_world(app, client, db, tenant, other_tenant)
    loop = asyncio.get_running_loop()
    outcomes: Counter[str] = Counter()
    answered: set[str] = set()

    async def send_both(probe: Probe) -> None:
        with_lane, without, counts = await both_ways(app, client, probe.path, world.credentials[probe.caller])
        assert comparable(with_lane) == comparable(without), probe
        outcome = next((name for name in OUTCOMES if counts[name]), "skipped")
        outcomes[outcome] += 1
        if outcome == "answered":
            answered.update(kinds(probe))

    # The fixtures hold the probes' data for every example, read-only; the examples run on the
    # test's event loop (where its connection lives) from Hypothesis in a thread, so that the
    # tally below is checked once, after all of them.
    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(probes(world))
    def each(probe: Probe) -> None:
        asyncio.run_coroutine_threadsafe(send_both(probe), loop).result()

    await asyncio.to_thread(each)

    # Proof that the comparison covered the lane's own answers, not only requests it let through.
    total = sum(outcomes.values())
    assert outcomes["answered"] >= total / 4, outcomes
    assert outcomes["passed"] > 0 and outcomes["skipped"] > 0, outcomes
    assert outcomes["unavailable"] == 0, outcomes
    assert answered == {"item", "list", "next page", "masked", "api key"}, answered
