"""The unified customer view: one time-ordered stream of everything that happened to a customer,
and a profile summary of how and when the customer is reached."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.masking import mask_for
from app.core.pagination import decode_cursor, next_page
from app.core.wire import money_text, utc_text_sql
from app.services.customers.visibility import require_visible
from app.services.identity import workspaces

# Each source: one indexed, limited branch of a single UNION ALL.
SOURCES: dict[str, str] = {
    "interaction": f"""
        SELECT i.occurred_at AS at, i.id, 'interaction' AS type,
               jsonb_build_object('channel', i.channel, 'direction', i.direction, 'subject', i.subject,
                                  'outcome', i.outcome, 'user_id', i.user_id, 'location', i.location,
                                  'checked_in_at', {utc_text_sql("i.checked_in_at")},
                                  'checked_out_at', {utc_text_sql("i.checked_out_at")}) AS data
        FROM interactions i
        WHERE i.workspace_id = :ws AND i.customer_id = :customer_id AND i.deleted_at IS NULL {{after_i}}
        ORDER BY i.occurred_at DESC, i.id DESC LIMIT :limit""",
    "task_done": """
        SELECT t.completed_at AS at, t.id, 'task_done' AS type,
               jsonb_build_object('title', t.title, 'kind', t.kind, 'interaction_id', t.interaction_id) AS data
        FROM tasks t
        WHERE t.workspace_id = :ws AND t.customer_id = :customer_id AND t.status = 'done' {after_t}
        ORDER BY t.completed_at DESC, t.id DESC LIMIT :limit""",
    "change": """
        SELECT a.occurred_at AS at, a.id, 'change' AS type,
               jsonb_build_object('action', a.action, 'changes', a.changes, 'actor_type', a.actor_type,
                                  'actor_id', a.actor_id) AS data
        FROM audit_log a
        WHERE a.workspace_id = :ws AND a.entity_type = 'customer' AND a.entity_id = :customer_id {after_a}
        ORDER BY a.occurred_at DESC, a.id DESC LIMIT :limit""",
    "order": """
        SELECT o.ordered_at AS at, o.id, 'order' AS type,
               jsonb_build_object('external_id', o.external_id, 'status', o.status, 'currency', o.currency,
                                  'total_amount', trim_scale(o.total_amount)::text) AS data
        FROM orders o
        WHERE o.workspace_id = :ws AND o.customer_id = :customer_id {after_o}
        ORDER BY o.ordered_at DESC, o.id DESC LIMIT :limit""",
    "stage_change": """
        SELECT h.entered_at AS at, h.id, 'stage_change' AS type,
               jsonb_build_object('stage', h.stage, 'from_stage', h.from_stage, 'by_rule', h.by_rule,
                                  'by_user_id', h.by_user_id) AS data
        FROM stage_history h
        WHERE h.workspace_id = :ws AND h.customer_id = :customer_id {after_h}
        ORDER BY h.entered_at DESC, h.id DESC LIMIT :limit""",
    "tier_change": """
        SELECT tc.changed_at AS at, tc.id, 'tier_change' AS type,
               jsonb_build_object('from_tier', tc.from_tier, 'to_tier', tc.to_tier, 'reason', tc.reason) AS data
        FROM tier_changes tc
        WHERE tc.workspace_id = :ws AND tc.customer_id = :customer_id {after_tc}
        ORDER BY tc.changed_at DESC, tc.id DESC LIMIT :limit""",
    "ticket": """
        SELECT tk.created_at AS at, tk.id, 'ticket' AS type,
               jsonb_build_object('number', tk.number, 'type', tk.type, 'subject', tk.subject, 'status', tk.status,
                                  'priority', tk.priority) AS data
        FROM tickets tk
        WHERE tk.workspace_id = :ws AND tk.customer_id = :customer_id {after_tk}
        ORDER BY tk.created_at DESC, tk.id DESC LIMIT :limit""",
    "segment_join": """
        SELECT m.added_at AS at, m.segment_id AS id, 'segment_join' AS type,
               jsonb_build_object('segment_id', m.segment_id, 'name', s.name) AS data
        FROM segment_members m JOIN segments s ON s.workspace_id = m.workspace_id AND s.id = m.segment_id
        WHERE m.workspace_id = :ws AND m.customer_id = :customer_id {after_m}
        ORDER BY m.added_at DESC, m.segment_id DESC LIMIT :limit""",
}
_ALIASES = {
    "interaction": ("i", "occurred_at"),
    "task_done": ("t", "completed_at"),
    "change": ("a", "occurred_at"),
    "order": ("o", "ordered_at"),
    "stage_change": ("h", "entered_at"),
    "tier_change": ("tc", "changed_at"),
    "ticket": ("tk", "created_at"),
    "segment_join": ("m", "added_at"),
}
TYPES = tuple(SOURCES)


async def _check_visible(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> None:
    await require_visible(session, ctx, customer_id)


async def timeline(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, types: list[str], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, one query: each source's newest `limit` rows past the cursor, merged in SQL;
    masked as the caller is (a field change's before and after carry emails, phones, street)."""
    await _check_visible(session, ctx, customer_id)
    wanted = types or list(TYPES)
    params: dict[str, Any] = {"ws": ctx.workspace_id, "customer_id": customer_id, "limit": limit + 1}
    list_name = f"timeline:{customer_id}"
    if cursor:
        params["after_at"], params["after_id"] = decode_cursor(cursor, list_name, [datetime, uuid.UUID])
    branches = []
    for name in wanted:
        alias, column = _ALIASES[name]
        id_column = "segment_id" if name == "segment_join" else "id"
        after = (
            f"AND ({alias}.{column}, {alias}.{id_column}) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))"
            if cursor
            else ""
        )
        branches.append("(" + SOURCES[name].format(**{f"after_{alias}": after}) + ")")
    sql = (
        "SELECT at, id, type, data FROM ("
        + " UNION ALL ".join(branches)
        + ") stream ORDER BY at DESC, id DESC LIMIT :limit"
    )
    rows = (await session.execute(text(sql), params)).all()
    items = [
        {"occurred_at": at, "id": id_, "type": type_, "data": mask_for(ctx, _with_money(type_, data))}
        for at, id_, type_, data in rows
    ]
    return next_page(items, limit, list_name, lambda item: (item["occurred_at"], item["id"]))


def _with_money(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    if type_ != "order":
        return data
    return {**data, "total_amount": money_text(Decimal(data["total_amount"]), data["currency"])}


SUMMARY_SQL = text(
    f"""
SELECT
    (SELECT jsonb_build_object('at', {utc_text_sql("i.occurred_at")}, 'channel', i.channel, 'user_id', i.user_id)
       FROM interactions i WHERE i.workspace_id = :ws AND i.customer_id = :customer_id AND i.deleted_at IS NULL
       ORDER BY i.occurred_at DESC, i.id DESC LIMIT 1) AS last_contact,
    (SELECT count(*) FROM tasks t WHERE t.workspace_id = :ws AND t.customer_id = :customer_id AND t.status = 'open')
        AS open_tasks,
    (SELECT jsonb_build_object('task_id', t.id, 'title', t.title, 'due_at', {utc_text_sql("t.due_at")})
       FROM tasks t
       WHERE t.workspace_id = :ws AND t.customer_id = :customer_id AND t.status = 'open'
       ORDER BY t.due_at, t.id LIMIT 1) AS next_follow_up,
    (SELECT coalesce(jsonb_object_agg(channel, counts), '{{}}'::jsonb) FROM (
        SELECT channel, jsonb_build_object(
                   'days_30', count(*) FILTER (WHERE occurred_at >= CAST(:now AS timestamptz) - interval '30 days'),
                   'days_90', count(*) FILTER (WHERE occurred_at >= CAST(:now AS timestamptz) - interval '90 days'),
                   'days_365', count(*)) AS counts
        FROM interactions
        WHERE workspace_id = :ws AND customer_id = :customer_id AND deleted_at IS NULL
          AND occurred_at >= CAST(:now AS timestamptz) - interval '365 days'
        GROUP BY channel) by_channel) AS by_channel,
    (SELECT channel FROM interactions
       WHERE workspace_id = :ws AND customer_id = :customer_id AND deleted_at IS NULL
         AND outcome IS DISTINCT FROM 'no_answer'
       GROUP BY channel ORDER BY count(*) DESC, channel LIMIT 1) AS preferred_channel,
    (SELECT coalesce(array_agg(hour ORDER BY n DESC, hour), '{{}}') FROM (
        SELECT extract(hour FROM occurred_at AT TIME ZONE :tz)::int AS hour, count(*) AS n
        FROM interactions
        WHERE workspace_id = :ws AND customer_id = :customer_id AND deleted_at IS NULL
          AND outcome IS DISTINCT FROM 'no_answer'
        GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3) hours) AS preferred_hours
"""
)


async def summary(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> dict[str, Any]:
    """Contact facts in one statement; preferences come from answered contacts (any outcome but no_answer)."""
    await _check_visible(session, ctx, customer_id)
    tz = await workspaces.timezone(session, ctx.workspace_id)
    now = clock.now()
    row = (
        await session.execute(SUMMARY_SQL, {"ws": ctx.workspace_id, "customer_id": customer_id, "now": now, "tz": tz})
    ).one()
    last_contact, open_tasks, next_follow_up, by_channel, preferred_channel, preferred_hours = row
    days_since = None
    if last_contact:
        days_since = (now - datetime.fromisoformat(last_contact["at"])).days
    return {
        "customer_id": customer_id,
        "last_contact": last_contact,
        "days_since_last_contact": days_since,
        "open_tasks": open_tasks,
        "next_follow_up": next_follow_up,
        "interactions_by_channel": by_channel,
        "preferred_channel": preferred_channel,
        "preferred_contact_hours": list(preferred_hours),
        "timezone": tz,
    }
