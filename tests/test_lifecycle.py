"""Lifecycle stages: moves by hand, rules from purchase history, history, events and the report."""

from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.models import CustomerStage, Order, OutboxEvent, StageHistory
from app.services.segments import lifecycle
from app.services.value import customer_values
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return str((await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()["id"])


def _order(customer_id: str, external_id: str, ordered_at: str, amount: str = "100.00") -> dict[str, object]:
    return {
        "external_id": external_id,
        "customer_id": customer_id,
        "ordered_at": ordered_at,
        "currency": "CNY",
        "total_amount": amount,
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": amount}],
    }


async def _stage(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/api/v1/customers/{customer_id}/stage", headers=tenant.headers())).json())


async def test_moves_by_hand_follow_the_allowed_transitions(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    url = f"/api/v1/customers/{customer}/stage"
    moved = await client.post(url, json={"stage": "lead", "reason": "met at a fair"}, headers=tenant.headers())
    assert moved.status_code == 200 and moved.json()["stage"] == "lead"
    assert (await client.post(url, json={"stage": "prospect"}, headers=tenant.headers())).status_code == 200
    illegal = await client.post(url, json={"stage": "won_back"}, headers=tenant.headers())
    assert illegal.status_code == 409
    assert illegal.json()["current_stage"] == "prospect"
    assert "new_customer" in illegal.json()["allowed"]
    assert (await client.post(url, json={"stage": "platinum"}, headers=tenant.headers())).status_code == 422
    history = (await _stage(client, tenant, customer))["history"]
    assert [(h["stage"], h["from_stage"]) for h in history] == [("prospect", "lead"), ("lead", None)]
    assert history[1]["left_at"] is not None and history[0]["left_at"] is None


async def test_another_workspace_cannot_move_a_customer(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    customer = await _customer(client, tenant)
    response = await client.post(
        f"/api/v1/customers/{customer}/stage", json={"stage": "lead"}, headers=other_tenant.headers()
    )
    assert response.status_code == 404


async def test_orders_move_customers_by_the_rules(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    customer = await _customer(client, tenant)
    now = clock.now()
    first = _order(customer, "1", (now - timedelta(days=20)).isoformat())
    await client.post("/api/v1/orders", json=first, headers=tenant.headers())
    assert (await _stage(client, tenant, customer))["stage"] == "new_customer"
    await client.post(
        "/api/v1/orders", json=_order(customer, "2", (now - timedelta(days=10)).isoformat()), headers=tenant.headers()
    )
    assert (await _stage(client, tenant, customer))["stage"] == "active"
    big = _order(customer, "3", now.isoformat(), amount="6000.00")
    await client.post("/api/v1/orders", json=big, headers=tenant.headers())
    assert (await _stage(client, tenant, customer))["stage"] == "loyal"
    events = (
        await db.scalars(
            select(OutboxEvent.data)
            .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "lifecycle.stage_changed")
            .order_by(OutboxEvent.occurred_at)
        )
    ).all()
    assert [e["to_stage"] for e in events] == ["new_customer", "active", "loyal"]


async def test_silence_churns_and_a_new_purchase_wins_back(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    long_ago = (clock.now() - timedelta(days=400)).isoformat()
    await client.post("/api/v1/orders", json=_order(customer, "1", long_ago), headers=tenant.headers())
    ctx = system_caller(tenant.id)
    await customer_values.recompute_workspace(db, ctx)
    await lifecycle.apply_rules(db, ctx)
    assert (await _stage(client, tenant, customer))["stage"] == "churned"
    # The stay in `churned` began before the purchase that wins the customer back.
    await db.execute(
        update(CustomerStage)
        .where(CustomerStage.customer_id == customer)
        .values(entered_at=clock.now() - timedelta(days=1))
    )
    await client.post("/api/v1/orders", json=_order(customer, "2", clock.now().isoformat()), headers=tenant.headers())
    assert (await _stage(client, tenant, customer))["stage"] == "won_back"


async def test_rules_give_leads_to_customers_without_orders(db: AsyncSession, tenant: Tenant) -> None:
    from app.models import Customer

    now = clock.now()
    db.add(
        Customer(
            workspace_id=tenant.id,
            code="L-1",
            kind="individual",
            name="x",
            emails=[],
            phones=[],
            tags=[],
            preferences={},
            custom_fields={},
            consent={},
            search_text="x",
            created_at=now,
            updated_at=now,
            version=1,
        )
    )
    await db.flush()
    moved = await lifecycle.apply_rules(db, system_caller(tenant.id))
    assert moved == 1
    assert await lifecycle.apply_rules(db, system_caller(tenant.id)) == 0


async def test_lifecycle_report(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    now = clock.now()
    for i in range(3):
        customer = await _customer(client, tenant)
        await client.post(
            "/api/v1/orders",
            json=_order(customer, f"{i}-a", (now - timedelta(days=70)).isoformat()),
            headers=tenant.headers(),
        )
        if i:
            await client.post(
                "/api/v1/orders",
                json=_order(customer, f"{i}-b", (now - timedelta(days=5)).isoformat()),
                headers=tenant.headers(),
            )
    report = (await client.get("/api/v1/reports/lifecycle", headers=tenant.headers())).json()
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["new_customer"]["now"] == 1 and stages["active"]["now"] == 2
    assert {(m["from_stage"], m["to_stage"]) for m in report["funnel"]["moves"]} >= {
        (None, "new_customer"),
        ("new_customer", "active"),
    }
    assert report["cohorts"] and report["cohorts"][0]["customers"] == 3
    assert len(report["cohorts"][0]["retention"]) == 12
    assert (await client.get("/api/v1/reports/lifecycle", headers=tenant.headers("sales"))).status_code == 403
    assert await db.scalar(select(Order.id).where(Order.workspace_id == tenant.id).limit(1)) is not None


async def test_workspace_defined_stages(client: httpx.AsyncClient, tenant: Tenant) -> None:
    current = (await client.get("/api/v1/lifecycle/stages", headers=tenant.headers())).json()["items"]
    wanted = [{"key": s["key"], "name": s["name"]} for s in current]
    wanted.insert(1, {"key": "vip_prospect", "name": "VIP 潜在客户"})
    saved = await client.put("/api/v1/lifecycle/stages", json={"stages": wanted}, headers=tenant.headers())
    assert saved.status_code == 200 and [s["key"] for s in saved.json()["items"]][:2] == ["lead", "vip_prospect"]
    customer = await _customer(client, tenant)
    url = f"/api/v1/customers/{customer}/stage"
    assert (await client.post(url, json={"stage": "lead"}, headers=tenant.headers())).status_code == 200
    assert (await client.post(url, json={"stage": "vip_prospect"}, headers=tenant.headers())).status_code == 200
    assert (await client.post(url, json={"stage": "prospect"}, headers=tenant.headers())).status_code == 200
    without_default = [s for s in wanted if s["key"] != "loyal"]
    assert (
        await client.put("/api/v1/lifecycle/stages", json={"stages": without_default}, headers=tenant.headers())
    ).status_code == 422
    await client.post(url, json={"stage": "vip_prospect"}, headers=tenant.headers())
    without_used = [s for s in wanted if s["key"] != "vip_prospect"]
    assert (
        await client.put("/api/v1/lifecycle/stages", json={"stages": without_used}, headers=tenant.headers())
    ).status_code == 409
    assert (
        await client.put("/api/v1/lifecycle/stages", json={"stages": wanted}, headers=tenant.headers("sales"))
    ).status_code == 403


async def test_chunked_pass_stages_every_customer_once(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    ids = {await _customer(live_client, live_tenant) for _ in range(7)}
    ctx = system_caller(live_tenant.id)
    # Ranges of two customers, two transactions at once: four ranges, the last one open-ended.
    assert await lifecycle.apply_rules_in_chunks(app.state.sessions, ctx, chunk=2, parallel=2) == 7
    async with app.state.sessions() as session:
        staged = (
            await session.execute(
                select(CustomerStage.customer_id, CustomerStage.stage).where(
                    CustomerStage.workspace_id == live_tenant.id
                )
            )
        ).all()
        history = await session.scalar(
            select(func.count()).select_from(StageHistory).where(StageHistory.workspace_id == live_tenant.id)
        )
        events = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "lifecycle.stage_changed")
        )
    assert {str(customer_id) for customer_id, _ in staged} == ids and {stage for _, stage in staged} == {"lead"}
    assert history == 7 and events == 7
    assert await lifecycle.apply_rules_in_chunks(app.state.sessions, ctx, chunk=2, parallel=2) == 0
