"""Rewards and vouchers: the reward document's rules, redeeming a reward (points through the ledger's
writer, stock taken once per unit, level and per-customer limit), vouchers shown once and kept
hashed, spent on an order once, voided with their points and stock given back, following a merge;
refusals that change nothing; 5,000 concurrent redemptions of 1,000 units."""

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import AuditEntry, IdempotencyRecord, LoyaltyVoucher, OutboxEvent
from app.services.loyalty import vouchers
from tests.factories import Tenant, customer_body
from tests.test_loyalty import assert_balances_hold

REWARD = {"name": "10 元代金券", "points_cost": 30, "kind": "discount_amount", "value": "10", "stock": 5}


async def _customer(client: httpx.AsyncClient, tenant: Tenant) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _member(client: httpx.AsyncClient, tenant: Tenant, points: int = 100) -> str:
    customer = await _customer(client, tenant)
    body = {"customer_id": customer, "points": points, "reason": "开卡礼"}
    added = await client.post("/api/v1/loyalty/adjustments", json=body, headers=tenant.headers())
    assert added.status_code == 200, added.text
    return customer


async def _reward(client: httpx.AsyncClient, tenant: Tenant, **changes: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/rewards", json={**REWARD, **changes}, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _redeem(
    client: httpx.AsyncClient, tenant: Tenant, reward_id: str, customer_id: str, key: str | None = None
) -> httpx.Response:
    headers = {**tenant.headers(), "Idempotency-Key": key or uuid.uuid4().hex}
    return await client.post(f"/api/v1/rewards/{reward_id}/redeem", json={"customer_id": customer_id}, headers=headers)


async def _account(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/customers/{customer_id}/loyalty", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _stock(client: httpx.AsyncClient, tenant: Tenant, reward_id: str) -> int | None:
    response = await client.get(f"/api/v1/rewards/{reward_id}", headers=tenant.headers())
    assert response.status_code == 200, response.text
    stock: int | None = response.json()["stock"]
    return stock


async def _order(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> str:
    body = {
        "external_id": f"SO-{uuid.uuid4().hex[:8]}",
        "customer_id": customer_id,
        "ordered_at": clock.now().isoformat(),
        "currency": "CNY",
        "total_amount": "100.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "100.00"}],
    }
    response = await client.post("/api/v1/orders", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _levels(client: httpx.AsyncClient, tenant: Tenant) -> None:
    levels = {"levels": [{"code": "gold", "name": "金卡", "metric": "spend", "threshold": "1000"}]}
    saved = await client.put("/api/v1/loyalty/levels", json=levels, headers={**tenant.headers(), "If-Match": "*"})
    assert saved.status_code == 200, saved.text


async def _state(db: AsyncSession, workspace_id: uuid.UUID) -> tuple[Any, ...]:
    """Everything a refusal must leave as it was: balances, ledger, stock, vouchers, redemptions, events."""
    counts = (
        await db.execute(
            text(
                """
SELECT (SELECT coalesce(sum(balance), 0) FROM loyalty_accounts WHERE workspace_id = :ws),
       (SELECT count(*) FROM loyalty_entries WHERE workspace_id = :ws),
       (SELECT coalesce(sum(stock), 0) FROM loyalty_rewards WHERE workspace_id = :ws),
       (SELECT count(*) FROM loyalty_vouchers WHERE workspace_id = :ws),
       (SELECT string_agg(status, ',' ORDER BY id) FROM loyalty_vouchers WHERE workspace_id = :ws),
       (SELECT count(*) FROM loyalty_redemptions WHERE workspace_id = :ws),
       (SELECT count(*) FROM outbox_events WHERE workspace_id = :ws),
       (SELECT count(*) FROM audit_log WHERE workspace_id = :ws)
"""
            ),
            {"ws": workspace_id},
        )
    ).one()
    return tuple(counts)


async def test_rewards_are_validated_versioned_soft_deleted_and_audited(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _levels(client, tenant)
    before = await _state(db, tenant.id)
    for bad in (
        {"points_cost": -1},
        {"points_cost": 1.5},
        {"points_cost": "7"},
        {"points_cost": 10**12},
        {"stock": -1},
        {"stock": 2.5},
        {"per_customer_limit": 0},
        {"kind": "gift"},
        {"kind": "discount_amount", "value": None},
        {"kind": "discount_percent", "value": "120"},
        {"value": "-5"},
        {"value": 1.5},
        {"eligible_levels": ["platinum"]},
        {"eligible_levels": ["gold", "gold"]},
        {"valid_from": "2027-01-02T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"},
        {"name": ""},
        {"shelf": 1},
    ):
        refused = await client.post("/api/v1/rewards", json={**REWARD, **bad}, headers=tenant.headers())
        assert refused.status_code == 422, (bad, refused.text)
    unknown = await client.post(
        "/api/v1/rewards", json={**REWARD, "eligible_levels": ["platinum"]}, headers=tenant.headers()
    )
    assert unknown.json()["errors"][0]["loc"] == ["body", "eligible_levels", 0]
    sales = await client.post("/api/v1/rewards", json=REWARD, headers=tenant.headers("sales"))
    assert sales.status_code == 403
    assert await _state(db, tenant.id) == before
    created = await client.post(
        "/api/v1/rewards", json={**REWARD, "eligible_levels": ["gold"]}, headers=tenant.headers()
    )
    assert created.status_code == 201, created.text
    reward = created.json()
    assert created.headers["Location"] == f"/api/v1/rewards/{reward['id']}" and created.headers["ETag"] == '"1"'
    assert (reward["value"], reward["currency"], reward["stock"], reward["eligible_levels"]) == (
        "10.00",
        "CNY",
        5,
        ["gold"],
    )
    gift = await _reward(client, tenant, kind="gift", value=None, points_cost=0, stock=None)
    assert (gift["value"], gift["points_cost"], gift["stock"]) == (None, 0, None)
    percent = await _reward(client, tenant, kind="discount_percent", value="12.5")
    assert percent["value"] == "12.5"
    listed = await client.get("/api/v1/rewards?limit=2", headers=tenant.headers())
    assert [r["id"] for r in listed.json()["items"]] == [percent["id"], gift["id"]] and listed.json()["next_cursor"]
    url = f"/api/v1/rewards/{reward['id']}"
    assert (await client.patch(url, json={"stock": 9}, headers=tenant.headers())).status_code == 428
    stale = await client.patch(url, json={"stock": 9}, headers={**tenant.headers(), "If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["current_version"] == 1
    patches: list[dict[str, Any]] = [{"kind": "gift"}, {"name": None}, {"eligible_levels": ["silver"]}, {"stock": -3}]
    for patch in patches:
        refused = await client.patch(url, json=patch, headers={**tenant.headers(), "If-Match": '"1"'})
        assert refused.status_code == 422, (patch, refused.text)
    changed = await client.patch(
        url, json={"stock": 9, "eligible_levels": []}, headers={**tenant.headers(), "If-Match": '"1"'}
    )
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.json()["stock"] == 9
    deleted = await client.delete(url, headers={**tenant.headers(), "If-Match": '"2"'})
    assert deleted.status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
    member = await _member(client, tenant)
    assert (await _redeem(client, tenant, reward["id"], member)).status_code == 404
    actions = (
        await db.scalars(
            select(AuditEntry.action).where(
                AuditEntry.workspace_id == tenant.id, AuditEntry.entity_id == uuid.UUID(reward["id"])
            )
        )
    ).all()
    assert sorted(actions) == ["created", "deleted", "updated"]


async def test_redeeming_a_reward_spends_points_takes_stock_and_shows_the_code_once(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    member = await _member(client, tenant, 100)
    reward = await _reward(client, tenant, voucher_valid_days=30)
    keyless = await client.post(
        f"/api/v1/rewards/{reward['id']}/redeem", json={"customer_id": member}, headers=tenant.headers()
    )
    assert keyless.status_code == 400 and "Idempotency-Key" in keyless.json()["detail"]
    first = await _redeem(client, tenant, reward["id"], member, key="v-1")
    assert first.status_code == 201, first.text
    voucher = first.json()
    code = voucher["code"]
    assert first.headers["Location"] == f"/api/v1/vouchers/{voucher['id']}"
    assert len(code) == 19 and code[:4] == voucher["code_prefix"] and voucher["status"] == "issued"
    assert (voucher["points"], voucher["value"], voucher["source"]) == (30, "10.00", "reward")
    assert voucher["expires_at"] > voucher["issued_at"]
    replay = await _redeem(client, tenant, reward["id"], member, key="v-1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == voucher["id"] and replay.json()["code"] is None
    read = await client.get(f"/api/v1/vouchers/{voucher['id']}", headers=tenant.headers())
    assert read.status_code == 200 and read.json()["code"] is None and read.json()["code_prefix"] == code[:4]
    assert (await _account(client, tenant, member))["available"] == 70
    assert await _stock(client, tenant, reward["id"]) == 4
    redemption = await client.get(f"/api/v1/loyalty/redemptions/{voucher['redemption_id']}", headers=tenant.headers())
    assert redemption.json()["points"] == 30 and redemption.json()["description"] == REWARD["name"]
    listed = await client.get(f"/api/v1/vouchers?customer_id={member}&status=issued", headers=tenant.headers())
    assert [v["id"] for v in listed.json()["items"]] == [voucher["id"]]
    # Only the hash and the prefix are kept, and no stored response holds the code.
    stored = await db.scalar(select(LoyaltyVoucher).where(LoyaltyVoucher.id == uuid.UUID(voucher["id"])))
    assert stored is not None and stored.code_hash == vouchers.code_hash(code) and code not in stored.code_hash
    replays = (await db.scalars(select(IdempotencyRecord).where(IdempotencyRecord.workspace_id == tenant.id))).all()
    assert replays and all(code not in str(r.body) for r in replays)
    events = (await db.scalars(select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id))).all()
    issued = [e.data for e in events if e.type == "voucher.issued"]
    assert len(issued) == 1 and issued[0]["code_prefix"] == code[:4] and code not in str(issued[0])
    assert [e.data["points"] for e in events if e.type == "loyalty.points_redeemed"] == [-30]
    await assert_balances_hold(db, tenant.id)


async def test_every_refusal_to_redeem_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    await _levels(client, tenant)
    rich, poor = await _member(client, tenant, 1000), await _member(client, tenant, 10)
    stranger = await _customer(client, tenant)
    sold_out = await _reward(client, tenant, stock=0)
    for_gold = await _reward(client, tenant, eligible_levels=["gold"])
    one_each = await _reward(client, tenant, per_customer_limit=1, points_cost=0)
    later = await _reward(client, tenant, valid_from=(clock.now() + timedelta(days=1)).isoformat())
    ended = await _reward(
        client,
        tenant,
        valid_from=(clock.now() - timedelta(days=2)).isoformat(),
        valid_until=(clock.now() - timedelta(days=1)).isoformat(),
    )
    plain = await _reward(client, tenant)
    assert (await _redeem(client, tenant, one_each["id"], stranger)).status_code == 201
    before = await _state(db, tenant.id)
    cases = [
        (sold_out["id"], rich, 409, "out-of-stock"),
        (for_gold["id"], rich, 409, "not-eligible"),
        (one_each["id"], stranger, 409, "not-eligible"),
        (later["id"], rich, 409, "not-eligible"),
        (ended["id"], rich, 410, "gone"),
        (plain["id"], poor, 409, "not-enough-points"),
        (plain["id"], stranger, 409, "not-enough-points"),
        (str(uuid.uuid4()), rich, 404, "not-found"),
        (plain["id"], str(uuid.uuid4()), 404, "not-found"),
    ]
    for reward_id, customer_id, status, kind in cases:
        refused = await _redeem(client, tenant, reward_id, customer_id)
        assert refused.status_code == status, (reward_id, refused.text)
        assert refused.json()["type"].endswith(kind), refused.text
    assert (await _redeem(client, tenant, plain["id"], poor)).json()["available"] == 10
    assert (await _redeem(client, other_tenant, plain["id"], rich)).status_code == 404
    for bad in ({}, {"customer_id": "x"}, {"customer_id": rich, "points": 5}):
        refused = await client.post(
            f"/api/v1/rewards/{plain['id']}/redeem",
            json=bad,
            headers={**tenant.headers(), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert refused.status_code == 422, (bad, refused.text)
    assert await _state(db, tenant.id) == before
    await assert_balances_hold(db, tenant.id)


async def test_a_voucher_is_spent_once_on_an_order_of_its_own_customer(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    member, other = await _member(client, tenant), await _customer(client, tenant)
    reward = await _reward(client, tenant)
    issued = (await _redeem(client, tenant, reward["id"], member)).json()
    code = issued["code"]
    own_order, others_order = await _order(client, tenant, member), await _order(client, tenant, other)
    url = "/api/v1/vouchers/redeem"
    before = await _state(db, tenant.id)
    refusals = [
        ({"code": code, "order_id": others_order}, 422),
        ({"code": code, "order_id": str(uuid.uuid4())}, 422),
        ({"code": "0000-0000-0000-0000", "order_id": own_order}, 404),
        ({"code": "", "order_id": own_order}, 422),
        ({"code": code}, 422),
    ]
    for body, status in refusals:
        refused = await client.post(url, json=body, headers=tenant.headers())
        assert refused.status_code == status, (body, refused.text)
    assert (
        await client.post(url, json={"code": code, "order_id": own_order}, headers=other_tenant.headers())
    ).status_code == 404
    assert await _state(db, tenant.id) == before
    # Case, spaces and dashes are how a code is shown, not part of it.
    typed = code.lower().replace("-", " ")
    spent = await client.post(url, json={"code": typed, "order_id": own_order}, headers=tenant.headers())
    assert spent.status_code == 200, spent.text
    assert (spent.json()["status"], spent.json()["order_id"]) == ("redeemed", own_order)
    before = await _state(db, tenant.id)
    again = await client.post(url, json={"code": code, "order_id": own_order}, headers=tenant.headers())
    assert again.status_code == 409 and again.json()["type"].endswith("voucher-spent")
    void = await client.post(f"/api/v1/vouchers/{issued['id']}/void", headers=tenant.headers())
    assert void.status_code == 409
    assert await _state(db, tenant.id) == before
    # An expired voucher: 410, and nothing changes.
    late = (await _redeem(client, tenant, reward["id"], member)).json()
    await db.execute(
        update(LoyaltyVoucher)
        .where(LoyaltyVoucher.id == uuid.UUID(late["id"]))
        .values(expires_at=clock.now() - timedelta(minutes=1))
    )
    # Released into the test's transaction, so that the refused request's rollback keeps it.
    await db.commit()
    before = await _state(db, tenant.id)
    expired = await client.post(url, json={"code": late["code"], "order_id": own_order}, headers=tenant.headers())
    assert expired.status_code == 410 and expired.json()["type"].endswith("voucher-expired")
    assert (await client.get(f"/api/v1/vouchers/{late['id']}", headers=tenant.headers())).json()["status"] == "expired"
    listed = await client.get(f"/api/v1/vouchers?status=expired&customer_id={member}", headers=tenant.headers())
    assert [v["id"] for v in listed.json()["items"]] == [late["id"]]
    assert await _state(db, tenant.id) == before
    redeemed = list((await db.scalars(select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id))).all())
    assert [e.data["order_id"] for e in redeemed if e.type == "voucher.redeemed"] == [own_order]


async def test_voiding_gives_the_points_and_the_unit_back_once(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    member = await _member(client, tenant, 100)
    reward = await _reward(client, tenant, stock=1)
    issued = (await _redeem(client, tenant, reward["id"], member)).json()
    assert (await _account(client, tenant, member))["available"] == 70 and await _stock(
        client, tenant, reward["id"]
    ) == 0
    # The redemption that paid for a standing voucher is cancelled by voiding the voucher.
    cancel = await client.post(
        f"/api/v1/loyalty/redemptions/{issued['redemption_id']}/cancel", headers=tenant.headers()
    )
    assert cancel.status_code == 409 and issued["id"] in cancel.json()["detail"]
    assert (
        await client.post(f"/api/v1/vouchers/{issued['id']}/void", headers=tenant.headers("readonly"))
    ).status_code == 403
    voided = await client.post(f"/api/v1/vouchers/{issued['id']}/void", headers=tenant.headers())
    assert voided.status_code == 200 and voided.json()["status"] == "voided" and voided.json()["voided_at"]
    assert (await _account(client, tenant, member))["available"] == 100
    assert await _stock(client, tenant, reward["id"]) == 1
    redemption = await client.get(f"/api/v1/loyalty/redemptions/{issued['redemption_id']}", headers=tenant.headers())
    assert redemption.json()["status"] == "cancelled"
    before = await _state(db, tenant.id)
    again = await client.post(f"/api/v1/vouchers/{issued['id']}/void", headers=tenant.headers())
    assert again.status_code == 409
    spend = await client.post(
        "/api/v1/vouchers/redeem",
        json={"code": issued["code"], "order_id": await _order(client, tenant, member)},
        headers=tenant.headers(),
    )
    assert spend.status_code == 409
    assert (await client.post(f"/api/v1/vouchers/{uuid.uuid4()}/void", headers=tenant.headers())).status_code == 404
    after = await _state(db, tenant.id)
    # The order written above earned nothing (no program) but is an event and an audit entry.
    assert after[:6] == before[:6]
    types = [e.type for e in (await db.scalars(select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id))).all()]
    assert types.count("voucher.voided") == 1
    await assert_balances_hold(db, tenant.id)


async def test_an_admin_issues_a_voucher_by_hand_with_its_reason_audited(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    body = {"customer_id": customer, "name": "新客礼", "kind": "discount_amount", "value": "20", "reason": "新客"}
    before = await _state(db, tenant.id)
    for bad in ({"reason": ""}, {"reason": None}, {"kind": "gift"}, {"value": "0"},
                {"expires_at": (clock.now() - timedelta(days=1)).isoformat()}):  # fmt: skip
        refused = await client.post("/api/v1/vouchers", json={**body, **bad}, headers=tenant.headers())
        assert refused.status_code == 422, (bad, refused.text)
    assert (await client.post("/api/v1/vouchers", json=body, headers=tenant.headers("sales"))).status_code == 403
    assert (await client.post("/api/v1/vouchers", json=body, headers=other_tenant.headers())).status_code == 404
    assert await _state(db, tenant.id) == before
    issued = await client.post("/api/v1/vouchers", json=body, headers=tenant.headers())
    assert issued.status_code == 201, issued.text
    voucher = issued.json()
    assert voucher["code"] and (voucher["points"], voucher["source"], voucher["reason"]) == (0, "admin", "新客")
    assert voucher["redemption_id"] is None and voucher["expires_at"] is None
    entry = await db.scalar(
        select(AuditEntry).where(AuditEntry.workspace_id == tenant.id, AuditEntry.entity_id == uuid.UUID(voucher["id"]))
    )
    assert entry is not None and entry.changes["reason"] == {"before": None, "after": "新客"}
    voided = await client.post(f"/api/v1/vouchers/{voucher['id']}/void", headers=tenant.headers())
    assert voided.status_code == 200 and voided.json()["status"] == "voided"
    assert (await _account(client, tenant, customer))["member"] is False


async def test_vouchers_follow_the_survivor_of_a_merge_and_come_back_on_undo(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    keep, dup = await _customer(client, tenant), await _member(client, tenant, 100)
    reward = await _reward(client, tenant)
    issued = (await _redeem(client, tenant, reward["id"], dup)).json()
    merged = await client.post(f"/api/v1/customers/{keep}/merge", json={"absorb": [dup]}, headers=tenant.headers())
    assert merged.status_code == 200, merged.text
    held = await client.get(f"/api/v1/vouchers?customer_id={keep}", headers=tenant.headers())
    assert [v["id"] for v in held.json()["items"]] == [issued["id"]]
    spent = await client.post(
        "/api/v1/vouchers/redeem",
        json={"code": issued["code"], "order_id": await _order(client, tenant, keep)},
        headers=tenant.headers(),
    )
    assert spent.status_code == 200, spent.text
    undone = await client.post(f"/api/v1/customers/merges/{merged.json()['merge_id']}/undo", headers=tenant.headers())
    assert undone.status_code == 200, undone.text
    owner = await db.scalar(select(LoyaltyVoucher.customer_id).where(LoyaltyVoucher.id == uuid.UUID(issued["id"])))
    assert str(owner) == dup


async def test_5000_concurrent_redemptions_of_1000_in_stock_make_exactly_1000_vouchers(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    # Fifty members with points for more than their share, so stock is what runs out.
    members = [await _member(live_client, tenant, 2000) for _ in range(50)]
    reward = await _reward(live_client, tenant, points_cost=10, stock=1000)
    # Every request is started at once; the client's pool lets 16 into the service together, as
    # many connections as the service's pool holds without overflow.
    gate = asyncio.Semaphore(16)

    async def attempt(i: int) -> httpx.Response:
        async with gate:
            return await _redeem(live_client, tenant, reward["id"], members[i % len(members)])

    responses = await asyncio.gather(*(attempt(i) for i in range(5000)))
    statuses = [r.status_code for r in responses]
    server_errors = [r.text for r in responses if r.status_code >= 500 and r.status_code != 503]
    assert server_errors == [], server_errors[:3]
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 503)
    assert statuses.count(201) == 1000, sorted(set(statuses))
    assert set(statuses) <= {201, 409, 503}
    assert all(r.json()["type"].endswith("out-of-stock") for r in responses if r.status_code == 409)
    assert await _stock(live_client, tenant, reward["id"]) == 0
    async with app.state.sessions() as session:
        count = select(func.count()).select_from(LoyaltyVoucher).where(LoyaltyVoucher.workspace_id == tenant.id)
        assert await session.scalar(count) == 1000
        spent = await session.scalar(
            text("SELECT -sum(points) FROM loyalty_entries WHERE workspace_id = :ws AND kind = 'redeem'"),
            {"ws": tenant.id},
        )
        assert spent == 10 * 1000
        await assert_balances_hold(session, tenant.id)
    codes = {r.json()["code"] for r in responses if r.status_code == 201}
    assert len(codes) == 1000


async def test_a_voucher_outlives_its_members_account_and_voids_with_nothing_to_give_back(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    member = await _member(client, tenant, 100)
    reward = await _reward(client, tenant, stock=1)
    issued = (await _redeem(client, tenant, reward["id"], member)).json()
    # A member who leaves takes the account with its ledger, lots and redemptions.
    await db.execute(text("DELETE FROM loyalty_accounts WHERE workspace_id = :ws"), {"ws": tenant.id})
    await db.commit()
    kept = await client.get(f"/api/v1/vouchers/{issued['id']}", headers=tenant.headers())
    assert kept.status_code == 200 and kept.json()["redemption_id"] is None and kept.json()["status"] == "issued"
    voided = await client.post(f"/api/v1/vouchers/{issued['id']}/void", headers=tenant.headers())
    assert voided.status_code == 200 and voided.json()["status"] == "voided"
    assert (await _account(client, tenant, member))["member"] is False
    assert await _stock(client, tenant, reward["id"]) == 1


async def test_vouchers_are_seen_and_spent_only_by_those_who_see_their_customer(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    owned = customer_body(owner_id=str(tenant.users["sales"].id))
    created = await client.post("/api/v1/customers", json=owned, headers=tenant.headers())
    customer = str(created.json()["id"])
    body = {"customer_id": customer, "name": "新客礼", "kind": "gift", "reason": "新客"}
    issued = (await client.post("/api/v1/vouchers", json=body, headers=tenant.headers())).json()
    order = await _order(client, tenant, customer)
    url = f"/api/v1/vouchers/{issued['id']}"
    for outsider in (tenant.headers("sales_west"), other_tenant.headers()):
        assert (await client.get(url, headers=outsider)).status_code == 404
        assert (await client.get("/api/v1/vouchers", headers=outsider)).json()["items"] == []
        assert (await client.post(f"{url}/void", headers=outsider)).status_code == 404
        spend = {"code": issued["code"], "order_id": order}
        assert (await client.post("/api/v1/vouchers/redeem", json=spend, headers=outsider)).status_code == 404
    assert (await client.get(url, headers=tenant.headers("sales"))).json()["status"] == "issued"
    spend = {"code": issued["code"], "order_id": order}
    spent = await client.post("/api/v1/vouchers/redeem", json=spend, headers=tenant.headers("sales"))
    assert spent.status_code == 200 and spent.json()["status"] == "redeemed"
    reward = await _reward(client, tenant)
    assert (await client.get(f"/api/v1/rewards/{reward['id']}", headers=other_tenant.headers())).status_code == 404
    assert (await client.get("/api/v1/rewards", headers=other_tenant.headers())).json()["items"] == []
