"""Lifecycle stages: moves by hand (checked against the allowed transitions) and by rules,
set-based over a workspace or for one customer after an order, with history and events."""

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.prepared import PreparedStatement
from app.core.wire import money_text
from app.models import CustomerStage, LifecycleRules, LifecycleStage, StageHistory
from app.services.customers.visibility import require_visible
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column
from app.services.identity import workspaces

DEFAULT_STAGES = (
    ("lead", "Lead 潜在客户"),
    ("prospect", "Prospect"),
    ("new_customer", "New customer 首次购买"),
    ("active", "Active / repeat"),
    ("loyal", "Loyal 忠实客户"),
    ("at_risk", "At risk"),
    ("churned", "Churned"),
    ("won_back", "Won back"),
)
# Moves a person may make by hand; rules follow the purchase history instead.
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"lead", "prospect", "new_customer"}),
    "lead": frozenset({"prospect", "new_customer", "churned"}),
    "prospect": frozenset({"lead", "new_customer", "churned"}),
    "new_customer": frozenset({"active", "loyal", "at_risk", "churned"}),
    "active": frozenset({"loyal", "at_risk", "churned"}),
    "loyal": frozenset({"active", "at_risk", "churned"}),
    "at_risk": frozenset({"active", "loyal", "churned"}),
    "churned": frozenset({"won_back", "lead"}),
    "won_back": frozenset({"active", "loyal", "at_risk", "churned"}),
}
# The default rules: loyal at 5 orders or 5,000 net spend in the tier window; at risk after 90
# days without a purchase, churned after 180; a purchase after churning is a win back. A workspace
# sets its own (`PUT /lifecycle/rules`, the `lifecycle_rules` row), read by the rules' statement.
RULES: dict[str, Any] = {"loyal_orders": 5, "loyal_spend": Decimal(5000), "at_risk_days": 90, "churned_days": 180}


async def ensure_stages(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    await session.execute(
        insert(LifecycleStage)
        .values(
            [
                {"workspace_id": workspace_id, "key": key, "name": name, "position": i}
                for i, (key, name) in enumerate(DEFAULT_STAGES)
            ]
        )
        .on_conflict_do_nothing()
    )


async def stages(session: AsyncSession, ctx: Caller) -> list[LifecycleStage]:
    await ensure_stages(session, ctx.workspace_id)
    rows = await session.scalars(
        select(LifecycleStage).where(LifecycleStage.workspace_id == ctx.workspace_id).order_by(LifecycleStage.position)
    )
    return list(rows.all())


async def move(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, stage: str, reason: str | None
) -> CustomerStage:
    """A move by hand: 409 with the allowed stages when the transition is not one."""
    known = {row.key for row in await stages(session, ctx)}
    if stage not in known:
        raise ValidationFailed(f"Unknown stage '{stage}'.", loc=["body", "stage"])
    await require_visible(session, ctx, customer_id)
    current = await session.scalar(
        select(CustomerStage)
        .where(CustomerStage.workspace_id == ctx.workspace_id, CustomerStage.customer_id == customer_id)
        .with_for_update()
    )
    from_stage = current.stage if current else None
    allowed = allowed_moves(from_stage, known)
    if stage not in allowed:
        raise Conflict(
            f"A customer cannot move from {from_stage or 'no stage'} to {stage} by hand.",
            current_stage=from_stage,
            allowed=sorted(allowed),
        )
    now = clock.now()
    await _close_history(session, ctx.workspace_id, customer_id, now)
    if current is None:
        current = CustomerStage(workspace_id=ctx.workspace_id, customer_id=customer_id, stage=stage, entered_at=now)
        session.add(current)
    else:
        current.stage, current.entered_at = stage, now
    entry = StageHistory(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        customer_id=customer_id,
        stage=stage,
        from_stage=from_stage,
        entered_at=now,
        by_user_id=ctx.user_id,
        reason=reason,
    )
    session.add(entry)
    outbox.emit(session, ctx, "lifecycle.stage_changed", STAGE_CHANGED.data(entry))
    await session.flush()
    return current


def allowed_moves(from_stage: str | None, known: set[str]) -> frozenset[str]:
    """The default stages follow the transition table; a workspace's own stages can be entered
    and left by hand from anywhere (rules never move customers into or out of them)."""
    custom = known - {key for key, _ in DEFAULT_STAGES}
    if from_stage in custom:
        return frozenset(known - {from_stage})
    return (TRANSITIONS.get(from_stage) or frozenset()) | custom


async def set_stages(session: AsyncSession, ctx: Caller, wanted: list[tuple[str, str]]) -> list[LifecycleStage]:
    """Names and order of the stages; every default stage stays, custom ones may be added."""
    keys = [key for key, _ in wanted]
    missing = {key for key, _ in DEFAULT_STAGES} - set(keys)
    if missing:
        raise ValidationFailed(f"The default stages stay: {', '.join(sorted(missing))}.", loc=["body", "stages"])
    if len(set(keys)) != len(keys):
        raise ValidationFailed("Stage keys must be unique.", loc=["body", "stages"])
    await scoped.one_at_a_time(session, ctx, "lifecycle_stages")
    in_use = set(
        (
            await session.scalars(
                select(CustomerStage.stage).where(CustomerStage.workspace_id == ctx.workspace_id).distinct()
            )
        ).all()
    )
    if in_use - set(keys):
        raise Conflict(f"Customers are in stages you removed: {', '.join(sorted(in_use - set(keys)))}.")
    await session.execute(text("DELETE FROM lifecycle_stages WHERE workspace_id = :ws"), {"ws": ctx.workspace_id})
    session.add_all(
        LifecycleStage(workspace_id=ctx.workspace_id, key=key, name=name, position=i)
        for i, (key, name) in enumerate(wanted)
    )
    await session.flush()
    return await stages(session, ctx)


async def thresholds(session: AsyncSession, ctx: Caller) -> dict[str, Any]:
    """The workspace's thresholds as the API shows them (spend in the workspace's currency). A
    workspace that never set its own has the defaults, as version 1."""
    row = await session.get(LifecycleRules, ctx.workspace_id)
    values = {name: getattr(row, name) for name in RULES} if row is not None else dict(RULES)
    currency = await workspaces.currency(session, ctx.workspace_id)
    return {
        **values,
        "loyal_spend": money_text(values["loyal_spend"], currency),
        "defaults": row is None,
        "updated_at": row.updated_at if row is not None else None,
        "version": row.version if row is not None else 1,
    }


async def set_thresholds(session: AsyncSession, ctx: Caller, wanted: dict[str, Any]) -> dict[str, Any]:
    """Replace the workspace's thresholds; the next pass (nightly, or after an order) applies them."""
    if wanted["loyal_spend"] <= 0:
        raise ValidationFailed("loyal_spend must be more than 0.", loc=["body", "loyal_spend"])
    if wanted["at_risk_days"] >= wanted["churned_days"]:
        raise ValidationFailed(
            "at_risk_days must be fewer than churned_days: a customer is at risk before churning.",
            loc=["body", "at_risk_days"],
        )
    # Two first PUTs at once would both insert the row.
    await scoped.one_at_a_time(session, ctx, "lifecycle_rules")
    row = await session.get(LifecycleRules, ctx.workspace_id, with_for_update=True)
    before = {name: getattr(row, name) for name in RULES} if row is not None else dict(RULES)
    changed = {name for name in RULES if wanted[name] != before[name]}
    if row is None:
        # The defaults were version 1.
        row = LifecycleRules(workspace_id=ctx.workspace_id, **wanted, updated_at=clock.now(), version=2)
        session.add(row)
    elif changed:
        for name in changed:
            setattr(row, name, wanted[name])
        row.version += 1
        row.updated_at = clock.now()
    if changed:
        audit.record(
            session,
            ctx,
            entity_type="lifecycle_rules",
            entity_id=ctx.workspace_id,
            action="updated",
            changes={
                name: {"before": to_jsonable(before[name]), "after": to_jsonable(wanted[name])}
                for name in sorted(changed)
            },
        )
    await session.flush()
    return await thresholds(session, ctx)


async def _close_history(session: AsyncSession, workspace_id: uuid.UUID, customer_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        text(
            "UPDATE stage_history SET left_at = :now WHERE workspace_id = :ws AND customer_id = :customer_id "
            "AND left_at IS NULL"
        ),
        {"now": now, "ws": workspace_id, "customer_id": customer_id},
    )


# `lifecycle.stage_changed`, over the stage_history row of the move.
STAGE_CHANGED: Payload[StageHistory] = Payload(
    (
        column("customer_id"),
        column("from_stage"),
        Field("to_stage", lambda entry: entry.stage, lambda alias: f"{alias}.stage"),
        Field("by", lambda entry: entry.by_rule or "hand", lambda alias: f"coalesce({alias}.by_rule, 'hand')"),
        column("reason"),
    ),
    model=data_model("lifecycle.stage_changed"),
)
_EVENTS = outbox.emit_rows_sql(
    f"(SELECT guanxi_uuid7() AS id, {STAGE_CHANGED.sql('h')} AS data FROM history h)",
    workspace_id=":ws",
    event_type="'lifecycle.stage_changed'",
    at="CAST(:now AS timestamptz)",
    actor="CAST(:actor AS jsonb)",
    returning="id",
)


def _rules_sql(*, customers: Literal["one", "some", "range"]) -> str:
    def only(column: str) -> str:
        # Repeated on each joined table: PostgreSQL carries equalities across a join but not ranges
        # or arrays, and a chunk should not hash the whole workspace.
        if customers == "one":
            return f"AND {column} = :customer_id"
        if customers == "some":
            return f"AND {column} = ANY(CAST(:customer_ids AS uuid[]))"
        # [lo, hi), a null bound open: with both open, the whole workspace in one statement.
        return f"AND (CAST(:lo AS uuid) IS NULL OR {column} >= :lo) AND (CAST(:hi AS uuid) IS NULL OR {column} < :hi)"

    thresholds = ",\n           ".join(f"coalesce(r.{name}, {value}) AS {name}" for name, value in RULES.items())
    return f"""
WITH params AS (
    -- The workspace's thresholds, read here so the per-order path stays one statement.
    SELECT CAST(:now AS timestamptz) AS now,
           {thresholds}
    FROM (VALUES (1)) one(x) LEFT JOIN lifecycle_rules r ON r.workspace_id = :ws
),
current AS (
    SELECT c.id AS customer_id, s.stage, s.entered_at, v.order_count, v.window_orders, v.window_spend,
           v.last_purchase_at
    FROM customers c
    LEFT JOIN customer_stages s ON s.workspace_id = c.workspace_id AND s.customer_id = c.id {only("s.customer_id")}
    LEFT JOIN customer_values v ON v.workspace_id = c.workspace_id AND v.customer_id = c.id {only("v.customer_id")}
    WHERE c.workspace_id = :ws AND c.deleted_at IS NULL {only("c.id")}
),
targets AS (
    SELECT cur.*,
           CASE
               WHEN coalesce(cur.order_count, 0) = 0 THEN coalesce(cur.stage, 'lead')
               WHEN cur.stage = 'churned' AND cur.last_purchase_at > cur.entered_at THEN 'won_back'
               WHEN p.now - cur.last_purchase_at >= make_interval(days => p.churned_days) THEN 'churned'
               WHEN p.now - cur.last_purchase_at >= make_interval(days => p.at_risk_days) THEN 'at_risk'
               WHEN cur.window_orders >= p.loyal_orders OR cur.window_spend >= p.loyal_spend THEN 'loyal'
               WHEN cur.stage = 'won_back' THEN 'won_back'
               WHEN cur.order_count >= 2 THEN 'active'
               ELSE 'new_customer'
           END AS target
    FROM current cur CROSS JOIN params p
),
moves AS (
    SELECT * FROM targets WHERE stage IS DISTINCT FROM target
),
closed AS (
    UPDATE stage_history h SET left_at = CAST(:now AS timestamptz)
    FROM moves m
    WHERE h.workspace_id = :ws AND h.customer_id = m.customer_id AND h.left_at IS NULL {only("h.customer_id")}
    RETURNING h.customer_id
),
upserted AS (
    INSERT INTO customer_stages AS s (workspace_id, customer_id, stage, entered_at)
    SELECT :ws, customer_id, target, CAST(:now AS timestamptz) FROM moves
    ON CONFLICT (workspace_id, customer_id) DO UPDATE SET stage = excluded.stage, entered_at = excluded.entered_at
    RETURNING s.customer_id
),
history AS (
    INSERT INTO stage_history (workspace_id, id, customer_id, stage, from_stage, entered_at, by_rule)
    SELECT :ws, guanxi_uuid7(), customer_id, target, stage, CAST(:now AS timestamptz), 'rules' FROM moves
    RETURNING customer_id, stage, from_stage, by_rule, reason
),
events AS (
    {_EVENTS}
)
SELECT (SELECT count(*) FROM moves), (SELECT count(*) FROM closed), (SELECT count(*) FROM upserted),
       (SELECT count(*) FROM history), (SELECT count(*) FROM events)
"""


RULES_ONE = text(_rules_sql(customers="one"))
RULES_SOME = text(_rules_sql(customers="some"))
RULES_RANGE = text(_rules_sql(customers="range"))
# Run on the driver connection: the per-order path pays SQLAlchemy's text handling otherwise.
_RULES_ONE = PreparedStatement(RULES_ONE)
_RULES_SOME = PreparedStatement(RULES_SOME)
_RULES_RANGE = PreparedStatement(RULES_RANGE)
# Customers per transaction and transactions at once for a whole workspace: short transactions, hash
# joins that fit in memory, and one PostgreSQL backend per core doing the inserts.
CHUNK_CUSTOMERS = 50_000
PARALLEL_CHUNKS = 2
IdRange = tuple[uuid.UUID | None, uuid.UUID | None]

CHUNK_BOUNDS = text(
    """
SELECT id FROM (
    SELECT id, row_number() OVER (ORDER BY id) AS n FROM customers WHERE workspace_id = :ws AND deleted_at IS NULL
) numbered
WHERE n % :chunk = 1 AND n > 1 ORDER BY id
"""
)


async def apply_rules(
    session: AsyncSession,
    ctx: Caller,
    *,
    customer_id: uuid.UUID | None = None,
    customer_ids: Sequence[uuid.UUID] | None = None,
    ids: IdRange = (None, None),
) -> int:
    """Move customers — one, some, those with ids in [lo, hi), or all — to the stage their purchase
    history says, in one statement; returns how many moved."""
    params: dict[str, Any] = {
        "ws": ctx.workspace_id,
        "now": clock.now(),
        "actor": orjson.dumps(ctx.actor).decode(),
    }
    statement = _RULES_RANGE
    if customer_id is not None:
        params["customer_id"], statement = customer_id, _RULES_ONE
    elif customer_ids is not None:
        params["customer_ids"], statement = list(customer_ids), _RULES_SOME
    else:
        params["lo"], params["hi"] = ids
    row = await statement.fetchrow(session, params)
    assert row is not None, "the statement ends in a one-row SELECT"
    return int(row[0])


async def apply_rules_in_chunks(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Caller,
    *,
    chunk: int = CHUNK_CUSTOMERS,
    parallel: int = PARALLEL_CHUNKS,
) -> int:
    """The nightly pass over a whole workspace: id ranges of `chunk` customers, each committed on its
    own, `parallel` at a time. Each customer's move is atomic with its history and event; a pass cut
    short leaves the rest for the next one, which finds them where they were."""
    async with sessions() as session:
        bounds: list[uuid.UUID | None] = list(
            (await session.scalars(CHUNK_BOUNDS, {"ws": ctx.workspace_id, "chunk": chunk})).all()
        )
    pending = iter(zip([None, *bounds], [*bounds, None], strict=True))
    moved = 0

    async def drain() -> None:
        nonlocal moved
        for ids in pending:  # shared: each range goes to whichever runner asks first
            async with sessions() as session:
                in_range = await apply_rules(session, ctx, ids=ids)
                await session.commit()
            moved += in_range

    async with asyncio.TaskGroup() as runners:
        for _ in range(max(1, parallel)):
            runners.create_task(drain())
    return moved


async def history(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID
) -> tuple[CustomerStage | None, list[StageHistory]]:
    await require_visible(session, ctx, customer_id)
    current = await session.get(CustomerStage, (ctx.workspace_id, customer_id))
    rows = await session.scalars(
        select(StageHistory)
        .where(StageHistory.workspace_id == ctx.workspace_id, StageHistory.customer_id == customer_id)
        .order_by(StageHistory.entered_at.desc(), StageHistory.id.desc())
    )
    return current, list(rows.all())


def present(customer_id: uuid.UUID, current: CustomerStage | None, history: list[StageHistory]) -> dict[str, Any]:
    """A customer's current stage and its stays, as `history` returns them."""
    return {
        "customer_id": customer_id,
        "stage": getattr(current, "stage", None),
        "entered_at": getattr(current, "entered_at", None),
        "history": [
            {
                "stage": h.stage,
                "from_stage": h.from_stage,
                "entered_at": h.entered_at,
                "left_at": h.left_at,
                "by_user_id": h.by_user_id,
                "by_rule": h.by_rule,
                "reason": h.reason,
            }
            for h in history
        ],
    }


REPORT_SQL = {
    "now": text(
        "SELECT stage, count(*) FROM customer_stages s JOIN customers c ON c.workspace_id = s.workspace_id "
        "AND c.id = s.customer_id WHERE s.workspace_id = :ws AND c.deleted_at IS NULL GROUP BY stage"
    ),
    "at": text(
        "SELECT stage, count(*) FROM stage_history WHERE workspace_id = :ws AND entered_at <= :at "
        "AND (left_at IS NULL OR left_at > :at) GROUP BY stage"
    ),
    "funnel": text(
        "SELECT from_stage, stage, count(*) FROM stage_history WHERE workspace_id = :ws "
        "AND entered_at >= :since AND entered_at < :until GROUP BY from_stage, stage ORDER BY 3 DESC"
    ),
    "median_days": text(
        "SELECT stage, percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM left_at - entered_at) / 86400) "
        "FROM stage_history WHERE workspace_id = :ws AND left_at IS NOT NULL GROUP BY stage"
    ),
}


async def report(
    session: AsyncSession, ctx: Caller, *, at: datetime, since: datetime, until: datetime
) -> dict[str, Any]:
    """Counts per stage now and at a date, moves between stages in a period, median days in each
    stage, and cohort retention by first-purchase month (share buying again in months 1-12)."""
    ws = {"ws": ctx.workspace_id}
    now_counts: dict[str, int] = {row[0]: row[1] for row in await session.execute(REPORT_SQL["now"], ws)}
    at_counts: dict[str, int] = {row[0]: row[1] for row in await session.execute(REPORT_SQL["at"], {**ws, "at": at})}
    funnel = (await session.execute(REPORT_SQL["funnel"], {**ws, "since": since, "until": until})).all()
    medians: dict[str, float] = {row[0]: row[1] for row in await session.execute(REPORT_SQL["median_days"], ws)}
    cohort_rows = await session.execute(
        text(
            """
WITH firsts AS (
    SELECT customer_id, date_trunc('month', min(ordered_at)) AS cohort FROM orders
    WHERE workspace_id = :ws AND status IN ('paid', 'partially_refunded') GROUP BY customer_id
),
activity AS (
    SELECT DISTINCT f.customer_id, f.cohort,
           ((extract(year FROM o.ordered_at) - extract(year FROM f.cohort)) * 12
            + extract(month FROM o.ordered_at) - extract(month FROM f.cohort))::int AS month_offset
    FROM firsts f JOIN orders o ON o.workspace_id = :ws AND o.customer_id = f.customer_id
    WHERE o.status IN ('paid', 'partially_refunded')
)
SELECT to_char(f.cohort, 'YYYY-MM') AS cohort, f.customers_n AS customers,
       array_agg(coalesce(r.retained, 0) ORDER BY m.offset_month) AS retained
FROM (SELECT cohort, count(*) FROM firsts GROUP BY cohort) f(cohort, customers_n)
CROSS JOIN generate_series(1, 12) AS m(offset_month)
LEFT JOIN (
    SELECT cohort, month_offset, count(DISTINCT customer_id) AS retained FROM activity GROUP BY 1, 2
) r ON r.cohort = f.cohort AND r.month_offset = m.offset_month
GROUP BY f.cohort, f.customers_n ORDER BY f.cohort
"""
        ),
        ws,
    )
    cohorts = []
    for cohort, size, retained in cohort_rows:
        cohorts.append(
            {"cohort": cohort, "customers": size, "retention": [round(n / size, 4) if size else 0.0 for n in retained]}
        )
    order = [row.key for row in await stages(session, ctx)]
    return {
        "stages": [
            {
                "stage": key,
                "now": now_counts.get(key, 0),
                "at": at_counts.get(key, 0),
                "median_days_in_stage": round(float(medians[key]), 2) if key in medians else None,
            }
            for key in order
        ],
        "at": at,
        "funnel": {
            "since": since,
            "until": until,
            "moves": [{"from_stage": f, "to_stage": t, "customers": n} for f, t, n in funnel],
        },
        "cohorts": cohorts,
    }
