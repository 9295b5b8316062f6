"""The loyalty report's daily figures: appended by the ledger's triggers in the transaction of every
ledger write, folded by the worker, and giving the report the ledger itself gives (the live statement
is the reference) after earns, referrals, adjustments, redemptions and their cancel, refunds and
expiry, before and after folding; concurrent writers and folds lose no movement."""

import asyncio
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import system_caller
from app.services.loyalty import points, reports
from app.workers import loyalty as loyalty_jobs
from tests.factories import Tenant
from tests.test_loyalty import _customer, _order, _post_order, _redeem, assert_balances_hold
from tests.test_referrals import _code, _program, _referred
from tests.test_workers import _job_sessions

# The writes span the end of October in Shanghai; NOW is a few days into November.
NOW = datetime.fromisoformat("2026-11-05T09:17:00+00:00")

WINDOWS = [
    (NOW - timedelta(days=365), NOW),
    # Both ends inside a day, whole days between.
    (NOW - timedelta(days=20, hours=7, minutes=11), NOW - timedelta(days=1, hours=3)),
    # Midnight in Asia/Shanghai at both ends, across the month's end.
    (datetime.fromisoformat("2026-10-20T16:00:00+00:00"), datetime.fromisoformat("2026-11-02T16:00:00+00:00")),
    # Shorter than a day: no whole day at all.
    (NOW - timedelta(days=3, hours=10), NOW - timedelta(days=3, hours=2)),
]

# On 2026-10-25 the Azores' clocks go back from 01:00 to 00:00: local midnight comes at 00:00 and
# again at 01:00 UTC, and the day starts at the first.
AZORES_WINDOWS = [
    *WINDOWS,
    (datetime.fromisoformat("2026-10-25T00:00:00+00:00"), datetime.fromisoformat("2026-10-27T00:30:00+00:00")),
    (datetime.fromisoformat("2026-10-25T01:00:00+00:00"), datetime.fromisoformat("2026-10-26T07:00:00+00:00")),
    (datetime.fromisoformat("2026-10-20T05:00:00+00:00"), datetime.fromisoformat("2026-10-25T01:00:00+00:00")),
]
ZONES = [("Asia/Shanghai", WINDOWS), ("Atlantic/Azores", AZORES_WINDOWS)]

# Entries of every kind, a few a day over forty days (the report adds them whatever the balances say).
SEED_SQL = """
INSERT INTO loyalty_entries (workspace_id, id, customer_id, kind, points, reason, actor, created_at)
SELECT :ws, gen_random_uuid(), (CAST(:members AS uuid[]))[1 + g % 2], k.kind, k.sign * (1 + g * 7 % 90), 'seed',
       '{"type": "system"}', CAST(:now AS timestamptz) - g * interval '5 hours 13 minutes'
FROM generate_series(1, 190) g,
     LATERAL (SELECT (ARRAY['earn', 'reverse', 'redeem', 'redeem_cancel', 'adjust', 'expire', 'referral',
                            'adjust'])[1 + g % 8] AS kind,
                     (ARRAY[1, -1, -1, 1, -1, -1, 1, 1])[1 + g % 8] AS sign) k
"""

# Entries moved to another member (as a merge moves them) and entries gone with their member.
CHANGES_SQL = [
    "UPDATE loyalty_entries SET customer_id = CAST(:to AS uuid) WHERE workspace_id = :ws AND reason = 'seed' "
    "AND points % 3 = 0",
    "UPDATE loyalty_entries SET points = points * 2 WHERE workspace_id = :ws AND reason = 'seed' AND points % 5 = 1",
    "DELETE FROM loyalty_entries WHERE workspace_id = :ws AND reason = 'seed' AND points % 7 = 2",
]

APPENDED_SQL = text("SELECT count(*) FROM loyalty_day_figures WHERE workspace_id = :ws AND NOT compacted")

# The figures summed per day and kind, against the ledger grouped the same way: nothing lost, nothing twice.
MISMATCHES_SQL = text(
    """
WITH ledger AS (
    SELECT (e.created_at AT TIME ZONE w.timezone)::date AS day, e.kind, count(*) AS entries, sum(e.points) AS points
    FROM loyalty_entries e JOIN workspaces w ON w.id = e.workspace_id WHERE e.workspace_id = :ws GROUP BY 1, 2
),
figures AS (
    SELECT day, kind, sum(entries) AS entries, sum(points) AS points FROM loyalty_day_figures
    WHERE workspace_id = :ws GROUP BY 1, 2 HAVING sum(entries) <> 0 OR sum(points) <> 0
)
SELECT count(*) FROM ledger l FULL JOIN figures f USING (day, kind)
WHERE l.entries IS DISTINCT FROM f.entries OR l.points IS DISTINCT FROM f.points
"""
)


async def _report(db: AsyncSession, tenant: Tenant, since: datetime, until: datetime, *, daily: bool | None) -> Any:
    return await reports.loyalty_report(db, system_caller(tenant.id), since=since, until=until, daily=daily)


def _at(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    """The ledger's time: the moment its entries are written at."""
    monkeypatch.setattr(points, "clock", SimpleNamespace(now=lambda: at))


async def _adjust(client: httpx.AsyncClient, tenant: Tenant, customer_id: str, amount: int) -> None:
    body = {"customer_id": customer_id, "points": amount, "reason": "补偿"}
    response = await client.post("/api/v1/loyalty/adjustments", json=body, headers=tenant.headers())
    assert response.status_code == 200, response.text


async def _movements(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Every kind of movement through the API and the expiry job, at moments on both sides of the
    month's end and of local midnights; returns a member."""
    _at(monkeypatch, NOW - timedelta(days=12, hours=3))
    await _program(client, tenant, pending_days=0)
    referrer = await _customer(client, tenant)
    referee = await _referred(client, tenant, await _code(client, tenant, referrer))
    await _post_order(client, tenant, _order(referee, (None, "250.00")))
    # 15:59 UTC on the 31st is 23:59 in Shanghai, the last minute of October.
    _at(monkeypatch, datetime.fromisoformat("2026-10-31T15:59:00+00:00"))
    member = await _customer(client, tenant)
    order = _order(member, ("tea", "300.00"), ("cup", "100.00"), ordered_at="2026-10-30T08:00:00Z")
    await _post_order(client, tenant, order)
    await _adjust(client, tenant, member, 30)
    await _adjust(client, tenant, member, -10)
    _at(monkeypatch, datetime.fromisoformat("2026-10-31T16:00:00+00:00"))
    cancelled = await _redeem(client, tenant, member, 100)
    assert cancelled.status_code == 201, cancelled.text
    back = await client.post(f"/api/v1/loyalty/redemptions/{cancelled.json()['id']}/cancel", headers=tenant.headers())
    assert back.status_code == 200, back.text
    assert (await _redeem(client, tenant, member, 50)).status_code == 201
    _at(monkeypatch, NOW - timedelta(days=2, hours=1))
    await _post_order(client, tenant, {**order, "status": "partially_refunded", "refunded_amount": "100.00"})
    # Points earned on an order of long ago expire at the next run of the job.
    stale = await _customer(client, tenant)
    old = (NOW - timedelta(days=400)).isoformat()
    await _post_order(client, tenant, _order(stale, (None, "40.00"), ordered_at=old))
    _at(monkeypatch, NOW - timedelta(hours=5))
    assert await points.expire_due(db) >= 1
    await assert_balances_hold(db, tenant.id)
    kinds = text("SELECT DISTINCT kind FROM loyalty_entries WHERE workspace_id = :ws")
    assert set(await db.scalars(kinds, {"ws": tenant.id})) == {
        "earn", "referral", "adjust", "redeem", "redeem_cancel", "reverse", "expire",
    }  # fmt: skip
    return member


@pytest.mark.parametrize(("timezone", "windows"), ZONES, ids=[zone for zone, _ in ZONES])
async def test_the_daily_figures_give_the_report_the_ledger_gives(
    client: httpx.AsyncClient,
    tenant: Tenant,
    db: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    timezone: str,
    windows: list[tuple[datetime, datetime]],
) -> None:
    await db.execute(text("UPDATE workspaces SET timezone = :tz WHERE id = :ws"), {"tz": timezone, "ws": tenant.id})
    member = await _movements(client, tenant, db, monkeypatch)
    members = list(await db.scalars(text("SELECT customer_id FROM loyalty_accounts WHERE workspace_id = :ws LIMIT 2"),
                                    {"ws": tenant.id}))  # fmt: skip
    await db.execute(text(SEED_SQL), {"ws": tenant.id, "members": members, "now": NOW})
    for sql in CHANGES_SQL:
        await db.execute(text(sql), {"ws": tenant.id, "to": member})
    _at(monkeypatch, NOW)
    assert await db.scalar(APPENDED_SQL, {"ws": tenant.id}) > 0
    for folded in (False, True):
        if folded:
            assert await loyalty_jobs.compact_figures(_job_sessions(db)) > 0
            assert await db.scalar(APPENDED_SQL, {"ws": tenant.id}) == 0
        for since, until in windows:
            from_ledger = await _report(db, tenant, since, until, daily=False)
            assert from_ledger == await _report(db, tenant, since, until, daily=None), (folded, since, until)
        assert await db.scalar(MISMATCHES_SQL, {"ws": tenant.id}) == 0
    whole = await _report(db, tenant, *WINDOWS[0], daily=None)
    assert [m["month"] for m in whole["months"]] == ["2026-09", "2026-10", "2026-11"]
    assert all(m[k] for m in whole["months"][1:] for k in ("earned", "reversed", "redeemed", "expired", "adjusted"))
    # A second fold finds nothing appended; the report over HTTP is the one read from the figures.
    assert await reports.compact_daily_figures(db) == 0
    response = await client.get(
        "/api/v1/reports/loyalty",
        params={"since": "2025-11-05T09:17:00Z", "until": "2026-11-05T09:17:00Z"},
        headers=tenant.headers(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["months"] == whole["months"]


async def test_a_change_of_zone_counts_the_days_again_in_the_new_zone(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await db.execute(text("UPDATE workspaces SET timezone = 'Asia/Shanghai' WHERE id = :ws"), {"ws": tenant.id})
    await _movements(client, tenant, db, monkeypatch)
    before = (await client.get("/api/v1/workspace", headers=tenant.headers())).json()
    patched = await client.patch(
        "/api/v1/workspace",
        json={"timezone": "America/New_York"},
        headers={**tenant.headers(), "If-Match": f'"{before["version"]}"'},
    )
    assert patched.status_code == 200, patched.text
    assert await db.scalar(MISMATCHES_SQL, {"ws": tenant.id}) == 0
    # 23:59 on October 31st in Shanghai is still October 31st in New York, and 00:00 in Shanghai now
    # falls in October as well: the month's figures moved with the zone.
    since, until = WINDOWS[0]
    from_ledger = await _report(db, tenant, since, until, daily=False)
    assert from_ledger == await _report(db, tenant, since, until, daily=None)
    assert from_ledger["timezone"] == "America/New_York"


async def test_a_restricted_caller_still_reads_its_customers_entries(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _movements(client, tenant, db, monkeypatch)
    _at(monkeypatch, NOW)
    params = {"since": "2025-11-05T09:17:00Z", "until": "2026-11-05T09:17:00Z"}
    admin = await client.get("/api/v1/reports/loyalty", params=params, headers=tenant.headers())
    assert admin.status_code == 200 and len(admin.json()["months"]) == 2
    # The admin's customers are none of the manager's team's: the figures, which count them, are not used.
    team = await client.get("/api/v1/reports/loyalty", params=params, headers=tenant.headers("manager"))
    assert team.status_code == 200, team.text
    assert team.json()["months"] == []


async def test_concurrent_ledger_writes_and_folds_lose_no_movement(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    await _program(live_client, live_tenant, pending_days=0)
    members = [await _customer(live_client, live_tenant) for _ in range(6)]

    async def writes(member: str) -> None:
        await _post_order(live_client, live_tenant, _order(member, ("tea", "120.00")))
        for amount in (7, -3, 11):
            await _adjust(live_client, live_tenant, member, amount)
        assert (await _redeem(live_client, live_tenant, member, 20)).status_code == 201

    async def folds() -> None:
        for _ in range(8):
            await loyalty_jobs.compact_figures(app.state.sessions)
            await asyncio.sleep(0)

    await asyncio.gather(*(writes(member) for member in members), folds(), folds())
    async with app.state.sessions() as session:
        assert await session.scalar(MISMATCHES_SQL, {"ws": live_tenant.id}) == 0
        entries = text("SELECT count(*) FROM loyalty_entries WHERE workspace_id = :ws")
        assert await session.scalar(entries, {"ws": live_tenant.id}) == 6 * 5
        await loyalty_jobs.compact_figures(app.state.sessions)
        assert await session.scalar(MISMATCHES_SQL, {"ws": live_tenant.id}) == 0
        assert await session.scalar(APPENDED_SQL, {"ws": live_tenant.id}) == 0
