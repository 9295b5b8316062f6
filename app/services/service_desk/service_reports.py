"""The service report: ticket volume, response and resolution times, SLA attainment, backlog,
CSAT and NPS. For a caller who sees every customer, whole days come from the daily figures the
tickets' triggers keep (a 30-day window of 500,000 tickets is read in milliseconds); a caller limited to
its own or its team's customers gets the same figures computed from those customers' tickets."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.services.customers.visibility import effective_visibility, visible_customer_ids_sql
from app.services.identity import workspaces

# The width of the latency buckets, as guanxi_latency_bucket() (migration 0017) cuts them.
LATENCY_GAMMA = 1.01 / 0.99

# The tickets a report reads live: every ticket of the period for a caller limited to its own or its
# team's customers; for a caller who sees all, only the partial days at the ends of the period (whole
# days come from the daily figures the tickets' triggers keep, migration 0017). Both go through
# guanxi_ticket_stat(), the function the triggers use.
LIVE_TICKETS = """
    SELECT t.type, t.channel, t.category_id, s.*
    FROM tickets t
    CROSS JOIN LATERAL guanxi_ticket_stat(t.created_at, t.status, t.first_response_breached, t.resolution_breached,
                                          t.csat_score, t.first_responded_at, t.resolved_at, :tz) s
    WHERE t.workspace_id = :ws {scope}
      AND ((t.created_at >= :since AND t.created_at < :days_from)
           OR (t.created_at >= :days_until AND t.created_at < :until))
"""

DAILY_COUNTS = """
    SELECT day, type, channel, category_id, tickets, sla_judged, sla_met, csat_sum, csat_count
    FROM ticket_day_counts WHERE workspace_id = :ws AND day >= :first_day AND day < :end_day
    UNION ALL
"""

DAILY_LATENCY = """
    SELECT metric, bucket, tickets
    FROM ticket_day_latency WHERE workspace_id = :ws AND day >= :first_day AND day < :end_day
    UNION ALL
"""

REPORT_SQL = """
WITH live AS MATERIALIZED ({live}),
counts (day, type, channel, category_id, tickets, sla_judged, sla_met, csat_sum, csat_count) AS MATERIALIZED (
    {daily_counts}
    SELECT day, type, channel, category_id, 1, judged, met, csat, rated FROM live
),
latency (metric, bucket, tickets) AS (
    {daily_latency}
    SELECT m.metric, m.bucket, 1 FROM live
    CROSS JOIN LATERAL (VALUES ('first_response', live.first_response_bucket),
                               ('resolution', live.resolution_bucket)) m(metric, bucket)
    WHERE m.bucket IS NOT NULL
),
-- CSAT by tier and by segment reads the rated tickets from their own index.
rated AS NOT MATERIALIZED (
    SELECT t.workspace_id, t.customer_id, t.csat_score, t.tier FROM tickets t
    WHERE t.workspace_id = :ws AND t.created_at >= :since AND t.created_at < :until AND t.csat_score IS NOT NULL
      {scope}
),
answers AS NOT MATERIALIZED (
    SELECT r.workspace_id, r.customer_id, r.score, r.answered_at FROM survey_responses r
    WHERE r.workspace_id = :ws AND r.answered_at >= :since AND r.answered_at < :until {answer_scope}
)
SELECT
    volume.*,
    (SELECT coalesce(jsonb_object_agg(metric, buckets), '{{}}'::jsonb)
     FROM (SELECT metric, jsonb_agg(jsonb_build_array(bucket, n) ORDER BY bucket) AS buckets
           FROM (SELECT metric, bucket, sum(tickets) AS n FROM latency GROUP BY 1, 2 HAVING sum(tickets) > 0) b
           GROUP BY metric) h) AS latency,
    (SELECT round(100.0 * sum(sla_met) / nullif(sum(sla_judged), 0), 1) FROM counts) AS sla_attainment_pct,
    (SELECT round(sum(csat_sum)::numeric / nullif(sum(csat_count), 0), 2) FROM counts) AS csat_average,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('month', month, 'responses', n, 'csat_average', csat)
                               ORDER BY month), '[]'::jsonb)
     FROM (SELECT to_char(day, 'YYYY-MM') AS month, sum(csat_count) AS n,
                  round(sum(csat_sum)::numeric / sum(csat_count), 2) AS csat
           FROM counts GROUP BY 1 HAVING sum(csat_count) > 0) c) AS csat_by_month,
    (SELECT jsonb_build_object(
                'under_1_day', count(*) FILTER (WHERE created_at > :day_before),
                '1_to_3_days', count(*) FILTER (WHERE created_at <= :day_before AND created_at > :days_3_before),
                '3_to_7_days', count(*) FILTER (WHERE created_at <= :days_3_before AND created_at > :days_7_before),
                'over_7_days', count(*) FILTER (WHERE created_at <= :days_7_before))
     FROM tickets t
     WHERE t.workspace_id = :ws AND t.status IN ('new', 'assigned', 'in_progress', 'waiting_on_customer')
       {scope}) AS backlog_by_age,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('month', month, 'responses', n, 'nps', nps)), '[]'::jsonb)
     FROM (SELECT to_char(answered_at AT TIME ZONE :tz, 'YYYY-MM') AS month, count(*) AS n,
                  round(100.0 * (count(*) FILTER (WHERE score >= 9) - count(*) FILTER (WHERE score <= 6))
                        / count(*), 1) AS nps
           FROM answers GROUP BY 1 ORDER BY 1) n) AS nps_by_month,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('tier', tier, 'csat_average', csat, 'nps', nps) ORDER BY tier),
                     '[]'::jsonb)
     FROM (SELECT coalesce(cs.tier, ns.tier) AS tier, cs.csat, ns.nps
           -- A score counts under the tier its ticket was opened with (the tier that chose its SLA).
           FROM (SELECT coalesce(p.tier, 'none') AS tier, round(avg(p.csat_score), 2) AS csat
                 FROM rated p GROUP BY 1) cs
           FULL JOIN (
                 SELECT coalesce(v.tier, 'none') AS tier,
                        round(100.0 * (count(*) FILTER (WHERE r.score >= 9) - count(*) FILTER (WHERE r.score <= 6))
                              / count(*), 1) AS nps
                 FROM answers r
                 LEFT JOIN customer_values v ON v.workspace_id = r.workspace_id AND v.customer_id = r.customer_id
                 GROUP BY 1) ns ON ns.tier = cs.tier) t) AS by_tier,
    -- Scores and answers in one stream, joined once with the memberships of every segment: not two scans
    -- per segment, nor one join per source.
    (SELECT coalesce(jsonb_agg(jsonb_build_object('segment_id', s.id, 'name', s.name, 'csat_average', x.csat,
                                                  'nps', x.nps) ORDER BY s.name), '[]'::jsonb)
     FROM (SELECT id, name FROM segments WHERE workspace_id = :ws AND member_count > 0 ORDER BY name LIMIT 100) s
     JOIN (
           SELECT m.segment_id,
                  round(sum(u.scored)::numeric / nullif(sum(u.rated), 0), 2) AS csat,
                  round(100.0 * (sum(u.promoters) - sum(u.detractors)) / nullif(sum(u.answered), 0), 1) AS nps
           FROM (SELECT customer_id, csat_score AS scored, 1 AS rated, 0 AS promoters, 0 AS detractors, 0 AS answered
                 FROM rated
                 UNION ALL
                 SELECT customer_id, 0, 0, (score >= 9)::integer, (score <= 6)::integer, 1 FROM answers) u
           JOIN segment_members m ON m.workspace_id = :ws AND m.customer_id = u.customer_id
           GROUP BY m.segment_id) x ON x.segment_id = s.id
     WHERE x.csat IS NOT NULL OR x.nps IS NOT NULL) AS by_segment
-- Columns, not an object or a record per row: a 30-day window holds ten thousand or more (day, type,
-- channel, category) rows, and building and sending those took most of the statement's time. One
-- aggregate over one sorted input, so the five arrays line up.
FROM (SELECT array_agg(to_char(day, 'YYYY-MM-DD') ORDER BY day, type, channel, category_id) AS days,
             array_agg(type ORDER BY day, type, channel, category_id) AS types,
             array_agg(channel ORDER BY day, type, channel, category_id) AS channels,
             array_agg(category_id ORDER BY day, type, channel, category_id) AS category_ids,
             array_agg(n ORDER BY day, type, channel, category_id) AS tickets
      FROM (SELECT day, type COLLATE "C" AS type, channel COLLATE "C" AS channel, category_id, sum(tickets) AS n
            FROM counts GROUP BY 1, 2, 3, 4 HAVING sum(tickets) > 0) v) volume
"""


def whole_days(since: datetime, until: datetime, timezone: str) -> tuple[date, date]:
    """The local days wholly inside [since, until): [first, end). Empty (first == end) when none is."""
    zone = ZoneInfo(timezone)
    start, stop = since.astimezone(zone), until.astimezone(zone)
    # Compared as instants: where clocks go back over midnight a day has two, and only from the
    # first is the day whole.
    at_midnight = since.astimezone(UTC) == _midnight(start.date(), timezone).astimezone(UTC)
    first = start.date() if at_midnight else start.date() + timedelta(days=1)
    return first, max(first, stop.date())


def _midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(timezone))


def report_statement(
    ctx: Caller, *, since: datetime, until: datetime, timezone: str, daily: bool
) -> tuple[TextClause, dict[str, Any]]:
    """The report as one statement. `daily` reads whole days from the daily figures; those count every
    ticket of the workspace, so only a caller who sees every customer may have them."""
    visible, scope = visible_customer_ids_sql(ctx)
    params: dict[str, Any] = {"ws": ctx.workspace_id, "since": since, "until": until, "tz": timezone, **scope}
    # The backlog's age limits as values: computed per open ticket they cost more than the counting.
    params |= {
        "day_before": until - timedelta(days=1),
        "days_3_before": until - timedelta(days=3),
        "days_7_before": until - timedelta(days=7),
    }
    if daily:
        first_day, end_day = whole_days(since, until, timezone)
        days_from, days_until = (
            (_midnight(first_day, timezone), _midnight(end_day, timezone)) if first_day < end_day else (until, until)
        )
        params |= {"first_day": first_day, "end_day": end_day, "days_from": days_from, "days_until": days_until}
        ticket_scope = answer_scope = ""
    else:
        params |= {"days_from": until, "days_until": until}
        ticket_scope = f"AND t.customer_id IN ({visible})"
        answer_scope = f"AND r.customer_id IN ({visible})"
    sql = REPORT_SQL.format(
        live=LIVE_TICKETS.format(scope=ticket_scope),
        daily_counts=DAILY_COUNTS if daily else "",
        daily_latency=DAILY_LATENCY if daily else "",
        scope=ticket_scope,
        answer_scope=answer_scope,
    )
    return text(sql), params


def median_minutes(histogram: list[list[int]] | None) -> float | None:
    """The median of a histogram of latency buckets ([bucket, tickets] pairs, buckets ascending), read
    as percentile_cont(0.5) would read the values: the mean of the middle one or two, each taken at
    its bucket's centre (within 1 % of the value, see migration 0017)."""
    if not histogram:
        return None
    total = sum(n for _, n in histogram)
    middle: list[float] = []
    for rank in ((total - 1) // 2, total // 2):
        seen = 0
        for bucket, n in histogram:
            seen += n
            if seen > rank:
                middle.append(_bucket_seconds(bucket))
                break
    return sum(middle) / len(middle) / 60


def _bucket_seconds(bucket: int) -> float:
    return 0.0 if bucket <= 0 else 2 * LATENCY_GAMMA**bucket / (LATENCY_GAMMA + 1)


async def workspace_report(session: AsyncSession, ctx: Caller, *, since: datetime, until: datetime) -> dict[str, Any]:
    """The service report with the workspace's own days and months."""
    timezone = await workspaces.timezone(session, ctx.workspace_id)
    return await service_report(session, ctx, since=since, until=until, timezone=timezone)


async def service_report(
    session: AsyncSession, ctx: Caller, *, since: datetime, until: datetime, timezone: str, daily: bool | None = None
) -> dict[str, Any]:
    """`daily` None: from the daily figures when the caller sees every customer. Runs in the
    session's transaction (the planner setting it makes lasts until its end)."""
    if daily is None:
        daily = effective_visibility(ctx) == "all"
    statement, params = report_statement(ctx, since=since, until=until, timezone=timezone, daily=daily)
    # Planned for the values at hand on every run. After a few runs of the prepared statement the
    # server may switch to a generic plan, which guesses each date range at a few hundred rows and then
    # joins tens of thousands by index lookups, slower than the custom plan on a large workspace.
    await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    row = (await session.execute(statement, params)).one()
    (
        days,
        types,
        channels,
        category_ids,
        tickets,
        latency,
        attainment,
        csat,
        csat_by_month,
        backlog,
        nps,
        by_tier,
        by_segment,
    ) = row
    first_response, resolution = (
        median_minutes(latency.get("first_response")),
        median_minutes(latency.get("resolution")),
    )
    return {
        "since": since,
        "until": until,
        "volume": [
            {"day": day, "type": type_, "channel": channel, "category_id": category_id, "tickets": n}
            for day, type_, channel, category_id, n in zip(
                days or (), types or (), channels or (), category_ids or (), tickets or (), strict=True
            )
        ],
        "median_first_response_minutes": round(first_response, 1) if first_response is not None else None,
        "median_resolution_minutes": round(resolution, 1) if resolution is not None else None,
        "sla_attainment_pct": float(attainment) if attainment is not None else None,
        "backlog_by_age": backlog,
        "csat_average": float(csat) if csat is not None else None,
        "csat_by_month": csat_by_month,
        "nps_by_month": nps,
        "by_tier": by_tier,
        "by_segment": by_segment,
    }


async def compact_daily_figures(session: AsyncSession) -> int:
    """Folds the rows the tickets' triggers appended into one per key; returns the rows written."""
    return int(await session.scalar(text("SELECT guanxi_compact_ticket_stats()")) or 0)
