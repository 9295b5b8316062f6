"""The service report's daily figures: kept by the tickets' triggers, folded by the worker, and equal to
the same report computed from the tickets themselves."""

import statistics
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import system_caller
from app.services.service_desk import service_reports
from tests.factories import Tenant, customer_body

# The seeded fortnight spans the end of October.
NOW = datetime.fromisoformat("2026-11-05T09:17:00+00:00")

# 400 tickets over the last 14 days: types, channels, categories, statuses, response and resolution
# times, breaches and CSAT scores all vary with the ticket's number.
SEED_SQL = """
INSERT INTO tickets (workspace_id, id, number, customer_id, type, channel, subject, priority, status, category_id,
                     first_responded_at, resolved_at, first_response_breached, resolution_breached, csat_score,
                     created_at, updated_at)
SELECT :ws, gen_random_uuid(), g, (CAST(:customers AS uuid[]))[1 + g % 3],
       (ARRAY['complaint', 'inquiry', 'suggestion'])[1 + g % 3], (ARRAY['phone', 'email'])[1 + g % 2], 'subject',
       'normal', (ARRAY['new', 'in_progress', 'resolved', 'closed', 'closed'])[1 + g % 5],
       CASE WHEN g % 4 = 0 THEN NULL ELSE CAST(:category AS uuid) END,
       CASE WHEN g % 5 > 0 THEN at + (g * 37 % 900) * interval '1 second' * (1 + g % 7) END,
       CASE WHEN g % 5 >= 2 THEN at + (g * 53 % 5000) * interval '1 minute' END,
       g % 11 = 0, g % 13 = 0,
       CASE WHEN g % 5 >= 2 AND g % 3 = 0 THEN CAST(1 + g % 5 AS smallint) END,
       at, at
FROM generate_series(1, 400) g, LATERAL (SELECT CAST(:now AS timestamptz) - g * interval '50 minutes' AS at) a
"""

CHANGES_SQL = [
    # Solved later: status, resolution time, breach and score change; a reopened one loses its score.
    "UPDATE tickets SET status = 'closed', resolved_at = created_at + interval '3 hours', csat_score = 4 "
    "WHERE workspace_id = :ws AND number % 17 = 1",
    "UPDATE tickets SET first_response_breached = true WHERE workspace_id = :ws AND number % 19 = 2",
    "UPDATE tickets SET status = 'in_progress', csat_score = NULL WHERE workspace_id = :ws AND number % 23 = 3",
    "UPDATE tickets SET subject = 'renamed' WHERE workspace_id = :ws AND number % 2 = 0",
    "DELETE FROM ticket_events WHERE workspace_id = :ws AND ticket_id IN "
    "(SELECT id FROM tickets WHERE workspace_id = :ws AND number % 29 = 4)",
    "DELETE FROM tickets WHERE workspace_id = :ws AND number % 29 = 4",
]

WINDOWS = [
    (NOW - timedelta(days=30), NOW),
    # Both ends inside a day, whole days between.
    (NOW - timedelta(days=5, hours=7, minutes=11), NOW - timedelta(days=1, hours=3)),
    # Midnight in Asia/Shanghai at both ends.
    (datetime.fromisoformat("2026-10-29T16:00:00+00:00"), datetime.fromisoformat("2026-11-02T16:00:00+00:00")),
    # Shorter than a day: no whole day at all.
    (NOW - timedelta(hours=10), NOW - timedelta(hours=2)),
]
# On 2026-10-25 the Azores' clocks go back from 01:00 to 00:00: local midnight comes at 00:00 and
# again at 01:00 UTC, and only from the first is the day whole.
AZORES_WINDOWS = [
    *WINDOWS,
    (datetime.fromisoformat("2026-10-25T00:00:00+00:00"), datetime.fromisoformat("2026-10-27T00:30:00+00:00")),
    (datetime.fromisoformat("2026-10-25T01:00:00+00:00"), datetime.fromisoformat("2026-10-26T07:00:00+00:00")),
]
ZONES = [("Asia/Shanghai", WINDOWS), ("Atlantic/Azores", AZORES_WINDOWS)]

EXACT_MEDIANS_SQL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_responded_at - created_at) / 60)
           FILTER (WHERE first_responded_at IS NOT NULL),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at) / 60)
           FILTER (WHERE resolved_at IS NOT NULL)
FROM tickets WHERE workspace_id = :ws AND created_at >= :since AND created_at < :until
"""


async def _seed(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, timezone: str = "Asia/Shanghai") -> None:
    await db.execute(text("UPDATE workspaces SET timezone = :tz WHERE id = :ws"), {"tz": timezone, "ws": tenant.id})
    customers = []
    for _ in range(3):
        created = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
        customers.append(created.json()["id"])
    category = await client.post("/api/v1/ticket-categories", json={"name": "物流"}, headers=tenant.headers())
    assert category.status_code == 201, category.text
    params = {"ws": tenant.id, "customers": customers, "category": category.json()["id"], "now": NOW}
    await db.execute(text(SEED_SQL), params)
    for sql in CHANGES_SQL:
        await db.execute(text(sql), {"ws": tenant.id})


async def _report(
    db: AsyncSession, tenant: Tenant, since: datetime, until: datetime, *, daily: bool, timezone: str = "Asia/Shanghai"
) -> dict[str, Any]:
    return await service_reports.service_report(
        db, system_caller(tenant.id), since=since, until=until, timezone=timezone, daily=daily
    )


async def _appended(db: AsyncSession, tenant: Tenant) -> int:
    sql = (
        "SELECT (SELECT count(*) FROM ticket_day_counts WHERE workspace_id = :ws AND NOT compacted)"
        " + (SELECT count(*) FROM ticket_day_latency WHERE workspace_id = :ws AND NOT compacted)"
    )
    return int(await db.scalar(text(sql), {"ws": tenant.id}) or 0)


@pytest.mark.parametrize(("timezone", "windows"), ZONES, ids=[zone for zone, _ in ZONES])
async def test_the_daily_figures_give_the_report_the_tickets_give(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, timezone: str, windows: list[tuple[datetime, datetime]]
) -> None:
    await _seed(client, tenant, db, timezone)
    assert await _appended(db, tenant) > 0
    for since, until in windows:
        from_tickets = await _report(db, tenant, since, until, daily=False, timezone=timezone)
        assert sum(v["tickets"] for v in from_tickets["volume"]) > 0
        assert from_tickets == await _report(db, tenant, since, until, daily=True, timezone=timezone), (since, until)
        # The medians, read off the buckets, against the exact ones.
        exact = (await db.execute(text(EXACT_MEDIANS_SQL), {"ws": tenant.id, "since": since, "until": until})).one()
        for got, want in zip(
            (from_tickets["median_first_response_minutes"], from_tickets["median_resolution_minutes"]),
            exact,
            strict=True,
        ):
            assert (got is None) == (want is None), (since, until)
            if want is not None:
                assert abs(got - want) <= 0.01 * want + 0.05, (since, until, got, want)

    assert await service_reports.compact_daily_figures(db) > 0
    assert await _appended(db, tenant) == 0
    one_row_per_key = await db.scalar(
        text(
            "SELECT count(*) = count(DISTINCT (day, type, channel, category_id)) FROM ticket_day_counts "
            "WHERE workspace_id = :ws"
        ),
        {"ws": tenant.id},
    )
    assert one_row_per_key
    for since, until in windows:
        assert await _report(db, tenant, since, until, daily=False, timezone=timezone) == await _report(
            db, tenant, since, until, daily=True, timezone=timezone
        )
    assert await service_reports.compact_daily_figures(db) == 0


async def test_csat_by_month_is_the_rated_tickets_of_each_local_month(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _seed(client, tenant, db)
    since = NOW - timedelta(days=30)
    expected = (
        await db.execute(
            text(
                "SELECT to_char(created_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM'), count(*), "
                "round(avg(csat_score), 2) FROM tickets WHERE workspace_id = :ws AND csat_score IS NOT NULL "
                "AND created_at >= :since AND created_at < :until GROUP BY 1 ORDER BY 1"
            ),
            {"ws": tenant.id, "since": since, "until": NOW},
        )
    ).all()
    report = await _report(db, tenant, since, NOW, daily=True)
    assert [month for month, _, _ in expected] == ["2026-10", "2026-11"]
    assert report["csat_by_month"] == [
        {"month": month, "responses": n, "csat_average": float(average)} for month, n, average in expected
    ]


async def test_a_window_that_ends_before_it_starts_is_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    got = await client.get(
        "/api/v1/reports/service",
        params={"since": "2026-11-20T00:00:00Z", "until": "2026-11-20T00:00:00Z"},
        headers=tenant.headers(),
    )
    assert got.status_code == 422
    assert got.headers["content-type"] == "application/problem+json"
    assert got.json()["errors"][0]["loc"] == ["query", "until"]


async def test_a_change_that_touches_no_figure_appends_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _seed(client, tenant, db)
    await service_reports.compact_daily_figures(db)
    await db.execute(
        text("UPDATE tickets SET subject = 'again', priority = 'high' WHERE workspace_id = :ws"), {"ws": tenant.id}
    )
    assert await _appended(db, tenant) == 0


async def test_deleting_every_ticket_leaves_figures_of_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _seed(client, tenant, db)
    await db.execute(text("DELETE FROM ticket_events WHERE workspace_id = :ws"), {"ws": tenant.id})
    await db.execute(text("DELETE FROM tickets WHERE workspace_id = :ws"), {"ws": tenant.id})
    report = await _report(db, tenant, NOW - timedelta(days=30), NOW, daily=True)
    assert report["volume"] == [] and report["median_first_response_minutes"] is None
    assert report["sla_attainment_pct"] is None and report["csat_average"] is None
    await service_reports.compact_daily_figures(db)
    left = await db.scalar(text("SELECT count(*) FROM ticket_day_counts WHERE workspace_id = :ws"), {"ws": tenant.id})
    assert left == 0


async def test_a_caller_limited_to_some_customers_gets_their_tickets_only(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    mine = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers("sales"))).json()
    theirs = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers("sales_west"))).json()
    for customer, n in ((mine, 2), (theirs, 3)):
        for _ in range(n):
            body = {"customer_id": customer["id"], "type": "inquiry", "channel": "email", "subject": "询问"}
            assert (await client.post("/api/v1/tickets", json=body, headers=tenant.headers())).status_code == 201
    # The manager sees its team's customers (the East salesperson's), not the West one's.
    manager = (await client.get("/api/v1/reports/service", headers=tenant.headers("manager"))).json()
    admin = (await client.get("/api/v1/reports/service", headers=tenant.headers())).json()
    assert sum(v["tickets"] for v in manager["volume"]) == 2
    assert sum(v["tickets"] for v in admin["volume"]) == 5


@pytest.mark.parametrize(
    "seconds",
    [
        [0.0, 30.0, 61.0],
        [5.0, 125.0, 3_600.0, 7_300.0],
        [float(s) for s in range(1, 5_000, 37)],
        [86_400.0 * 3.5, 86_400.0 * 9, 600.0, 601.0, 602.0, 10_000.0],
    ],
)
async def test_a_median_read_off_the_buckets_is_within_one_percent(db: AsyncSession, seconds: list[float]) -> None:
    buckets = (
        await db.execute(
            text("SELECT guanxi_latency_bucket(s), count(*) FROM unnest(CAST(:s AS float8[])) s GROUP BY 1 ORDER BY 1"),
            {"s": seconds},
        )
    ).all()
    approximate = service_reports.median_minutes([[bucket, n] for bucket, n in buckets])
    exact = statistics.median(seconds) / 60
    assert approximate is not None
    assert abs(approximate - exact) <= 0.01 * exact + 1 / 60


def test_the_whole_days_of_a_window_are_local_days() -> None:
    shanghai = "Asia/Shanghai"
    until = datetime.fromisoformat("2026-11-20T09:17:00+00:00")  # 17:17 in Shanghai
    # 2026-11-14 16:00 UTC is midnight of the 15th in Shanghai.
    assert service_reports.whole_days(datetime.fromisoformat("2026-11-14T16:00:00+00:00"), until, shanghai) == (
        date(2026, 11, 15),
        date(2026, 11, 20),
    )
    assert service_reports.whole_days(datetime.fromisoformat("2026-11-14T16:00:01+00:00"), until, shanghai) == (
        date(2026, 11, 16),
        date(2026, 11, 20),
    )
    first, end = service_reports.whole_days(until - timedelta(hours=3), until, shanghai)
    assert first == end
    # Midnight twice in the Azores on 2026-10-25 (00:00 and 01:00 UTC): whole from the first only.
    azores_until = datetime.fromisoformat("2026-10-27T12:00:00+00:00")
    assert service_reports.whole_days(
        datetime.fromisoformat("2026-10-25T00:00:00+00:00"), azores_until, "Atlantic/Azores"
    ) == (date(2026, 10, 25), date(2026, 10, 27))
    assert service_reports.whole_days(
        datetime.fromisoformat("2026-10-25T01:00:00+00:00"), azores_until, "Atlantic/Azores"
    ) == (date(2026, 10, 26), date(2026, 10, 27))
