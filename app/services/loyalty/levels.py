"""Level reviews: each member measured over the levels' window (spend, paid orders, points earned
net of reversals) and moved to the highest level it qualifies for, set-based; `loyalty.level_changed`
per move. `rolling` moves either way at every review; `yearly` moves up at once and down only once
the member has held the level a year."""

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.models import LoyaltyDocument
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column, timestamp
from app.services.loyalty import programs

LEVEL_CHANGED: Payload[Any] = Payload(
    (column("customer_id"), column("from_level"), column("to_level"), timestamp("at")),
    model=data_model("loyalty.level_changed"),
)
_SINCE = "CAST(:now AS timestamptz) - make_interval(months => :months)"
_SPEND_AND_ORDERS = f"""
SELECT customer_id, sum(total_amount - refunded_amount) AS spend, count(*) AS orders FROM orders
WHERE workspace_id = :ws AND status IN ('paid', 'partially_refunded') AND ordered_at >= {_SINCE} {{only}}
GROUP BY customer_id
"""
_POINTS = f"""
SELECT customer_id, sum(points) AS points FROM loyalty_entries
WHERE workspace_id = :ws AND kind IN ('earn', 'reverse') AND created_at >= {_SINCE} {{only}}
GROUP BY customer_id
"""
MEASURES_SQL = text(
    f"""
SELECT coalesce((SELECT spend FROM ({_SPEND_AND_ORDERS.format(only="AND customer_id = :customer")}) s), 0),
       coalesce((SELECT orders FROM ({_SPEND_AND_ORDERS.format(only="AND customer_id = :customer")}) s), 0),
       coalesce((SELECT points FROM ({_POINTS.format(only="AND customer_id = :customer")}) p), 0)
"""
)
REVIEW_SQL = text(
    f"""
WITH lv AS (
    SELECT x ->> 'code' AS code, x ->> 'metric' AS metric, (x ->> 'threshold')::numeric AS threshold, n AS rank
    FROM jsonb_array_elements(CAST(:levels AS jsonb)) WITH ORDINALITY AS t(x, n)
),
locked AS (
    SELECT customer_id, level, level_since FROM loyalty_accounts WHERE workspace_id = :ws
    ORDER BY customer_id FOR UPDATE
),
measured AS (
    SELECT k.customer_id, k.level, k.level_since, coalesce(o.spend, 0) AS spend, coalesce(o.orders, 0) AS orders,
           coalesce(p.points, 0) AS points
    FROM locked k
    LEFT JOIN ({_SPEND_AND_ORDERS.format(only="")}) o USING (customer_id)
    LEFT JOIN ({_POINTS.format(only="")}) p USING (customer_id)
),
target AS (
    SELECT m.*,
           (SELECT lv.code FROM lv
            WHERE CASE lv.metric WHEN 'spend' THEN m.spend WHEN 'orders' THEN m.orders ELSE m.points END >= lv.threshold
            ORDER BY lv.rank DESC LIMIT 1) AS to_level
    FROM measured m
),
moving AS (
    SELECT t.customer_id, t.level AS from_level, t.to_level FROM target t
    WHERE t.level IS DISTINCT FROM t.to_level
      AND (:rolling
           OR coalesce((SELECT rank FROM lv WHERE code = t.to_level), 0)
              > coalesce((SELECT rank FROM lv WHERE code = t.level), 0)
           OR t.level_since IS NULL OR t.level_since <= CAST(:now AS timestamptz) - interval '1 year')
),
changed AS (
    UPDATE loyalty_accounts a SET level = w.to_level, level_since = :now, updated_at = :now FROM moving w
    WHERE a.workspace_id = :ws AND a.customer_id = w.customer_id
    RETURNING a.customer_id
),
moved AS (
    SELECT w.customer_id, w.from_level, w.to_level, CAST(:now AS timestamptz) AS at
    FROM moving w JOIN changed USING (customer_id)
),
events AS (
    {
        outbox.emit_rows_sql(
            f"(SELECT guanxi_uuid7() AS id, {LEVEL_CHANGED.sql('m')} AS data FROM moved m)",
            workspace_id="CAST(:ws AS uuid)",
            event_type="'loyalty.level_changed'",
            at="CAST(:now AS timestamptz)",
            actor="CAST(:actor AS jsonb)",
        )
    }
)
SELECT (SELECT count(*) FROM measured), (SELECT count(*) FROM moved)
"""
)
WORKSPACES_SQL = select(LoyaltyDocument.workspace_id).where(
    LoyaltyDocument.kind == programs.LEVELS, text("jsonb_array_length(document -> 'levels') > 0")
)


@dataclass(frozen=True)
class Review:
    reviewed: int
    changed: int


async def measures(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, window_months: int
) -> dict[str, Decimal]:
    """A member's spend, paid orders and net points earned over the window."""
    row = (
        await session.execute(
            MEASURES_SQL,
            {"ws": ctx.workspace_id, "customer": customer_id, "now": clock.now(), "months": window_months},
        )
    ).one()
    return {"spend": Decimal(row[0]), "orders": Decimal(row[1]), "points": Decimal(row[2])}


async def review(session: AsyncSession, ctx: Caller) -> Review:
    """Review every member of the caller's workspace now, in one statement."""
    doc = (await programs.document(session, ctx, programs.LEVELS)).document
    row = (
        await session.execute(
            REVIEW_SQL,
            {
                "ws": ctx.workspace_id,
                "now": clock.now(),
                "months": doc["window_months"],
                "levels": orjson.dumps(doc["levels"]).decode(),
                "rolling": doc["review"] == "rolling",
                "actor": orjson.dumps(ctx.actor).decode(),
            },
        )
    ).one()
    return Review(int(row[0]), int(row[1]))


async def workspaces_with_levels(session: AsyncSession) -> list[uuid.UUID]:
    return list(await session.scalars(WORKSPACES_SQL))
