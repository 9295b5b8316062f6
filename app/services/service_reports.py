"""The service report: ticket volume, response and resolution times, SLA attainment, backlog,
CSAT and NPS — aggregated in SQL over the tickets of the customers the caller may see."""

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.access import Caller
from app.services.visibility import visible_customer_ids_sql

REPORT_SQL = """
WITH scoped AS NOT MATERIALIZED (
    -- Inlined where it is read, so the period and the backlog each take their own index instead of
    -- every ticket of the workspace being copied into one work table first.
    -- The columns the report reads: the period is kept in a work table, and subjects and
    -- descriptions would only make it larger.
    SELECT t.workspace_id, t.customer_id, t.created_at, t.type, t.channel, t.category_id, t.status,
           t.first_responded_at, t.resolved_at, t.first_response_breached, t.resolution_breached, t.csat_score
    FROM tickets t WHERE t.workspace_id = :ws AND t.customer_id IN ({visible})
),
period AS (SELECT * FROM scoped WHERE created_at >= :since AND created_at < :until)
SELECT
    (SELECT coalesce(jsonb_agg(jsonb_build_object('day', day, 'type', type, 'channel', channel,
                                                  'category_id', category_id, 'tickets', n)), '[]'::jsonb)
     FROM (SELECT to_char(day, 'YYYY-MM-DD') AS day, type, channel, category_id, n
           FROM (SELECT date_trunc('day', created_at AT TIME ZONE :tz) AS day, type, channel, category_id,
                        count(*) AS n
                 FROM period GROUP BY 1, 2, 3, 4) by_day
           ORDER BY 1, 2, 3) v) AS volume,
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_responded_at - created_at) / 60)
     FROM period WHERE first_responded_at IS NOT NULL) AS median_first_response_minutes,
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at) / 60)
     FROM period WHERE resolved_at IS NOT NULL) AS median_resolution_minutes,
    (SELECT round(100.0 * count(*) FILTER (WHERE NOT first_response_breached AND NOT resolution_breached)
                  / nullif(count(*), 0), 1)
     FROM period WHERE status IN ('resolved', 'closed') OR first_response_breached OR resolution_breached)
        AS sla_attainment_pct,
    (SELECT jsonb_build_object(
                'under_1_day', count(*) FILTER (WHERE created_at > :until - interval '1 day'),
                '1_to_3_days', count(*) FILTER (WHERE created_at <= :until - interval '1 day'
                                                 AND created_at > :until - interval '3 days'),
                '3_to_7_days', count(*) FILTER (WHERE created_at <= :until - interval '3 days'
                                                 AND created_at > :until - interval '7 days'),
                'over_7_days', count(*) FILTER (WHERE created_at <= :until - interval '7 days'))
     FROM scoped WHERE status IN ('new', 'assigned', 'in_progress', 'waiting_on_customer')) AS backlog_by_age,
    (SELECT round(avg(csat_score), 2) FROM period WHERE csat_score IS NOT NULL) AS csat_average,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('month', month, 'responses', n, 'nps', nps)), '[]'::jsonb)
     FROM (SELECT to_char(date_trunc('month', answered_at), 'YYYY-MM') AS month, count(*) AS n,
                  round(100.0 * (count(*) FILTER (WHERE score >= 9) - count(*) FILTER (WHERE score <= 6))
                        / count(*), 1) AS nps
           FROM survey_responses
           WHERE workspace_id = :ws AND answered_at >= :since AND answered_at < :until
             AND customer_id IN ({visible})
           GROUP BY 1 ORDER BY 1) n) AS nps_by_month,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('tier', tier, 'csat_average', csat, 'nps', nps) ORDER BY tier),
                     '[]'::jsonb)
     FROM (SELECT coalesce(cs.tier, ns.tier) AS tier, cs.csat, ns.nps
           FROM (SELECT coalesce(v.tier, 'none') AS tier, round(avg(p.csat_score), 2) AS csat
                 FROM period p
                 LEFT JOIN customer_values v ON v.workspace_id = p.workspace_id AND v.customer_id = p.customer_id
                 WHERE p.csat_score IS NOT NULL GROUP BY 1) cs
           FULL JOIN (
                 SELECT coalesce(v.tier, 'none') AS tier,
                        round(100.0 * (count(*) FILTER (WHERE r.score >= 9) - count(*) FILTER (WHERE r.score <= 6))
                              / count(*), 1) AS nps
                 FROM survey_responses r
                 LEFT JOIN customer_values v ON v.workspace_id = r.workspace_id AND v.customer_id = r.customer_id
                 WHERE r.workspace_id = :ws AND r.answered_at >= :since AND r.answered_at < :until
                   AND r.customer_id IN ({visible})
                 GROUP BY 1) ns ON ns.tier = cs.tier) t) AS by_tier,
    -- Every segment in one pass over the period and one over the answers, not a pair of scans per segment.
    (SELECT coalesce(jsonb_agg(jsonb_build_object('segment_id', s.id, 'name', s.name, 'csat_average', cs.csat,
                                                  'nps', ns.nps) ORDER BY s.name), '[]'::jsonb)
     FROM (SELECT id, name FROM segments WHERE workspace_id = :ws AND member_count > 0 ORDER BY name LIMIT 100) s
     LEFT JOIN (
           SELECT m.segment_id, round(avg(p.csat_score), 2) AS csat
           FROM period p JOIN segment_members m ON m.workspace_id = p.workspace_id AND m.customer_id = p.customer_id
           WHERE p.csat_score IS NOT NULL GROUP BY m.segment_id) cs ON cs.segment_id = s.id
     LEFT JOIN (
           SELECT m.segment_id,
                  round(100.0 * (count(*) FILTER (WHERE r.score >= 9) - count(*) FILTER (WHERE r.score <= 6))
                        / nullif(count(*), 0), 1) AS nps
           FROM survey_responses r JOIN segment_members m
             ON m.workspace_id = r.workspace_id AND m.customer_id = r.customer_id
           WHERE r.workspace_id = :ws AND r.answered_at >= :since AND r.answered_at < :until
             AND r.customer_id IN ({visible})
           GROUP BY m.segment_id) ns ON ns.segment_id = s.id
     WHERE cs.csat IS NOT NULL OR ns.nps IS NOT NULL) AS by_segment
"""


async def service_report(
    session: AsyncSession, ctx: Caller, *, since: datetime, until: datetime, timezone: str
) -> dict[str, Any]:
    visible, scope = visible_customer_ids_sql(ctx)
    sql = text(REPORT_SQL.format(visible=visible))
    params = {"ws": ctx.workspace_id, "since": since, "until": until, "tz": timezone, **scope}
    row = (await session.execute(sql, params)).one()
    volume, first_response, resolution, attainment, backlog, csat, nps, by_tier, by_segment = row
    return {
        "since": since,
        "until": until,
        "volume": volume,
        "median_first_response_minutes": round(first_response, 1) if first_response is not None else None,
        "median_resolution_minutes": round(resolution, 1) if resolution is not None else None,
        "sla_attainment_pct": float(attainment) if attainment is not None else None,
        "backlog_by_age": backlog,
        "csat_average": float(csat) if csat is not None else None,
        "nps_by_month": nps,
        "by_tier": by_tier,
        "by_segment": by_segment,
    }
