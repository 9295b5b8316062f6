"""Referrals: a customer created with another's code (API, batch, import) is linked to it; the
referee's first paid order at or above the program's amount within its window qualifies the
referral once (concurrent orders included) and the reward is credited through the points writer;
refusals carry their reason; and the loyalty report's figures are the ones counted by hand."""

import asyncio
import io
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import OutboxEvent
from app.services.bulk import import_jobs
from app.services.loyalty import referrals
from tests.factories import Tenant, customer_body
from tests.test_loyalty import PROGRAM, _account, _customer, _ledger, _order, _post_order, assert_balances_hold

REFERRALS = {"referrer_points": 500, "referee_points": 200, "min_order_amount": "100", "window_days": 30}


async def _program(client: httpx.AsyncClient, tenant: Tenant, **changes: Any) -> dict[str, Any]:
    current = await client.get("/api/v1/loyalty/program", headers=tenant.headers())
    response = await client.put(
        "/api/v1/loyalty/program",
        json={**PROGRAM, "referrals": REFERRALS, **changes},
        headers={**tenant.headers(), "If-Match": current.headers["ETag"]},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _code(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> str:
    return str((await _account(client, tenant, customer_id))["referral_code"])


async def _referred(client: httpx.AsyncClient, tenant: Tenant, code: str, **body: Any) -> str:
    response = await client.post(
        "/api/v1/customers", json=customer_body(referral_code=code, **body), headers=tenant.headers()
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _referrals(client: httpx.AsyncClient, tenant: Tenant, **query: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/referrals", params={"limit": 100, **query}, headers=tenant.headers())
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def _events(session: AsyncSession, tenant: Tenant, event_type: str) -> list[dict[str, Any]]:
    rows = await session.scalars(
        select(OutboxEvent.data)
        .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == event_type)
        .order_by(OutboxEvent.id)
    )
    return list(rows.all())


async def test_a_referee_s_first_paid_order_above_the_amount_qualifies_and_rewards_once(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    program = await _program(client, tenant)
    assert program["referrals"] == {**REFERRALS, "min_order_amount": "100.00"}
    referrer = await _customer(client, tenant)
    code = await _code(client, tenant, referrer)
    assert code == referrals.code_of(uuid.UUID(referrer)) and len(code) == 16
    # Case and spacing as a person types it.
    referee = await _referred(client, tenant, f" {code[:8].lower()} {code[8:]}")
    [made] = await _referrals(client, tenant, referrer_id=referrer)
    assert (made["referee_id"], made["code"], made["status"], made["reason"]) == (referee, code, "created", None)
    single = await client.get(f"/api/v1/referrals/{made['id']}", headers=tenant.headers())
    assert single.status_code == 200 and single.headers["ETag"] == '"1"' and single.json() == made

    # Below the amount: no qualification (the order still earns its own points).
    await _post_order(client, tenant, _order(referee, (None, "99.00")))
    assert (await _referrals(client, tenant))[0]["status"] == "created"
    first = await _post_order(client, tenant, _order(referee, (None, "150.00")))
    [done] = await _referrals(client, tenant)
    assert (done["status"], done["order_id"], done["referrer_points"], done["referee_points"]) == (
        "rewarded",
        first["id"],
        500,
        200,
    )
    assert done["qualified_at"] and done["rewarded_at"] and done["version"] == 3
    # Another paid order changes nothing.
    await _post_order(client, tenant, _order(referee, (None, "300.00")))
    assert (await _referrals(client, tenant)) == [done]
    assert (await _account(client, tenant, referrer))["balance"] == 500
    assert (await _account(client, tenant, referee))["balance"] == 99 + 150 + 200 + 300
    assert [(e["kind"], e["points"], e["reason"]) for e in await _ledger(client, tenant, referrer)] == [
        ("referral", 500, f"referral {done['id']}")
    ]
    db.expunge_all()
    assert [(e["id"], e["status"]) for e in await _events(db, tenant, "referral.created")] == [(made["id"], "created")]
    assert [e["order_id"] for e in await _events(db, tenant, "referral.qualified")] == [first["id"]]
    [rewarded] = await _events(db, tenant, "referral.rewarded")
    assert (rewarded["status"], rewarded["referrer_points"]) == ("rewarded", 500)
    earned = [e for e in await _events(db, tenant, "loyalty.points_earned") if e["kind"] == "referral"]
    assert sorted(e["points"] for e in earned) == [200, 500]
    await assert_balances_hold(db, tenant.id)


async def test_an_unknown_code_is_a_422_that_writes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    stranger = await _customer(client, other_tenant)
    foreign = referrals.code_of(uuid.UUID(stranger))
    for code in ("NOT-A-CODE", "0" * 16, foreign):
        response = await client.post(
            "/api/v1/customers", json=customer_body(referral_code=code), headers=tenant.headers()
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["loc"] == ["body", "referral_code"]
    listed = await client.get("/api/v1/customers", headers=tenant.headers())
    assert listed.json()["items"] == []
    assert await _referrals(client, tenant) == []


async def test_the_batch_links_each_item_through_the_same_writer(client: httpx.AsyncClient, tenant: Tenant) -> None:
    referrer = await _customer(client, tenant)
    code = await _code(client, tenant, referrer)
    items = [customer_body(referral_code=code), customer_body(referral_code="FFFFFFFFFFFFFFFF"), customer_body()]
    response = await client.post("/api/v1/customers/batch", json={"items": items}, headers=tenant.headers())
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 422, 201]
    assert results[1]["problem"]["errors"][0]["loc"][-1] == "referral_code"
    [made] = await _referrals(client, tenant)
    assert (made["referrer_id"], made["referee_id"], made["status"]) == (referrer, results[0]["id"], "created")


async def test_a_late_order_refuses_and_an_earlier_purchase_refuses_as_already_buying(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _program(client, tenant)
    referrer = await _customer(client, tenant)
    code = await _code(client, tenant, referrer)
    late, earlier = await _referred(client, tenant, code), await _referred(client, tenant, code)
    db.expunge_all()
    # The late referee's referral was made 40 days ago: its window (30 days) is past.
    await db.execute(
        text("UPDATE referrals SET created_at = created_at - interval '40 days' WHERE referee_id = :id"),
        {"id": uuid.UUID(late)},
    )
    await _post_order(client, tenant, _order(late, (None, "500.00")))
    # The other had paid before it was referred (an order recorded afterwards with its own date).
    before = (clock.now() - timedelta(days=3)).isoformat()
    await _post_order(client, tenant, _order(earlier, (None, "500.00"), ordered_at=before))
    found = {r["referee_id"]: r for r in await _referrals(client, tenant)}
    assert (found[late]["status"], found[late]["reason"]) == ("refused", "window_passed")
    assert (found[earlier]["status"], found[earlier]["reason"]) == ("refused", "already_buying")
    assert all(r["refused_at"] and r["order_id"] is None for r in found.values())
    refused = await _referrals(client, tenant, status="refused")
    assert len(refused) == 2 and await _referrals(client, tenant, status="rewarded") == []
    assert (await _account(client, tenant, referrer))["member"] is False


async def test_without_points_to_give_a_referral_stays_qualified(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _program(client, tenant, enabled=False)
    referrer = await _customer(client, tenant)
    referee = await _referred(client, tenant, await _code(client, tenant, referrer))
    await _post_order(client, tenant, _order(referee, (None, "100.00")))
    [qualified] = await _referrals(client, tenant)
    assert (qualified["status"], qualified["referrer_points"], qualified["rewarded_at"]) == ("qualified", 0, None)
    assert (await _account(client, tenant, referrer))["member"] is False


async def test_referrals_are_seen_as_their_referee_and_bad_filters_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    referrer = await _customer(client, tenant)
    await _referred(client, tenant, await _code(client, tenant, referrer))
    [made] = await _referrals(client, tenant)
    foreign = await client.get(f"/api/v1/referrals/{made['id']}", headers=other_tenant.headers())
    assert foreign.status_code == 404
    assert await _referrals(client, other_tenant) == []
    assert (await client.get(f"/api/v1/referrals/{uuid.uuid4()}", headers=tenant.headers())).status_code == 404
    mine = await client.get("/api/v1/referrals", headers=tenant.headers("sales"))
    assert mine.status_code == 200 and mine.json()["items"] == []
    bad = await client.get("/api/v1/referrals", params={"status": "paid"}, headers=tenant.headers())
    assert bad.status_code == 422
    assert await _referrals(client, tenant, referrer_id=str(uuid.uuid4())) == []


async def test_concurrent_first_orders_qualify_the_referral_once(
    live_client: httpx.AsyncClient, live_tenant: Tenant, app: Any
) -> None:
    tenant = live_tenant
    await _program(live_client, tenant)
    referrer = await _customer(live_client, tenant)
    referee = await _referred(live_client, tenant, await _code(live_client, tenant, referrer))
    gate = asyncio.Semaphore(8)

    async def order() -> httpx.Response:
        async with gate:
            body = _order(referee, (None, "120.00"))
            return await live_client.post("/api/v1/orders", json=body, headers=tenant.headers())

    responses = await asyncio.gather(*(order() for _ in range(20)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses if r.status_code != 201][:3]
    [done] = await _referrals(live_client, tenant)
    assert done["status"] == "rewarded" and done["order_id"] in {r.json()["id"] for r in responses}
    assert (await _account(live_client, tenant, referrer))["balance"] == 500
    assert (await _account(live_client, tenant, referee))["balance"] == 20 * 120 + 200
    async with app.state.sessions() as session:
        assert len(await _events(session, tenant, "referral.qualified")) == 1
        assert len(await _events(session, tenant, "referral.rewarded")) == 1
        await assert_balances_hold(session, tenant.id)


IMPORT_MAPPING = {"姓名": "name", "邮箱": "email", "推荐码": "referral_code"}


def _import_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    out.write(",".join(IMPORT_MAPPING) + "\n")
    for row in rows:
        out.write(",".join(row) + "\n")
    return out.getvalue().encode()


async def _import(
    app: FastAPI, pool: asyncpg.Pool, client: httpx.AsyncClient, tenant: Tenant, rows: list[list[str]]
) -> tuple[str, dict[str, Any]]:
    queued = await client.post(
        "/api/v1/imports",
        files={"file": ("客户.csv", _import_csv(rows))},
        data={"mapping": json.dumps(IMPORT_MAPPING), "mode": "upsert", "match_on": "email"},
        headers=tenant.headers(),
    )
    assert queued.status_code == 202, queued.text
    job = await import_jobs.process(app.state.job_sessions, pool, tenant.id, uuid.UUID(queued.json()["id"]))
    return str(job.id), dict(import_jobs.present(job)["progress"])


async def test_an_import_links_new_customers_and_refuses_with_the_reason(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    await _program(live_client, tenant)
    referrer_body = customer_body(emails=["ref@example.com"])
    made = await live_client.post("/api/v1/customers", json=referrer_body, headers=tenant.headers())
    referrer = str(made.json()["id"])
    buyer_made = await live_client.post(
        "/api/v1/customers", json=customer_body(emails=["buyer@example.com"]), headers=tenant.headers()
    )
    buyer = str(buyer_made.json()["id"])
    await _post_order(live_client, tenant, _order(buyer, (None, "50.00")))
    code = await _code(live_client, tenant, referrer)
    rows = [
        ["李娜", "li@example.com", code.lower()],
        ["自荐", "ref@example.com", code],
        ["老客", "buyer@example.com", code],
        ["无名", "nobody@example.com", "0123456789ABCDEF"],
        ["坏码", "bad@example.com", "XYZ"],
        ["没码", "none@example.com", ""],
    ]
    job_id, progress = await _import(app, pool, live_client, tenant, rows)
    assert (progress["created"], progress["failed"]) == (3, 1), progress
    errors = await live_client.get(f"/api/v1/imports/{job_id}/errors", headers=tenant.headers())
    assert "not a referral code" in errors.text and errors.text.splitlines()[1].startswith("6,")
    found = {r["reason"]: r for r in await _referrals(live_client, tenant)}
    assert set(found) == {None, "self_referral", "already_buying", "unknown_code"}
    assert found["self_referral"]["referee_id"] == referrer and found["already_buying"]["referee_id"] == buyer
    assert found["unknown_code"]["referrer_id"] is None and found["unknown_code"]["code"] == "0123456789ABCDEF"
    assert found[None]["status"] == "created" and found[None]["referrer_id"] == referrer
    # A re-run changes nothing.
    await _import(app, pool, live_client, tenant, rows)
    assert len(await _referrals(live_client, tenant)) == 4
    async with app.state.sessions() as session:
        events = await _events(session, tenant, "referral.created")
    assert sorted(str(e["reason"]) for e in events) == ["None", "already_buying", "self_referral", "unknown_code"]
    # The imported referee qualifies like any other.
    await _post_order(live_client, tenant, _order(found[None]["referee_id"], (None, "100.00")))
    assert (await _referrals(live_client, tenant, status="rewarded"))[0]["id"] == found[None]["id"]


async def test_the_loyalty_report_counts_what_was_done_by_hand(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    await _program(client, tenant, pending_days=14)
    levels = await client.get("/api/v1/loyalty/levels", headers=tenant.headers())
    saved = await client.put(
        "/api/v1/loyalty/levels",
        json={"levels": [{"code": "silver", "name": "银卡", "metric": "spend", "threshold": "200"}]},
        headers={**tenant.headers(), "If-Match": levels.headers["ETag"]},
    )
    assert saved.status_code == 200, saved.text
    referrer = await _customer(client, tenant)
    referee = await _referred(client, tenant, await _code(client, tenant, referrer))
    # The referee: 250 pending (the order's points) + 200 referral (available); the referrer 500 available.
    await _post_order(client, tenant, _order(referee, (None, "250.00")))
    adjusted = await client.post(
        "/api/v1/loyalty/adjustments",
        json={"customer_id": referrer, "points": 30, "reason": "补偿"},
        headers=tenant.headers(),
    )
    assert adjusted.status_code == 200, adjusted.text
    redeemed = await client.post(
        "/api/v1/loyalty/redemptions",
        json={"customer_id": referrer, "points": 100, "description": "礼品"},
        headers={**tenant.headers(), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert redeemed.status_code == 201, redeemed.text
    reviewed = await client.post("/api/v1/loyalty/levels/review", headers=tenant.headers())
    assert reviewed.json()["changed"] == 1
    await _post_order(client, other_tenant, _order(await _customer(client, other_tenant), (None, "999.00")))

    response = await client.get("/api/v1/reports/loyalty", headers=tenant.headers())
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["liability"] == {
        "members": 2,
        "balance": 250 + 200 + 500 + 30 - 100,
        "available": 200 + 500 + 30 - 100,
        "pending": 250,
        "expired_unwritten": 0,
    }
    [month] = report["months"]
    assert month == {
        "month": month["month"],
        "earned": 250 + 200 + 500,
        "reversed": 0,
        "redeemed": 100,
        "expired": 0,
        "adjusted": 30,
        "level_ups": 1,
        "level_downs": 0,
    }
    assert report["levels"] == [{"level": "silver", "members": 1}, {"level": None, "members": 1}]
    assert report["referrals"] == {
        "referred": 1,
        "qualified": 1,
        "rewarded": 1,
        "refused": dict.fromkeys(referrals.REASONS, 0),
        "referrer_points": 500,
        "referee_points": 200,
    }
    # A manager sees its team's customers only: the admin's are none of them.
    team = await client.get("/api/v1/reports/loyalty", headers=tenant.headers("manager"))
    assert team.status_code == 200, team.text
    assert team.json()["liability"] == dict.fromkeys(report["liability"], 0)
    assert (team.json()["months"], team.json()["levels"], team.json()["referrals"]["referred"]) == ([], [], 0)
    # A period before anything happened counts nothing but what is owed now.
    past = await client.get(
        "/api/v1/reports/loyalty",
        params={"until": (clock.now() - timedelta(days=400)).isoformat().replace("+00:00", "Z")},
        headers=tenant.headers(),
    )
    assert past.status_code == 200 and past.json()["months"] == [] and past.json()["referrals"]["referred"] == 0
    assert past.json()["liability"] == report["liability"]
    backwards = await client.get(
        "/api/v1/reports/loyalty",
        params={"since": "2026-06-01T00:00:00Z", "until": "2026-05-01T00:00:00Z"},
        headers=tenant.headers(),
    )
    assert backwards.status_code == 422
