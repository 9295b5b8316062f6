"""Orders, the value figures they drive, tiers, RFM, lifetime value and the value report."""

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.core.settings import get_settings
from app.models import Customer, CustomerValue, Order, OrderLine, OutboxEvent, TierChange
from app.services.value import customer_values
from app.workers.worker import Worker
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    return str(response.json()["id"])


def _order(customer_id: str, external_id: str = "SO-1", **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "source": "shop",
        "external_id": external_id,
        "customer_id": customer_id,
        "ordered_at": "2026-11-01T10:00:00Z",
        "currency": "CNY",
        "total_amount": "336.00",
        "lines": [
            {"sku": "TEA-1", "product_name": "龙井茶", "category": "tea", "quantity": "2", "unit_price": "168.00"}
        ],
    }
    body.update(overrides)
    return body


async def _value(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> dict[str, object]:
    response = await client.get(f"/api/v1/customers/{customer_id}/value", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_order_upsert_is_idempotent_and_updates_figures(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    first = await client.post("/api/v1/orders", json=_order(customer), headers=tenant.headers())
    assert first.status_code == 201, first.text
    assert first.json()["total_amount"] == "336.00"
    again = await client.post("/api/v1/orders", json=_order(customer), headers=tenant.headers())
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["version"] == 1
    value = await _value(client, tenant, customer)
    assert value["order_count"] == 1
    assert value["total_spend"] == "336.00"
    assert value["favourite_categories"] == [{"category": "tea", "spend": "336.00", "orders": 1}]
    assert value["tier"] == "C"


async def test_refunds_and_cancellations_change_the_figures(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    await client.post("/api/v1/orders", json=_order(customer, "SO-1"), headers=tenant.headers())
    await client.post(
        "/api/v1/orders", json=_order(customer, "SO-2", ordered_at="2026-11-10T10:00:00Z"), headers=tenant.headers()
    )
    refunded = await client.post(
        "/api/v1/orders",
        json=_order(customer, "SO-1", status="partially_refunded", refunded_amount="100.00"),
        headers=tenant.headers(),
    )
    assert refunded.status_code == 200 and refunded.json()["version"] == 2
    value = await _value(client, tenant, customer)
    assert value["total_spend"] == "572.00" and value["order_count"] == 2
    assert value["avg_interval_days"] == pytest.approx(9.0)
    await client.post("/api/v1/orders", json=_order(customer, "SO-2", status="cancelled"), headers=tenant.headers())
    value = await _value(client, tenant, customer)
    assert value["total_spend"] == "236.00" and value["order_count"] == 1
    events = (await db.scalars(select(OutboxEvent.type).where(OutboxEvent.workspace_id == tenant.id))).all()
    assert events.count("order.created") == 2 and events.count("order.updated") == 2


async def test_an_order_moved_to_another_customer_leaves_the_first_with_zeros(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    first, second = await _customer(client, tenant), await _customer(client, tenant)
    assert (await client.post("/api/v1/orders", json=_order(first), headers=tenant.headers())).status_code == 201
    moved = await client.post("/api/v1/orders", json=_order(second), headers=tenant.headers())
    assert moved.status_code == 200, moved.text
    assert (await _value(client, tenant, first))["order_count"] == 0
    assert (await _value(client, tenant, first))["total_spend"] == "0.00"
    assert (await _value(client, tenant, second))["order_count"] == 1
    # The full pass agrees: the first customer keeps a row of zeros, not the moved order's figures.
    await customer_values.recompute_workspace(db, system_caller(tenant.id))
    assert (await _value(client, tenant, first))["order_count"] == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lines": [{"sku": "X", "product_name": "x", "quantity": "-1", "unit_price": "1"}]}, "quantity"),
        ({"currency": "ZZZ"}, "currency"),
        ({"currency": "USD"}, "currency"),
        ({"currency": "cny"}, "currency"),
        (
            {
                "total_amount": "336.001",
                "lines": [{"sku": "X", "product_name": "x", "quantity": "1", "unit_price": "336.001"}],
            },
            "total_amount",
        ),
        ({"total_amount": "300.00"}, "total_amount"),
        ({"refunded_amount": "400.00", "status": "partially_refunded"}, "refunded_amount"),
        ({"refunded_amount": "10.00", "status": "paid"}, "status"),
        ({"status": "shipped"}, "status"),
        ({"lines": []}, "lines"),
        ({"total_amount": "1e30"}, "total_amount"),
        # Money is a decimal string (or a whole number): a binary fraction is refused, as the document says.
        ({"total_amount": 336.0}, "total_amount"),
        ({"total_amount": "336.00001"}, "total_amount"),
        ({"ordered_at": 1700000000}, "ordered_at"),
        ({"ordered_at": "2026-11-01T10:00:00"}, "ordered_at"),
        ({"external_id": "x" * 129}, "external_id"),
        ({"surprise": True}, "surprise"),
    ],
)
async def test_bad_orders_are_422_and_write_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, overrides: dict[str, Any], field: str
) -> None:
    customer = await _customer(client, tenant)
    response = await client.post("/api/v1/orders", json=_order(customer, **overrides), headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert any(field in e["loc"] for e in response.json()["errors"]), response.json()
    assert await db.scalar(select(func.count()).where(Order.workspace_id == tenant.id)) == 0


async def test_order_for_another_workspaces_customer_is_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    foreign = await _customer(client, other_tenant)
    response = await client.post("/api/v1/orders", json=_order(foreign), headers=tenant.headers())
    assert response.status_code == 404
    assert await db.scalar(select(func.count()).select_from(Order)) == 0
    mine = await _customer(client, tenant)
    order = (await client.post("/api/v1/orders", json=_order(mine), headers=tenant.headers())).json()
    assert (await client.get(f"/api/v1/orders/{order['id']}", headers=other_tenant.headers())).status_code == 404
    assert (await client.get(f"/api/v1/customers/{mine}/orders", headers=other_tenant.headers())).status_code == 404
    assert (await client.get(f"/api/v1/customers/{mine}/value", headers=other_tenant.headers())).status_code == 404


async def test_batch_orders_report_each_item(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    items = [_order(customer, "A"), _order(customer, "B", total_amount="1.00"), _order(customer, "A")]
    response = await client.post("/api/v1/orders/batch", json={"items": items}, headers=tenant.headers())
    assert response.status_code == 207
    assert [r["status"] for r in response.json()["results"]] == [201, 422, 200]


async def test_customer_orders_list_filters_and_pages(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    for day in range(1, 6):
        category = "tea" if day % 2 else "cups"
        lines = [{"sku": "S", "product_name": "p", "category": category, "quantity": "1", "unit_price": "10.00"}]
        body = _order(customer, f"SO-{day}", ordered_at=f"2026-10-0{day}T08:00:00Z", total_amount="10.00", lines=lines)
        assert (await client.post("/api/v1/orders", json=body, headers=tenant.headers())).status_code == 201
    url = f"/api/v1/customers/{customer}/orders"
    first = (await client.get(url, params={"limit": 2}, headers=tenant.headers())).json()
    second = (
        await client.get(url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=tenant.headers())
    ).json()
    assert [o["external_id"] for o in first["items"] + second["items"]] == ["SO-5", "SO-4", "SO-3", "SO-2"]
    tea = (await client.get(url, params={"category": "tea"}, headers=tenant.headers())).json()
    assert [o["external_id"] for o in tea["items"]] == ["SO-5", "SO-3", "SO-1"]
    ranged = (
        await client.get(
            url,
            params={"ordered_from": "2026-10-02T00:00:00Z", "ordered_to": "2026-10-04T00:00:00Z"},
            headers=tenant.headers(),
        )
    ).json()
    assert [o["external_id"] for o in ranged["items"]] == ["SO-3", "SO-2"]


async def test_tier_rules_move_customers_and_record_it(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    rules = {
        "window_days": 365,
        "tiers": [
            {"code": "A", "name": "High", "rank": 1, "min_spend": "500"},
            {"code": "B", "name": "Mid", "rank": 2, "min_orders": 1},
            {"code": "C", "name": "Low", "rank": 3},
        ],
    }
    assert (await client.put("/api/v1/value-tiers", json=rules, headers=tenant.headers())).status_code == 200
    customer = await _customer(client, tenant)
    now = clock.now().isoformat()
    await client.post("/api/v1/orders", json=_order(customer, "1", ordered_at=now), headers=tenant.headers())
    assert (await _value(client, tenant, customer))["tier"] == "B"
    await client.post(
        "/api/v1/orders",
        json=_order(
            customer,
            "2",
            ordered_at=now,
            total_amount="500.00",
            lines=[{"sku": "S", "product_name": "p", "quantity": "1", "unit_price": "500.00"}],
        ),
        headers=tenant.headers(),
    )
    assert (await _value(client, tenant, customer))["tier"] == "A"
    moves = (
        await db.execute(
            select(TierChange.from_tier, TierChange.to_tier)
            .where(TierChange.workspace_id == tenant.id)
            .order_by(TierChange.changed_at, TierChange.id)
        )
    ).all()
    assert [tuple(m) for m in moves] == [(None, "B"), ("B", "A")]
    events = (
        await db.scalars(
            select(OutboxEvent.data)
            .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "tier.changed")
            .order_by(OutboxEvent.occurred_at)
        )
    ).all()
    assert [e["to_tier"] for e in events] == ["B", "A"]


@pytest.mark.parametrize(
    "rules",
    [
        {"tiers": [{"code": "A", "name": "x", "rank": 1}, {"code": "A", "name": "y", "rank": 2}]},
        {"tiers": [{"code": "A", "name": "x", "rank": 1}, {"code": "B", "name": "y", "rank": 1}]},
        {"tiers": []},
        {"tiers": [{"code": "A", "name": "x", "rank": 1, "min_spend": "-5"}]},
    ],
)
async def test_bad_tier_rules_are_422(client: httpx.AsyncClient, tenant: Tenant, rules: dict[str, object]) -> None:
    assert (await client.put("/api/v1/value-tiers", json=rules, headers=tenant.headers())).status_code == 422


async def test_only_admins_change_tiers_or_recompute(client: httpx.AsyncClient, tenant: Tenant) -> None:
    rules = {"tiers": [{"code": "A", "name": "x", "rank": 1}]}
    for role in ("manager", "sales", "support", "readonly"):
        assert (await client.put("/api/v1/value-tiers", json=rules, headers=tenant.headers(role))).status_code == 403
        assert (await client.post("/api/v1/value/recompute", headers=tenant.headers(role))).status_code == 403


def _paid_order(tenant: Tenant, customer_id: uuid.UUID, external_id: str, amount: Decimal, at: datetime) -> Order:
    """A paid order written straight to the table, without the per-order refresh."""
    now = clock.now()
    return Order(
        workspace_id=tenant.id,
        customer_id=customer_id,
        source="seed",
        external_id=external_id,
        ordered_at=at,
        status="paid",
        currency="CNY",
        total_amount=amount,
        refunded_amount=Decimal(0),
        created_at=now,
        updated_at=now,
        version=1,
    )


async def _seed_history(db: AsyncSession, tenant: Tenant, customers: int) -> list[uuid.UUID]:
    """Customers with varied purchase histories, written straight to the tables."""
    rng = random.Random(3)
    now = clock.now()
    ids = []
    for i in range(customers):
        customer = Customer(
            workspace_id=tenant.id,
            code=f"T-{i}",
            kind="individual",
            name=f"客户{i}",
            emails=[],
            phones=[],
            tags=[],
            preferences={},
            custom_fields={},
            consent={},
            search_text=f"客户{i}",
            created_at=now,
            updated_at=now,
            version=1,
        )
        db.add(customer)
        await db.flush()
        ids.append(customer.id)
        start = now - timedelta(days=rng.randint(200, 700))
        for n in range(rng.randint(1, 8)):
            at = start + timedelta(days=n * rng.randint(10, 60))
            if at > now:
                break
            amount = Decimal(rng.randint(50, 2000))
            order = _paid_order(tenant, customer.id, f"{i}-{n}", amount, at)
            db.add(order)
            await db.flush()
            db.add(
                OrderLine(
                    workspace_id=tenant.id,
                    order_id=order.id,
                    line_no=1,
                    sku="S",
                    product_name="p",
                    category=rng.choice(["tea", "cups", "gifts"]),
                    quantity=Decimal(1),
                    unit_price=amount,
                )
            )
    await db.flush()
    return ids


async def test_full_recompute_scores_segments_and_predicts(db: AsyncSession, tenant: Tenant) -> None:
    ids = await _seed_history(db, tenant, 150)
    seconds = await customer_values.recompute_workspace(db, system_caller(tenant.id))
    assert seconds is not None
    assert await customer_values.refit_lifetime_value(db, system_caller(tenant.id))
    values = (await db.scalars(select(CustomerValue).where(CustomerValue.workspace_id == tenant.id))).all()
    assert len(values) == len(ids)
    assert {v.recency_score for v in values} == {1, 2, 3, 4, 5}
    assert {v.monetary_score for v in values} == {1, 2, 3, 4, 5}
    assert all(v.rfm_segment for v in values)
    assert len({v.rfm_segment for v in values}) >= 4
    repeat = [v for v in values if v.order_count > 1]
    assert repeat and all(v.ltv_predicted is not None and v.ltv_predicted >= 0 for v in repeat)
    # The best monetary scores go to the biggest spenders.
    top = max(values, key=lambda v: v.total_spend)
    bottom = min(values, key=lambda v: v.total_spend)
    assert top.monetary_score == 5 and bottom.monetary_score == 1


async def test_the_full_pass_ranks_favourite_categories_only_for_customers_without_figures(
    db: AsyncSession, tenant: Tenant
) -> None:
    ids = await _seed_history(db, tenant, 20)  # orders written straight to the tables: no figures yet
    ctx = system_caller(tenant.id)
    await customer_values.recompute_workspace(db, ctx)
    ranked = await db.get(CustomerValue, (tenant.id, ids[0]))
    assert ranked is not None and ranked.favourite_categories
    assert {c["category"] for c in ranked.favourite_categories} <= {"tea", "cups", "gifts"}
    # A stored row keeps what the order paths wrote: categories change only with the customer's
    # orders, and every path that changes orders refreshes that customer.
    kept = [{"category": "kept", "spend": "1", "orders": 1}]
    ranked.favourite_categories = kept
    await db.flush()
    await customer_values.recompute_workspace(db, ctx)
    fresh = select(CustomerValue).where(CustomerValue.workspace_id == tenant.id, CustomerValue.customer_id == ids[0])
    after = (await db.scalars(fresh.execution_options(populate_existing=True))).one()
    assert after.favourite_categories == kept
    await customer_values.refresh_customer(db, ctx, ids[0])
    after = (await db.scalars(fresh.execution_options(populate_existing=True))).one()
    assert after.favourite_categories != kept


async def test_an_order_marks_the_prediction_due_and_the_worker_step_rewrites_it(
    db: AsyncSession, tenant: Tenant
) -> None:
    ids = await _seed_history(db, tenant, 150)
    ctx = system_caller(tenant.id)
    await customer_values.recompute_workspace(db, ctx)
    assert await customer_values.refit_lifetime_value(db, ctx)
    fresh = select(CustomerValue).where(CustomerValue.workspace_id == tenant.id)
    rows = (await db.scalars(fresh.execution_options(populate_existing=True))).all()
    assert not any(v.prediction_due for v in rows)
    before = {v.customer_id: (v.order_count, v.ltv_predicted) for v in rows}
    buyer = next(i for i in ids if before[i][0] > 1)
    db.add(_paid_order(tenant, buyer, "late", Decimal(5000), clock.now()))
    await db.flush()
    await customer_values.refresh_customer(db, ctx, buyer)
    due = (
        await db.scalars(fresh.where(CustomerValue.customer_id == buyer).execution_options(populate_existing=True))
    ).one()
    assert due.prediction_due and due.order_count == before[buyer][0] + 1
    assert due.ltv_predicted == before[buyer][1]  # not rewritten in the order's transaction
    assert tenant.id in await customer_values.due_predictions(db)
    assert await customer_values.predict_due(db, tenant.id) == 1
    after = (
        await db.scalars(fresh.where(CustomerValue.customer_id == buyer).execution_options(populate_existing=True))
    ).one()
    assert not after.prediction_due
    assert after.ltv_predicted is not None and after.ltv_predicted != before[buyer][1]
    assert await customer_values.predict_due(db, tenant.id) == 0


async def test_a_refit_that_read_a_row_before_an_order_leaves_it_due(db: AsyncSession, tenant: Tenant) -> None:
    ids = await _seed_history(db, tenant, 150)
    ctx = system_caller(tenant.id)
    await customer_values.recompute_workspace(db, ctx)
    assert await customer_values.refit_lifetime_value(db, ctx)
    model = await customer_values.model_for(db, tenant.id)
    read = await customer_values._summaries(db, tenant.id, clock.now())  # the refit's unlocked read
    changed, untouched = ids[0], ids[1]
    db.add(_paid_order(tenant, changed, "between", Decimal(700), clock.now()))
    await db.flush()
    await customer_values.refresh_customer(db, ctx, changed)
    await customer_values._write_predictions(db, tenant.id, model, read)
    due = dict(
        (
            await db.execute(
                select(CustomerValue.customer_id, CustomerValue.prediction_due).where(
                    CustomerValue.workspace_id == tenant.id, CustomerValue.customer_id.in_([changed, untouched])
                )
            )
        ).all()
    )
    assert due == {changed: True, untouched: False}


async def test_per_order_update_scores_like_the_full_pass(db: AsyncSession, tenant: Tenant) -> None:
    ids = await _seed_history(db, tenant, 80)
    ctx = system_caller(tenant.id)
    await customer_values.recompute_workspace(db, ctx)
    before = {
        v.customer_id: (v.recency_score, v.frequency_score, v.monetary_score, v.rfm_segment, v.tier)
        for v in (await db.scalars(select(CustomerValue).where(CustomerValue.workspace_id == tenant.id))).all()
    }
    for customer_id in ids[:10]:
        await customer_values.refresh_customer(db, ctx, customer_id)
    fresh = select(CustomerValue).where(CustomerValue.workspace_id == tenant.id)
    rows = (await db.scalars(fresh.execution_options(populate_existing=True))).all()
    after = {v.customer_id: (v.recency_score, v.frequency_score, v.monetary_score, v.rfm_segment, v.tier) for v in rows}
    assert {k: after[k] for k in ids[:10]} == {k: before[k] for k in ids[:10]}


async def test_value_report_in_json_and_csv(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    await _seed_history(db, tenant, 60)
    evil = await _customer(client, tenant, name="=cmd|' /C calc'!A0")
    big = _order(
        evil,
        "EVIL",
        ordered_at=clock.now().isoformat(),
        total_amount="99999.00",
        lines=[{"sku": "S", "product_name": "p", "quantity": "1", "unit_price": "99999.00"}],
    )
    await client.post("/api/v1/orders", json=big, headers=tenant.headers())
    await customer_values.recompute_workspace(db, system_caller(tenant.id))
    report = (await client.get("/api/v1/reports/value", headers=tenant.headers())).json()
    assert sum(r["customers"] for r in report["by_tier"]) == 61
    assert report["top_customers"][0]["id"] == evil
    assert {r["key"] for r in report["by_rfm_segment"]} - {None}
    csv_response = await client.get("/api/v1/reports/value", headers={**tenant.headers(), "Accept": "text/csv"})
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert "'=cmd" in csv_response.text and "\n=cmd" not in csv_response.text
    assert (await client.get("/api/v1/reports/value", headers=tenant.headers("sales"))).status_code == 403


async def test_recompute_is_requested_through_the_api(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/api/v1/value/recompute", headers=tenant.headers())
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert datetime.fromisoformat(response.json()["requested_at"]) <= datetime.now(UTC)


async def test_customers_filter_by_tier_and_rfm_segment(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    ids = await _seed_history(db, tenant, 60)
    await customer_values.recompute_workspace(db, system_caller(tenant.id))
    values = (await db.scalars(select(CustomerValue).where(CustomerValue.workspace_id == tenant.id))).all()
    expected_tier = {str(v.customer_id) for v in values if v.tier == "B"}
    segment = values[0].rfm_segment
    expected_segment = {str(v.customer_id) for v in values if v.rfm_segment == segment}
    by_tier = (
        await client.get("/api/v1/customers", params={"tier": "B", "limit": 100}, headers=tenant.headers())
    ).json()
    assert {c["id"] for c in by_tier["items"]} == expected_tier
    by_segment = (
        await client.get("/api/v1/customers", params={"rfm_segment": segment, "limit": 100}, headers=tenant.headers())
    ).json()
    assert {c["id"] for c in by_segment["items"]} == expected_segment
    assert len(ids) == 60


async def test_the_running_worker_takes_the_prediction_an_order_marked_due(
    database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    worker = Worker(get_settings(), database_url, sweep_seconds=3600)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), timeout=10)
        customer = await _customer(live_client, live_tenant)
        created = await live_client.post("/api/v1/orders", json=_order(customer), headers=live_tenant.headers())
        assert created.status_code == 201, created.text
        due = True
        for _ in range(200):  # the order's commit notification wakes the worker
            due = await pool.fetchval(
                "SELECT prediction_due FROM customer_values WHERE workspace_id = $1 AND customer_id = $2",
                live_tenant.id,
                uuid.UUID(customer),
            )
            if due is False:
                break
            await asyncio.sleep(0.05)
        assert due is False
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=20)


async def test_value_of_a_customer_without_orders_is_empty_not_an_error(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    customer_id = await _customer(client, tenant)
    response = await client.get(f"/api/v1/customers/{customer_id}/value", headers=tenant.headers())
    assert response.status_code == 200
    body = response.json()
    assert body["order_count"] == 0 and body["updated_at"] is None and body["tier"] is None
