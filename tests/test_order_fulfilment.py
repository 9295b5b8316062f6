"""Orders' fulfilment: first status, allowed moves and refusals, history, tracking reference, events
and audit entries, and the one writer behind the API, the upsert, the batch and the file import."""

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.core import migrations
from app.core.access import Caller
from app.models import AuditEntry, Order, OrderFulfilmentChange, OutboxEvent
from app.services.value import fulfilment
from tests.database import TEST_DATABASE, fresh_database
from tests.factories import Tenant, customer_body
from tests.import_helpers import create_customer, queue_and_run
from tests.test_orders_and_value import _customer, _order

Writes = list[list[fulfilment.Change]]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Writes]:
    """Every call of the one writer (which still writes): the paths must all go through it."""
    seen: Writes = []
    real = fulfilment.write

    async def recording(session: AsyncSession, ctx: Caller, changes: Sequence[fulfilment.Change]) -> set[uuid.UUID]:
        seen.append(list(changes))
        return await real(session, ctx, changes)

    monkeypatch.setattr(fulfilment, "write", recording)
    yield seen


async def _post_order(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object], expect: int = 201) -> Any:
    response = await client.post("/api/v1/orders", json=body, headers=tenant.headers())
    assert response.status_code == expect, response.text
    return response.json()


async def _move(
    client: httpx.AsyncClient, tenant: Tenant, order: dict[str, Any], body: dict[str, object], *, who: str = "admin"
) -> httpx.Response:
    headers = {**tenant.headers(who), "If-Match": f'"{order["version"]}"'}
    return await client.post(f"/api/v1/orders/{order['id']}/fulfilment", json=body, headers=headers)


async def _history(client: httpx.AsyncClient, tenant: Tenant, order_id: str) -> list[tuple[Any, ...]]:
    response = await client.get(f"/api/v1/orders/{order_id}/fulfilment-history", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return [
        (row["from_status"], row["to_status"], row["tracking_reference"], row["note"])
        for row in response.json()["items"]
    ]


async def _moves_emitted(db: AsyncSession, tenant: Tenant) -> list[dict[str, Any]]:
    rows = await db.scalars(
        select(OutboxEvent.data)
        .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "order.fulfilment_changed")
        .order_by(OutboxEvent.occurred_at, OutboxEvent.id)
    )
    return list(rows.all())


async def test_a_new_order_starts_where_its_status_puts_it_unless_told(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    paid = await _post_order(client, tenant, _order(customer, "SO-1"))
    part = await _post_order(
        client, tenant, _order(customer, "SO-2", status="partially_refunded", refunded_amount="1.00")
    )
    refunded = await _post_order(client, tenant, _order(customer, "SO-3", status="refunded", refunded_amount="336.00"))
    cancelled = await _post_order(client, tenant, _order(customer, "SO-4", status="cancelled"))
    told = await _post_order(
        client, tenant, _order(customer, "SO-5", fulfilment_status="shipped", tracking_reference="SF1")
    )
    assert [o["fulfilment_status"] for o in (paid, part, refunded, cancelled, told)] == [
        "paid",
        "paid",
        "returned",
        "cancelled",
        "shipped",
    ]
    assert told["tracking_reference"] == "SF1" and paid["tracking_reference"] is None
    assert told["version"] == 1 and told["fulfilment_updated_at"].endswith("Z")
    # The first status is the first row of the history; its order.created tells the rest.
    assert await _history(client, tenant, told["id"]) == [(None, "shipped", "SF1", None)]
    assert await _moves_emitted(db, tenant) == []
    fetched = (await client.get(f"/api/v1/orders/{told['id']}", headers=tenant.headers())).json()
    assert fetched == told


async def test_allowed_moves_are_recorded_emitted_and_audited(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant, owner_id=str(tenant.users["sales"].id))
    order = await _post_order(client, tenant, _order(customer))
    shipped = await _move(client, tenant, order, {"status": "shipped", "tracking_reference": "SF100", "note": "顺丰"})
    assert shipped.status_code == 200, shipped.text
    assert shipped.headers["ETag"] == '"2"'
    body = shipped.json()
    assert (body["fulfilment_status"], body["tracking_reference"], body["version"]) == ("shipped", "SF100", 2)
    assert body["status"] == "paid" and body["fulfilment_updated_at"] >= order["fulfilment_updated_at"]
    # A move without a reference keeps the one given before.
    delivered = await _move(client, tenant, body, {"status": "delivered"}, who="sales")
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["tracking_reference"] == "SF100" and delivered.json()["version"] == 3
    assert await _history(client, tenant, order["id"]) == [
        (None, "paid", None, None),
        ("paid", "shipped", "SF100", "顺丰"),
        ("shipped", "delivered", "SF100", None),
    ]
    rows = (await client.get(f"/api/v1/orders/{order['id']}/fulfilment-history", headers=tenant.headers())).json()[
        "items"
    ]
    assert rows[2]["actor"] == {"type": "user", "id": str(tenant.users["sales"].id)}
    events = await _moves_emitted(db, tenant)
    assert [(e["from_status"], e["to_status"], e["tracking_reference"]) for e in events] == [
        ("paid", "shipped", "SF100"),
        ("shipped", "delivered", "SF100"),
    ]
    assert events[0] | {"at": None} == {
        "order_id": order["id"],
        "customer_id": customer,
        "source": "shop",
        "external_id": "SO-1",
        "from_status": "paid",
        "to_status": "shipped",
        "tracking_reference": "SF100",
        "note": "顺丰",
        "at": None,
    }
    audit = await db.scalars(
        select(AuditEntry.changes)
        .where(AuditEntry.entity_id == uuid.UUID(order["id"]), AuditEntry.action == "fulfilment_changed")
        .order_by(AuditEntry.occurred_at)
    )
    assert list(audit.all()) == [
        {
            "fulfilment_status": {"before": "paid", "after": "shipped"},
            "tracking_reference": {"before": None, "after": "SF100"},
        },
        {"fulfilment_status": {"before": "shipped", "after": "delivered"}},
    ]


async def test_a_new_tracking_reference_alone_is_a_change_and_a_repeat_is_none(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    order = await _post_order(client, tenant, _order(customer, fulfilment_status="shipped", tracking_reference="A1"))
    fixed = await _move(client, tenant, order, {"status": "shipped", "tracking_reference": "A2"})
    assert fixed.status_code == 200 and fixed.json()["version"] == 2
    again = await _move(client, tenant, fixed.json(), {"status": "shipped", "tracking_reference": "A2"})
    assert again.status_code == 200 and again.json()["version"] == 2
    assert await _history(client, tenant, order["id"]) == [
        (None, "shipped", "A1", None),
        ("shipped", "shipped", "A2", None),
    ]
    assert len(await _moves_emitted(db, tenant)) == 1


@pytest.mark.parametrize(
    ("start", "wanted", "allowed"),
    [
        ("delivered", "paid", ["returned"]),
        ("cancelled", "shipped", []),
        ("pending", "delivered", ["cancelled", "paid", "shipped"]),
        ("returned", "delivered", []),
    ],
)
async def test_a_move_not_allowed_is_409_naming_the_allowed_ones_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, start: str, wanted: str, allowed: list[str]
) -> None:
    customer = await _customer(client, tenant)
    order = await _post_order(client, tenant, _order(customer, fulfilment_status=start))
    refused = await _move(client, tenant, order, {"status": wanted, "tracking_reference": "X9"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["allowed"] == allowed and refused.json()["current_status"] == start
    after = (await client.get(f"/api/v1/orders/{order['id']}", headers=tenant.headers())).json()
    assert after == order
    assert await _history(client, tenant, order["id"]) == [(None, start, None, None)]
    assert await _moves_emitted(db, tenant) == []


async def test_a_move_needs_the_current_version_and_a_valid_body(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    order = await _post_order(client, tenant, _order(customer))
    url = f"/api/v1/orders/{order['id']}/fulfilment"
    missing = await client.post(url, json={"status": "shipped"}, headers=tenant.headers())
    assert missing.status_code == 428
    stale = await client.post(url, json={"status": "shipped"}, headers={**tenant.headers(), "If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["current_version"] == 1
    headers = {**tenant.headers(), "If-Match": '"1"'}
    for body, loc in (
        ({"status": "lost"}, ["body", "status"]),
        ({}, ["body", "status"]),
        ({"status": "shipped", "carrier": "SF"}, ["body", "carrier"]),
        ({"status": "shipped", "tracking_reference": "x" * 129}, ["body", "tracking_reference"]),
        ({"status": "shipped", "note": ""}, ["body", "note"]),
    ):
        response = await client.post(url, json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["loc"] == loc
    readonly = await client.post(
        url, json={"status": "shipped"}, headers={**tenant.headers("readonly"), "If-Match": "*"}
    )
    assert readonly.status_code == 403
    assert (await client.get(f"/api/v1/orders/{order['id']}", headers=tenant.headers())).json() == order


async def test_another_workspaces_and_an_invisible_customers_orders_are_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await _post_order(client, other_tenant, _order(await _customer(client, other_tenant)))
    west = await client.post(
        "/api/v1/customers",
        json=customer_body(owner_id=str(tenant.users["sales_west"].id)),
        headers=tenant.headers(),
    )
    hidden = await _post_order(client, tenant, _order(str(west.json()["id"]), "SO-W"))
    for order, who in ((theirs, "admin"), (hidden, "sales")):
        moved = await _move(client, tenant, order, {"status": "shipped"}, who=who)
        assert moved.status_code == 404, moved.text
        history = await client.get(f"/api/v1/orders/{order['id']}/fulfilment-history", headers=tenant.headers(who))
        assert history.status_code == 404
    # Unchanged, as their owners see them.
    assert (await client.get(f"/api/v1/orders/{theirs['id']}", headers=other_tenant.headers())).json() == theirs
    assert (await client.get(f"/api/v1/orders/{hidden['id']}", headers=tenant.headers())).json() == hidden


async def test_the_history_pages_oldest_first(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    order = await _post_order(client, tenant, _order(customer, fulfilment_status="pending"))
    for status in ("paid", "shipped", "delivered", "returned"):
        moved = await _move(client, tenant, order, {"status": status})
        assert moved.status_code == 200, moved.text
        order = moved.json()
    url = f"/api/v1/orders/{order['id']}/fulfilment-history"
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(url, params=params, headers=tenant.headers())).json()
        seen += [row["to_status"] for row in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["pending", "paid", "shipped", "delivered", "returned"]
    other = await _post_order(client, tenant, _order(customer, "SO-2"))
    first = (await client.get(url, params={"limit": 1}, headers=tenant.headers())).json()
    foreign_cursor = await client.get(
        f"/api/v1/orders/{other['id']}/fulfilment-history",
        params={"cursor": first["next_cursor"]},
        headers=tenant.headers(),
    )
    assert foreign_cursor.status_code == 422 and foreign_cursor.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_the_upsert_and_the_batch_move_through_the_one_writer(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, writes: Writes
) -> None:
    customer = await _customer(client, tenant)
    first = await _post_order(client, tenant, _order(customer, "SO-1"))
    second = await _post_order(client, tenant, _order(customer, "SO-2", fulfilment_status="delivered"))
    assert [[(c.status, c.created) for c in call] for call in writes] == [[("paid", True)], [("delivered", True)]]
    # Sent again with a fulfilment status: the stored order moves; without one it keeps its own.
    moved = await _post_order(client, tenant, _order(customer, "SO-1", fulfilment_status="shipped"), expect=200)
    assert (moved["fulfilment_status"], moved["version"]) == ("shipped", 2)
    kept = await _post_order(client, tenant, _order(customer, "SO-1"), expect=200)
    assert (kept["fulfilment_status"], kept["version"]) == ("shipped", 2)
    batch = await client.post(
        "/api/v1/orders/batch",
        json={
            "items": [
                _order(customer, "SO-1", fulfilment_status="delivered", tracking_reference="YT7"),
                _order(customer, "SO-2", fulfilment_status="pending"),
            ]
        },
        headers=tenant.headers(),
    )
    assert batch.status_code == 207
    results = batch.json()["results"]
    assert results[0]["status"] == 200 and results[0]["version"] == 3
    assert results[1]["status"] == 409 and results[1]["problem"]["allowed"] == ["returned"]
    assert [(c.order_id, c.status) for c in writes[-1]] == [(uuid.UUID(second["id"]), "pending")]
    assert [(c.order_id, c.status, c.tracking_reference) for c in writes[-2]] == [
        (uuid.UUID(first["id"]), "delivered", "YT7")
    ]
    assert await _history(client, tenant, first["id"]) == [
        (None, "paid", None, None),
        ("paid", "shipped", None, None),
        ("shipped", "delivered", "YT7", None),
    ]
    assert await _history(client, tenant, second["id"]) == [(None, "delivered", None, None)]
    events = await _moves_emitted(db, tenant)
    assert [(e["external_id"], e["to_status"]) for e in events] == [("SO-1", "shipped"), ("SO-1", "delivered")]
    audited = await db.scalar(
        select(func.count()).where(AuditEntry.workspace_id == tenant.id, AuditEntry.action == "fulfilment_changed")
    )
    assert audited == 2


FILE = {"订单号": "external_id", "客户编号": "customer_code", "下单时间": "ordered_at", "状态": "status"}
FILE |= {"商品编码": "sku", "商品": "product_name", "数量": "quantity", "单价": "unit_price"}
FILE |= {"发货状态": "fulfilment_status", "运单号": "tracking_reference"}


def _file(rows: list[dict[str, str]]) -> bytes:
    lines = [",".join(FILE), *(",".join(row.get(field, "") for field in FILE.values()) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


async def test_the_import_moves_through_the_one_writer_and_rejects_a_refused_move_whole(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    writes: Writes,
) -> None:
    code = (await create_customer(live_client, live_tenant))["code"]
    line = {"customer_code": code, "ordered_at": "2026-03-01 10:00", "sku": "TEA", "product_name": "茶"}
    line |= {"quantity": "1", "unit_price": "10"}

    jobs: list[str] = []

    async def run(rows: list[dict[str, str]], mode: str) -> dict[str, Any]:
        queued, job = await queue_and_run(
            app,
            pool,
            live_client,
            live_tenant,
            ("订单.csv", _file(rows)),
            kind="orders",
            mapping=FILE,
            who="admin",
            form={"mode": mode},
        )
        assert job.status == "done", job.error
        jobs.append(str(queued["id"]))
        return {"created": job.created, "updated": job.updated, "failed": job.failed, "skipped": job.skipped}

    created = await run(
        [
            {**line, "external_id": "F-1"},
            {**line, "external_id": "F-2", "fulfilment_status": "shipped", "tracking_reference": "SF1"},
            {**line, "external_id": "F-3", "status": "cancelled"},
        ],
        "create_only",
    )
    assert created == {"created": 3, "updated": 0, "failed": 0, "skipped": 0}
    assert len(writes) == 1 and sorted((c.status, c.tracking_reference, c.created) for c in writes[0]) == [
        ("cancelled", None, True),
        ("paid", None, True),
        ("shipped", "SF1", True),
    ]

    async with app.state.sessions() as session:
        stored = {
            o.external_id: o for o in await session.scalars(select(Order).where(Order.workspace_id == live_tenant.id))
        }
    assert {key: (o.fulfilment_status, o.tracking_reference) for key, o in stored.items()} == {
        "F-1": ("paid", None),
        "F-2": ("shipped", "SF1"),
        "F-3": ("cancelled", None),
    }

    # F-1 moves (its only change), F-2 gets a new reference, F-3 (cancelled) cannot move: rejected whole.
    upserted = await run(
        [
            {**line, "external_id": "F-1", "fulfilment_status": "delivered"},
            {**line, "external_id": "F-2", "fulfilment_status": "shipped", "tracking_reference": "SF2"},
            {**line, "external_id": "F-3", "status": "paid", "fulfilment_status": "shipped"},
        ],
        "upsert",
    )
    assert upserted == {"created": 0, "updated": 2, "failed": 1, "skipped": 0}
    assert sorted((c.status, c.tracking_reference, c.created) for c in writes[-1]) == [
        ("delivered", None, False),
        ("shipped", "SF2", False),
    ]
    report = await live_client.get(f"/api/v1/imports/{jobs[-1]}/errors", headers=live_tenant.headers())
    assert report.text.splitlines()[1:] == ["4,发货状态,A cancelled order cannot move to shipped. Allowed: none."]
    async with app.state.sessions() as session:
        after = {
            o.external_id: o for o in await session.scalars(select(Order).where(Order.workspace_id == live_tenant.id))
        }
        history = (
            await session.execute(
                select(Order.external_id, OrderFulfilmentChange.from_status, OrderFulfilmentChange.to_status)
                .join(
                    Order,
                    (Order.workspace_id == OrderFulfilmentChange.workspace_id)
                    & (Order.id == OrderFulfilmentChange.order_id),
                )
                .where(OrderFulfilmentChange.workspace_id == live_tenant.id)
                .order_by(Order.external_id, OrderFulfilmentChange.at)
            )
        ).all()
        events = (
            await session.scalars(
                select(OutboxEvent.data).where(
                    OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "order.fulfilment_changed"
                )
            )
        ).all()
        audited = await session.scalar(
            select(func.count()).where(
                AuditEntry.workspace_id == live_tenant.id, AuditEntry.action == "fulfilment_changed"
            )
        )
    assert {key: (o.fulfilment_status, o.tracking_reference, o.status) for key, o in after.items()} == {
        "F-1": ("delivered", None, "paid"),
        "F-2": ("shipped", "SF2", "paid"),
        "F-3": ("cancelled", None, "cancelled"),
    }
    assert after["F-1"].version == 2 and after["F-3"].version == 1
    assert [tuple(row) for row in history] == [
        ("F-1", None, "paid"),
        ("F-1", "paid", "delivered"),
        ("F-2", None, "shipped"),
        ("F-2", "shipped", "shipped"),
        ("F-3", None, "cancelled"),
    ]
    assert sorted((e["external_id"], e["to_status"], e["tracking_reference"]) for e in events) == [
        ("F-1", "delivered", None),
        ("F-2", "shipped", "SF2"),
    ]
    assert audited == 2


FULFILMENT_REVISION = "7d41c9e2a5b3"
WS, CUSTOMER = "01900000-0000-7000-8000-0000000000a1", "01900000-0000-7000-8000-0000000000a2"


@pytest.fixture(scope="module")
def backfill_database_url() -> str:
    return fresh_database(f"{TEST_DATABASE}_fulfilment")


async def test_the_migration_backfills_stored_orders_by_their_status_and_downgrades(backfill_database_url: str) -> None:
    url = backfill_database_url
    before = ScriptDirectory.from_config(migrations.alembic_config(url)).get_revision(FULFILMENT_REVISION).down_revision
    assert isinstance(before, str)
    await asyncio.to_thread(migrations.upgrade, url, before)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f"INSERT INTO workspaces (id, slug, name) VALUES ('{WS}', 'f', 'F')"))
        await conn.execute(
            text(
                "INSERT INTO customers (workspace_id, id, code, kind, name, search_text) "
                f"VALUES ('{WS}', '{CUSTOMER}', 'KH-1', 'individual', '张伟', '张伟 kh-1')"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO orders (workspace_id, id, customer_id, source, external_id, ordered_at, status, currency, "
                "total_amount, refunded_amount, created_at, updated_at, version) "
                f"SELECT '{WS}', guanxi_uuid7(), '{CUSTOMER}', 'shop', s, '2026-01-01Z', s, 'CNY', 10, "
                "CASE s WHEN 'refunded' THEN 10 WHEN 'partially_refunded' THEN 1 ELSE 0 END, "
                "'2026-01-01Z', '2026-02-01Z', 1 "
                "FROM unnest(ARRAY['paid', 'partially_refunded', 'refunded', 'cancelled']) s"
            )
        )
    await asyncio.to_thread(migrations.upgrade, url, FULFILMENT_REVISION)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text(
                    "SELECT o.external_id, o.fulfilment_status, o.fulfilment_updated_at = o.updated_at, "
                    "h.from_status, h.to_status, h.actor FROM orders o "
                    "JOIN order_fulfilment_history h ON h.workspace_id = o.workspace_id AND h.order_id = o.id "
                    "ORDER BY o.external_id"
                )
            )
        ).all()
    assert [tuple(row) for row in stored] == [
        (status, fulfilled, True, None, fulfilled, {"type": "system", "id": None})
        for status, fulfilled in (
            ("cancelled", "cancelled"),
            ("paid", "paid"),
            ("partially_refunded", "paid"),
            ("refunded", "returned"),
        )
    ]
    await asyncio.to_thread(migrations.downgrade, url, before)
    async with engine.connect() as conn:
        orders_left = await conn.scalar(text("SELECT count(*) FROM orders"))
        columns = await conn.scalar(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' "
                "AND column_name IN ('fulfilment_status', 'tracking_reference', 'fulfilment_updated_at')"
            )
        )
    await engine.dispose()
    assert (orders_left, columns) == (4, 0)
