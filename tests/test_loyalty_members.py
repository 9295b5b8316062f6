"""Loyalty membership: explicit enrolment and leaving, points for named actions (once per customer,
action and reference, under real concurrency), the level's benefits on tickets, and merges moving
points, lots and level to the survivor through the ledger."""

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEntry, OutboxEvent
from tests.factories import Tenant
from tests.test_loyalty import (
    _account,
    _customer,
    _ledger,
    _order,
    _post_order,
    _program,
    _redeem,
    assert_balances_hold,
)


def _enrolment(customer: str) -> str:
    return f"/api/v1/customers/{customer}/loyalty/enrolment"


async def _events(db: AsyncSession, tenant: Tenant, event_type: str) -> list[dict[str, Any]]:
    rows = await db.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == event_type)
        .order_by(OutboxEvent.txid, OutboxEvent.id)
    )
    return [dict(e.data) for e in rows.all()]


async def test_explicit_enrolment_is_idempotent_and_only_members_earn(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _program(client, tenant, enrolment="explicit")
    member, stranger = await _customer(client, tenant), await _customer(client, tenant)
    first = await client.post(_enrolment(member), headers=tenant.headers())
    assert first.status_code == 200, first.text
    assert (first.json()["member"], first.json()["balance"]) == (True, 0)
    again = await client.post(_enrolment(member), headers=tenant.headers())
    assert again.status_code == 200
    assert again.json()["enrolled_at"] == first.json()["enrolled_at"]
    # Through the API's order write: the member earns, the stranger does not become one.
    await _post_order(client, tenant, _order(member, (None, "40.00")))
    await _post_order(client, tenant, _order(stranger, (None, "40.00")))
    assert (await _account(client, tenant, member))["balance"] == 40
    assert (await _account(client, tenant, stranger))["member"] is False
    assert (await client.post(_enrolment(str(uuid.uuid4())), headers=tenant.headers())).status_code == 404
    assert (await client.post(_enrolment("not-an-id"), headers=tenant.headers())).status_code == 422
    audited = await db.scalars(
        select(AuditEntry.action).where(
            AuditEntry.workspace_id == tenant.id, AuditEntry.entity_type == "loyalty_account"
        )
    )
    assert audited.all() == ["enrolled"]
    await assert_balances_hold(db, tenant.id)


async def test_leaving_forfeits_the_points_and_keeps_automatic_enrolment_out_until_enrolled_again(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _program(client, tenant)
    customer = await _customer(client, tenant)
    await _post_order(client, tenant, _order(customer, (None, "70.00")))
    assert (await _redeem(client, tenant, customer, 20)).status_code == 201
    sales = await client.delete(_enrolment(customer), headers=tenant.headers("sales"))
    assert sales.status_code == 403
    left = await client.delete(_enrolment(customer), headers=tenant.headers())
    assert left.status_code == 200, left.text
    assert left.json()["forfeited"] == 50
    account = await _account(client, tenant, customer)
    assert (account["member"], account["balance"]) == (False, 0)
    assert await _ledger(client, tenant, customer) == []
    forfeits = await _events(db, tenant, "loyalty.points_adjusted")
    assert [(e["kind"], e["points"], e["balance"]) for e in forfeits] == [("forfeit", -50, 0)]
    assert (await client.delete(_enrolment(customer), headers=tenant.headers())).status_code == 404
    # An automatic program's next paid order does not take a customer who left back in.
    await _post_order(client, tenant, _order(customer, (None, "30.00")))
    assert (await _account(client, tenant, customer))["member"] is False
    back = await client.post(_enrolment(customer), headers=tenant.headers())
    assert back.status_code == 200 and back.json()["balance"] == 0
    await _post_order(client, tenant, _order(customer, (None, "15.00")))
    assert (await _account(client, tenant, customer))["balance"] == 15
    await assert_balances_hold(db, tenant.id)


async def test_a_named_action_awards_once_per_reference_and_refuses_what_the_program_does_not_name(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    url = "/api/v1/loyalty/actions"
    customer = await _customer(client, tenant)
    body = {"customer_id": customer, "action": "review_written", "reference": "review-1"}
    off = await client.post(url, json=body, headers=tenant.headers())
    assert off.status_code == 422  # the default program names no action
    saved = await _program(client, tenant, enrolment="explicit", actions={"review_written": 50, "survey": 5})
    assert saved["actions"] == {"review_written": 50, "survey": 5}
    for bad in ({"actions": {"x": 0}}, {"actions": {"x": 1.5}}, {"actions": {"": 5}}):
        current = await client.get("/api/v1/loyalty/program", headers=tenant.headers())
        refused = await client.put(
            "/api/v1/loyalty/program",
            json={"earn_rate": "1", **bad},
            headers={**tenant.headers(), "If-Match": current.headers["ETag"]},
        )
        assert refused.status_code == 422, (bad, refused.text)
    not_member = await client.post(url, json=body, headers=tenant.headers())
    assert not_member.status_code == 409
    assert (await client.post(_enrolment(customer), headers=tenant.headers())).status_code == 200
    unknown = await client.post(url, json={**body, "action": "dance"}, headers=tenant.headers())
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "action"]
    for bad_body in ({**body, "reference": ""}, {k: v for k, v in body.items() if k != "reference"}):
        assert (await client.post(url, json=bad_body, headers=tenant.headers())).status_code == 422
    awarded = await client.post(url, json=body, headers=tenant.headers())
    assert awarded.status_code == 200, awarded.text
    entry = awarded.json()["entry"]
    assert (entry["kind"], entry["points"], entry["reason"]) == ("action", 50, "review_written: review-1")
    assert (awarded.json()["balance"], awarded.json()["available"]) == (50, 50)
    repeat = await client.post(url, json=body, headers=tenant.headers())
    assert repeat.status_code == 409 and repeat.json()["existing_id"] == entry["id"]
    other = await client.post(url, json={**body, "reference": "review-2"}, headers=tenant.headers())
    assert other.status_code == 200 and other.json()["balance"] == 100
    earned = await _events(db, tenant, "loyalty.points_earned")
    assert [(e["kind"], e["points"]) for e in earned] == [("action", 50), ("action", 50)]
    await assert_balances_hold(db, tenant.id)


async def test_concurrent_awards_of_one_action_and_reference_credit_once(
    live_client: httpx.AsyncClient, live_tenant: Tenant, app: Any
) -> None:
    tenant = live_tenant
    await _program(live_client, tenant, actions={"checked_in": 10})
    customer = await _customer(live_client, tenant)
    body = {"customer_id": customer, "action": "checked_in", "reference": "2026-12-08"}
    responses = await asyncio.gather(
        *(live_client.post("/api/v1/loyalty/actions", json=body, headers=tenant.headers()) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 19, statuses
    account = await _account(live_client, tenant, customer)
    assert (account["member"], account["balance"]) == (True, 10)
    async with app.state.sessions() as session:
        await assert_balances_hold(session, tenant.id)


async def test_a_members_level_raises_its_new_tickets_priority_and_sla_tier(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    always_open = {str(d): [["00:00", "24:00"]] for d in range(7)}
    sla = {
        "timezone": "UTC",
        "weekly": always_open,
        "policies": [
            {"priority": "high", "tier": "A", "first_response_minutes": 30, "resolution_minutes": 300},
            {"priority": "high", "first_response_minutes": 90, "resolution_minutes": 900},
            {"priority": "low", "first_response_minutes": 600, "resolution_minutes": 6000},
        ],
    }
    assert (await client.put("/api/v1/sla", json=sla, headers=tenant.headers())).status_code == 200
    await _program(client, tenant)
    gold, plain, stranger = [await _customer(client, tenant) for _ in range(3)]
    await _post_order(client, tenant, _order(gold, (None, "200.00")))
    await _post_order(client, tenant, _order(plain, (None, "20.00")))
    levels = {
        "levels": [
            {"code": "silver", "name": "银卡", "metric": "spend", "threshold": "10"},
            {"code": "gold", "name": "金卡", "metric": "spend", "threshold": "100", "ticket_priority": "high",
             "value_tier": "A"},
        ]
    }  # fmt: skip
    saved = await client.put("/api/v1/loyalty/levels", json=levels, headers={**tenant.headers(), "If-Match": "*"})
    assert saved.status_code == 200, saved.text
    assert (await client.post("/api/v1/loyalty/levels/review", headers=tenant.headers())).json()["changed"] == 2
    assert (await _account(client, tenant, gold))["level"] == "gold"

    async def ticket(customer: str, priority: str) -> dict[str, Any]:
        body = {"customer_id": customer, "type": "complaint", "channel": "phone", "subject": "包装破损",
                "priority": priority}  # fmt: skip
        response = await client.post("/api/v1/tickets", json=body, headers=tenant.headers())
        assert response.status_code == 201, response.text
        return dict(response.json())

    # Gold: raised from low to high, and timed by tier A's policy (the customer's own tier is lower).
    raised = await ticket(gold, "low")
    assert raised["priority"] == "high"
    assert 29 * 60 <= raised["seconds_to_first_response_due"] <= 30 * 60
    # Never lowered: an urgent ticket stays urgent.
    assert (await ticket(gold, "urgent"))["priority"] == "urgent"
    # Silver names no benefit; a non-member keeps what was asked.
    for customer in (plain, stranger):
        kept = await ticket(customer, "low")
        assert kept["priority"] == "low" and 599 * 60 <= kept["seconds_to_first_response_due"] <= 600 * 60


async def test_a_level_multiplies_what_an_order_earns(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _program(client, tenant, category_multipliers={}, channel_multipliers={})
    levels = {
        "levels": [{"code": "vip", "name": "贵宾", "metric": "spend", "threshold": "1", "earn_multiplier": "1.5"}]
    }
    saved = await client.put("/api/v1/loyalty/levels", json=levels, headers={**tenant.headers(), "If-Match": "*"})
    assert saved.status_code == 200, saved.text
    customer = await _customer(client, tenant)
    await _post_order(client, tenant, _order(customer, (None, "10.00")))
    assert (await _account(client, tenant, customer))["balance"] == 10
    assert (await client.post("/api/v1/loyalty/levels/review", headers=tenant.headers())).json()["changed"] == 1
    await _post_order(client, tenant, _order(customer, (None, "10.00"), (None, "5.00")))
    # 10 × 1.5 = 15 and 5 × 1.5 = 7.5, rounded down to 7, per line.
    assert (await _account(client, tenant, customer))["balance"] == 10 + 15 + 7


async def test_a_merge_moves_points_lots_and_the_higher_level_to_the_survivor_through_the_ledger(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _program(client, tenant, pending_days=30)
    levels = {
        "levels": [
            {"code": "silver", "name": "银卡", "metric": "spend", "threshold": "50"},
            {"code": "gold", "name": "金卡", "metric": "spend", "threshold": "500"},
        ]
    }
    saved = await client.put("/api/v1/loyalty/levels", json=levels, headers={**tenant.headers(), "If-Match": "*"})
    assert saved.status_code == 200, saved.text
    keep, dup, outsider = [await _customer(client, tenant) for _ in range(3)]
    await _post_order(client, tenant, _order(keep, (None, "60.00")))
    dup_order = _order(dup, (None, "600.00"))
    await _post_order(client, tenant, dup_order)
    adjust = {"customer_id": dup, "points": 100, "reason": "开卡礼"}
    assert (await client.post("/api/v1/loyalty/adjustments", json=adjust, headers=tenant.headers())).status_code == 200
    redemption = (await _redeem(client, tenant, dup, 40)).json()
    assert (await client.post("/api/v1/loyalty/levels/review", headers=tenant.headers())).json()["changed"] == 2
    before = await _account(client, tenant, dup)
    assert (before["balance"], before["available"], before["pending"], before["level"]) == (660, 60, 600, "gold")

    merged = await client.post(f"/api/v1/customers/{keep}/merge", json={"absorb": [dup]}, headers=tenant.headers())
    assert merged.status_code == 200, merged.text
    survivor = await _account(client, tenant, keep)
    # The lots keep their dates: the order's points are still pending.
    assert (survivor["balance"], survivor["available"], survivor["pending"]) == (720, 60, 660)
    assert survivor["level"] == "gold" and survivor["level_since"] == before["level_since"]
    newest = (await _ledger(client, tenant, keep))[0]
    assert (newest["kind"], newest["points"], newest["reason"]) == ("merge", 660, f"merged from {dup}")
    moves = await _events(db, tenant, "loyalty.points_adjusted")
    assert sorted((e["customer_id"], e["kind"], e["points"], e["balance"]) for e in moves if e["kind"] == "merge") == (
        sorted([(keep, "merge", 660, 720), (dup, "merge", -660, 0)])
    )
    changed = [
        (e["customer_id"], e["from_level"], e["to_level"]) for e in await _events(db, tenant, "loyalty.level_changed")
    ]
    assert (keep, "silver", "gold") in changed
    # The absorbed customer's redemption follows its lots: cancelling it credits the survivor.
    cancel = await client.post(f"/api/v1/loyalty/redemptions/{redemption['id']}/cancel", headers=tenant.headers())
    assert cancel.status_code == 200, cancel.text
    assert (await _account(client, tenant, keep))["balance"] == 760
    # The moved order's refund takes back from the survivor, who now holds its lots.
    await _post_order(
        client, tenant, {**dup_order, "customer_id": keep, "status": "refunded", "refunded_amount": "600.00"}
    )
    assert (await _account(client, tenant, keep))["balance"] == 160
    await assert_balances_hold(db, tenant.id)
    # A merge of customers who are not members enrols nobody; undo leaves the points with the survivor.
    lone = await _customer(client, tenant)
    assert (
        await client.post(f"/api/v1/customers/{outsider}/merge", json={"absorb": [lone]}, headers=tenant.headers())
    ).status_code == 200
    assert (await _account(client, tenant, outsider))["member"] is False
    undone = await client.post(f"/api/v1/customers/merges/{merged.json()['merge_id']}/undo", headers=tenant.headers())
    assert undone.status_code == 200, undone.text
    assert (await _account(client, tenant, keep))["balance"] == 160
    assert (await _account(client, tenant, dup))["balance"] == 0
    await assert_balances_hold(db, tenant.id)


async def test_the_ledger_pages_with_a_cursor(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    for n in range(5):
        body = {"customer_id": customer, "points": n + 1, "reason": f"第{n}次"}
        assert (
            await client.post("/api/v1/loyalty/adjustments", json=body, headers=tenant.headers())
        ).status_code == 200
    url = f"/api/v1/customers/{customer}/loyalty/ledger?limit=2"
    seen: list[int] = []
    cursor: str | None = None
    while True:
        page = await client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=tenant.headers())
        assert page.status_code == 200, page.text
        seen += [e["points"] for e in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]
    bad = await client.get(url + "&cursor=garbage", headers=tenant.headers())
    assert bad.status_code == 422
