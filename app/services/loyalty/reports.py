"""The loyalty report: what the program owes now, the points moved and the level moves per month,
members per level, and the referral funnel; one statement, aggregated in PostgreSQL, over the
customers the caller may see. For a caller who sees every customer the points moved come from the
daily figures the ledger's triggers keep, less the entries of the first and last days outside the
period; a caller limited to its own or its team's customers gets them from those customers' entries."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.services.customers.visibility import effective_visibility, visible_customer_ids_sql
from app.services.identity import workspaces
from app.services.loyalty import programs, referrals

_MONTH = "to_char({at} AT TIME ZONE :tz, 'YYYY-MM')"
ONE_DAY = timedelta(days=1)


# The entries of the period as (month, kind, entries, points): read one by one, or, with `daily`,
# from the figures the ledger's triggers keep (migration 0038) for every local day the period
# touches, less the entries of its first and last days that fall outside it (an index probe when the
# period ends now). The figures are written in the transactions of their entries, so one snapshot
# sees both or neither.
LIVE_ENTRIES = """
    SELECT {month} AS month, kind, 1 AS entries, points FROM loyalty_entries
    WHERE workspace_id = :ws AND created_at >= :since AND created_at < :until {scope}
"""
DAILY_ENTRIES = """
    SELECT to_char(day, 'YYYY-MM') AS month, kind, entries, points FROM loyalty_day_figures
    WHERE workspace_id = :ws AND day >= :first_day AND day < :end_day
    UNION ALL
    SELECT {month}, kind, -1, -points FROM loyalty_entries
    WHERE workspace_id = :ws AND ((created_at >= :days_from AND created_at < :since)
                                  OR (created_at >= :until AND created_at < :days_until))
"""


def days_touched(since: datetime, until: datetime, timezone: str) -> dict[str, Any]:
    """The local days [first_day, end_day) that [since, until) touches, and the instants
    [days_from, days_until) they span."""
    zone = ZoneInfo(timezone)
    first_day, last_day = since.astimezone(zone).date(), until.astimezone(zone).date()
    # A period ending at a midnight does not touch the day that starts there. Compared as instants:
    # where clocks go back over midnight a day has two, and it starts at the first.
    end_day = last_day if until.astimezone(UTC) == _midnight(last_day, timezone).astimezone(UTC) else last_day + ONE_DAY
    return {
        "first_day": first_day,
        "end_day": end_day,
        "days_from": _midnight(first_day, timezone),
        "days_until": _midnight(end_day, timezone),
    }


def _midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(timezone))


def report_sql(visible: str | None, *, daily: bool = False) -> str:
    """The report's statement; `visible` a SELECT of the customer ids the caller sees, None for all.
    `daily` reads the daily figures: those count every member of the workspace, so only with
    `visible` None."""

    def only(expression: str) -> str:
        return f"AND {expression} IN ({visible})" if visible else ""

    month = _MONTH.format(at="created_at")
    entries = (
        DAILY_ENTRIES.format(month=month) if daily else LIVE_ENTRIES.format(month=month, scope=only("customer_id"))
    )
    return f"""
WITH liability AS (
    SELECT count(*) AS members, coalesce(sum(balance), 0) AS balance FROM loyalty_accounts
    WHERE workspace_id = :ws {only("customer_id")}
),
lots AS (
    SELECT coalesce(sum(remaining) FILTER (WHERE available_at <= :now AND (expires_at IS NULL OR expires_at > :now)), 0)
               AS available,
           coalesce(sum(remaining) FILTER (WHERE available_at > :now AND (expires_at IS NULL OR expires_at > :now)), 0)
               AS pending,
           coalesce(sum(remaining) FILTER (WHERE expires_at <= :now), 0) AS expired_unwritten
    FROM loyalty_lots WHERE workspace_id = :ws AND remaining > 0 {only("customer_id")}
),
moved AS (
    SELECT month,
           coalesce(sum(points) FILTER (WHERE kind IN ('earn', 'referral')), 0) AS earned,
           -coalesce(sum(points) FILTER (WHERE kind = 'reverse'), 0) AS reversed,
           -coalesce(sum(points) FILTER (WHERE kind IN ('redeem', 'redeem_cancel')), 0) AS redeemed,
           -coalesce(sum(points) FILTER (WHERE kind = 'expire'), 0) AS expired,
           coalesce(sum(points) FILTER (WHERE kind = 'adjust'), 0) AS adjusted
    FROM ({entries}) m
    -- A month is listed when it holds an entry, whatever the entries add up to.
    GROUP BY month HAVING sum(entries) > 0
),
ranks AS (
    SELECT x ->> 'code' AS code, n AS rank FROM jsonb_array_elements(CAST(:levels AS jsonb)) WITH ORDINALITY AS t(x, n)
),
level_moves AS (
    SELECT {_MONTH.format(at="e.occurred_at")} AS month,
           count(*) FILTER (WHERE coalesce(t.rank, 0) > coalesce(f.rank, 0)) AS level_ups,
           count(*) FILTER (WHERE coalesce(t.rank, 0) < coalesce(f.rank, 0)) AS level_downs
    FROM outbox_events e
    LEFT JOIN ranks f ON f.code = e.data ->> 'from_level'
    LEFT JOIN ranks t ON t.code = e.data ->> 'to_level'
    WHERE e.workspace_id = :ws AND e.type = 'loyalty.level_changed' AND e.occurred_at >= :since
      AND e.occurred_at < :until {only("CAST(e.data ->> 'customer_id' AS uuid)")}
    GROUP BY 1
),
months AS (
    SELECT month, coalesce(m.earned, 0) AS earned, coalesce(m.reversed, 0) AS reversed,
           coalesce(m.redeemed, 0) AS redeemed, coalesce(m.expired, 0) AS expired, coalesce(m.adjusted, 0) AS adjusted,
           coalesce(l.level_ups, 0) AS level_ups, coalesce(l.level_downs, 0) AS level_downs
    FROM moved m FULL JOIN level_moves l USING (month)
),
per_level AS (
    SELECT a.level, count(*) AS members, min(r.rank) AS rank FROM loyalty_accounts a
    LEFT JOIN ranks r ON r.code = a.level
    WHERE a.workspace_id = :ws {only("a.customer_id")}
    GROUP BY a.level
),
picked AS (
    SELECT status, reason, referrer_points, referee_points FROM referrals
    WHERE workspace_id = :ws AND created_at >= :since AND created_at < :until {only("referee_id")}
),
funnel AS (
    SELECT count(*) AS referred, count(*) FILTER (WHERE status IN ('qualified', 'rewarded')) AS qualified,
           count(*) FILTER (WHERE status = 'rewarded') AS rewarded,
           (SELECT coalesce(jsonb_object_agg(reason, n), '{{}}')
            FROM (SELECT reason, count(*) AS n FROM picked WHERE status = 'refused' GROUP BY reason) x) AS refused,
           coalesce(sum(referrer_points), 0) AS referrer_points, coalesce(sum(referee_points), 0) AS referee_points
    FROM picked
)
SELECT (SELECT to_jsonb(liability) || to_jsonb(lots) FROM liability, lots),
       (SELECT coalesce(jsonb_agg(to_jsonb(months) ORDER BY month), '[]') FROM months),
       (SELECT coalesce(jsonb_agg(jsonb_build_object('level', level, 'members', members)
                                  ORDER BY rank NULLS LAST, level NULLS LAST), '[]') FROM per_level),
       (SELECT to_jsonb(funnel) FROM funnel)
"""


REPORT_DAILY = text(report_sql(None, daily=True))


async def loyalty_report(
    session: AsyncSession, ctx: Caller, *, since: datetime, until: datetime, daily: bool | None = None
) -> dict[str, Any]:
    """The report for [since, until) in the workspace's months; the liability and levels as of now.
    `daily` None: from the daily figures when the caller sees every customer, the only caller they
    may serve; False reads every entry (the reference the figures are tested against)."""
    timezone = await workspaces.timezone(session, ctx.workspace_id)
    levels = (await programs.document(session, ctx, programs.LEVELS)).document["levels"]
    params: dict[str, Any] = {
        "ws": ctx.workspace_id,
        "now": clock.now(),
        "since": since,
        "until": until,
        "tz": timezone,
        "levels": orjson.dumps(levels).decode(),
    }
    visible: str | None = None
    if effective_visibility(ctx) != "all":
        visible, scope = visible_customer_ids_sql(ctx)
        params |= scope
    if daily is None:
        daily = visible is None
    if daily and visible is None:
        statement = REPORT_DAILY
        params |= days_touched(since, until, timezone)
    else:
        statement = text(report_sql(visible))
    liability, months, per_level, funnel = (await session.execute(statement, params)).one()
    funnel["refused"] = {reason: int(funnel["refused"].get(reason, 0)) for reason in referrals.REASONS}
    return {
        "since": since,
        "until": until,
        "timezone": timezone,
        "liability": {
            key: int(liability[key]) for key in ("members", "balance", "available", "pending", "expired_unwritten")
        },
        "months": months,
        "levels": per_level,
        "referrals": funnel,
    }


async def compact_daily_figures(session: AsyncSession) -> int:
    """Folds the rows the ledger's triggers appended into one per key; returns the rows written."""
    return int(await session.scalar(text("SELECT guanxi_compact_loyalty_figures()")) or 0)
