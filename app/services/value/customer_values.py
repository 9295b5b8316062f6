"""Customer value figures, set-based in SQL: per customer after each order, and for a whole
workspace in one pass (RFM quintile edges, scores, segments, tiers, tier history and events).

Counted orders are `paid` and `partially_refunded`; spend is net of refunds. Favourite categories
rank line amounts. RFM scores are 1-5 against the workspace's quintile edges from the last full
recompute, so a per-order update scores a customer exactly as the nightly pass would."""

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, cast

import numpy as np
import orjson
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from app.core import clock
from app.core.access import Caller
from app.core.ids import new_id
from app.core.prepared import PreparedStatement
from app.core.wire import money_text
from app.models import CustomerValue, TierChange, ValueModel, ValueTier
from app.services.customers.visibility import require_visible
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column
from app.services.identity import workspaces
from app.services.value import lifetime_value

DEFAULT_TIERS = (
    ("A", "High value", 1, Decimal("10000"), None, None),
    ("B", "Medium value", 2, Decimal("2000"), None, None),
    ("C", "Low value", 3, None, None, None),
)
PREDICTION_DAYS = 365.0
MIN_CUSTOMERS_TO_FIT = 50

# The RFM map: first matching row wins; R and F are the recency and frequency scores.
RFM_SEGMENT_SQL = """
CASE
    WHEN t.r = 5 AND t.f >= 4 THEN 'Champions'
    WHEN t.r IN (3, 4) AND t.f >= 4 THEN 'Loyal'
    WHEN t.r >= 4 AND t.f IN (2, 3) THEN 'Potential loyalist'
    WHEN t.r = 5 AND t.f = 1 THEN 'New'
    WHEN t.r = 4 AND t.f = 1 THEN 'Promising'
    WHEN t.r = 3 AND t.f = 3 THEN 'Need attention'
    WHEN t.r = 3 AND t.f <= 2 THEN 'About to sleep'
    WHEN t.r <= 2 AND t.f = 5 THEN 'Can''t lose them'
    WHEN t.r <= 2 AND t.f IN (3, 4) THEN 'At risk'
    WHEN t.r = 1 AND t.f = 1 THEN 'Lost'
    WHEN t.r IS NOT NULL THEN 'Hibernating'
END
"""


# What BG/NBD and Gamma-Gamma read of a buyer: repeat purchases, recency and age in days, and
# the mean order value; from customer_values columns.
SUMMARY_COLUMNS = """order_count - 1,
       extract(epoch FROM last_purchase_at - first_purchase_at) / 86400,
       extract(epoch FROM CAST(:now AS timestamptz) - first_purchase_at) / 86400,
       total_spend / nullif(order_count, 0)"""


def _edges_below(edges: str, figure: str) -> str:
    """How many of the four quintile edges lie below the figure."""
    return "(" + " + ".join(f"({edges}[{i}] < {figure})::int" for i in range(1, 5)) + ")"


# `tier.changed`, over the tier_changes row of the change.
TIER_CHANGED: Payload[TierChange] = Payload(
    (column("customer_id"), column("from_tier"), column("to_tier"), column("reason")), model=data_model("tier.changed")
)
_TIER_EVENTS = outbox.emit_rows_sql(
    f"(SELECT guanxi_uuid7() AS id, {TIER_CHANGED.sql('c')} AS data FROM changes c)",
    workspace_id=":ws",
    event_type="'tier.changed'",
    at="CAST(:now AS timestamptz)",
    actor="CAST(:actor AS jsonb)",
)


def _figures_sql(*, customers: str | None) -> str:
    """Aggregate, score, tier and upsert; record tier changes and emit their events. A whole
    workspace (`customers` None) is scored against quintile edges computed in the same statement;
    some customers (`customers` the condition on their id) against the stored edges of the last
    full pass."""
    only = f"AND o.customer_id {customers}" if customers else ""
    # Every named customer, orders or not: one whose last order moved away gets zeros rather than
    # keeping the figures of orders it no longer has. Order writes name both customers of a move.
    targets = (
        f"SELECT c.id AS customer_id FROM customers c WHERE c.workspace_id = :ws AND c.id {customers}"
        if customers
        else "SELECT DISTINCT o.customer_id FROM orders o WHERE o.workspace_id = :ws"
    )
    if customers:
        edges = """edges AS (
    SELECT CAST(:r_edges AS float8[]) AS r_e, CAST(:f_edges AS float8[]) AS f_e,
           CAST(:m_edges AS float8[]) AS m_e, CAST(:has_edges AS boolean) AS ok
)"""
    else:
        edges = """edges AS (
    SELECT percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8])
               WITHIN GROUP (ORDER BY extract(epoch FROM CAST(:now AS timestamptz) - last_at) / 86400) AS r_e,
           percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY n) AS f_e,
           percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY spend) AS m_e,
           count(*) > 0 AS ok
    FROM agg WHERE n > 0
)"""
    # A whole-workspace pass keeps each stored row's favourite categories and ranks them only for
    # customers without a figures row: they change only with the customer's orders, and every path
    # that changes orders refreshes that customer here (orders, order imports, merges). Ranking ten
    # million order lines was half of the nightly pass.
    ranked_only = (
        ""
        if customers
        else "AND NOT EXISTS (SELECT 1 FROM customer_values s "
        "WHERE s.workspace_id = :ws AND s.customer_id = c.customer_id)"
    )
    favourites = "excluded.favourite_categories" if customers else "v.favourite_categories"
    return f"""
WITH targets AS (
    {targets}
),
counted AS (
    SELECT o.customer_id, o.id, o.ordered_at, o.total_amount - o.refunded_amount AS net
    FROM orders o
    WHERE o.workspace_id = :ws {only} AND o.status IN ('paid', 'partially_refunded')
),
agg AS (
    SELECT t.customer_id,
           min(c.ordered_at) AS first_at,
           max(c.ordered_at) AS last_at,
           count(c.id) AS n,
           coalesce(sum(c.net), 0) AS spend,
           coalesce(sum(c.net) FILTER (WHERE c.ordered_at >= w.window_start), 0) AS wspend,
           count(c.id) FILTER (WHERE c.ordered_at >= w.window_start) AS worders
    FROM targets t
    CROSS JOIN (
        SELECT CAST(:now AS timestamptz) - make_interval(days => CAST(:window AS integer)) AS window_start
    ) w
    LEFT JOIN counted c ON c.customer_id = t.customer_id
    GROUP BY t.customer_id
),
category_spend AS (
    SELECT c.customer_id, l.category, sum(l.quantity * l.unit_price) AS spend, count(DISTINCT l.order_id) AS orders
    FROM counted c JOIN order_lines l ON l.workspace_id = :ws AND l.order_id = c.id
    WHERE l.category IS NOT NULL {ranked_only}
    GROUP BY c.customer_id, l.category
),
cats AS (
    SELECT customer_id,
           jsonb_agg(jsonb_build_object('category', category, 'spend', trim_scale(spend)::text, 'orders', orders)
                     ORDER BY spend DESC, category) AS top
    FROM (
        SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY spend DESC, category) AS rn
        FROM category_spend
    ) ranked
    WHERE rn <= 3
    GROUP BY customer_id
),
{edges},
scored AS (
    -- A score counts the quintile edges below the figure. Plain comparisons, not a subquery over
    -- the edges: the RFM map below repeats r and f, and each repeat would run its subquery again.
    SELECT a.*,
           CASE WHEN a.n > 0 AND edges.ok THEN 5 - {_edges_below("edges.r_e", "a.recency_days")} END AS r,
           CASE WHEN a.n > 0 AND edges.ok THEN 1 + {_edges_below("edges.f_e", "a.n")} END AS f,
           CASE WHEN a.n > 0 AND edges.ok THEN 1 + {_edges_below("edges.m_e", "a.spend")} END AS m
    FROM (SELECT *, extract(epoch FROM CAST(:now AS timestamptz) - last_at) / 86400 AS recency_days FROM agg) a
    CROSS JOIN edges
),
tiered AS (
    SELECT s.*,
           (SELECT t.code FROM value_tiers t
            WHERE t.workspace_id = :ws
              AND (t.min_spend IS NULL OR s.wspend >= t.min_spend)
              AND (t.min_orders IS NULL OR s.worders >= t.min_orders)
              AND (t.max_recency_days IS NULL
                   OR s.last_at >= CAST(:now AS timestamptz) - make_interval(days => t.max_recency_days))
            ORDER BY t.rank LIMIT 1) AS tier
    FROM scored s
),
old AS (
    SELECT v.customer_id, v.tier FROM customer_values v
    WHERE v.workspace_id = :ws {f"AND v.customer_id {customers}" if customers else ""}
),
upserted AS (
    INSERT INTO customer_values AS v (
        workspace_id, customer_id, first_purchase_at, last_purchase_at, order_count, total_spend,
        avg_order_value, window_spend, window_orders, favourite_categories, avg_interval_days,
        predicted_next_purchase_at, recency_score, frequency_score, monetary_score, rfm_segment,
        tier, tier_since, prediction_due, updated_at
    )
    SELECT :ws, t.customer_id, t.first_at, t.last_at, t.n, t.spend,
           CASE WHEN t.n > 0 THEN round(t.spend / t.n, 4) END,
           t.wspend, t.worders, coalesce(cats.top, '[]'::jsonb),
           CASE WHEN t.n > 1 THEN extract(epoch FROM t.last_at - t.first_at) / 86400 / (t.n - 1) END,
           CASE WHEN t.n > 1 THEN t.last_at + (t.last_at - t.first_at) / (t.n - 1) END,
           t.r, t.f, t.m, {RFM_SEGMENT_SQL},
           t.tier, CAST(:now AS timestamptz), true, CAST(:now AS timestamptz)
    FROM tiered t LEFT JOIN cats ON cats.customer_id = t.customer_id
    ON CONFLICT (workspace_id, customer_id) DO UPDATE SET
        first_purchase_at = excluded.first_purchase_at,
        last_purchase_at = excluded.last_purchase_at,
        order_count = excluded.order_count,
        total_spend = excluded.total_spend,
        avg_order_value = excluded.avg_order_value,
        window_spend = excluded.window_spend,
        window_orders = excluded.window_orders,
        favourite_categories = {favourites},
        avg_interval_days = excluded.avg_interval_days,
        predicted_next_purchase_at = excluded.predicted_next_purchase_at,
        recency_score = excluded.recency_score,
        frequency_score = excluded.frequency_score,
        monetary_score = excluded.monetary_score,
        rfm_segment = excluded.rfm_segment,
        tier_since = CASE WHEN v.tier IS DISTINCT FROM excluded.tier THEN excluded.tier_since ELSE v.tier_since END,
        tier = excluded.tier,
        prediction_due = true,
        updated_at = excluded.updated_at
    -- A row whose figures are what they were is not rewritten: most rows of a nightly pass.
    WHERE (v.first_purchase_at, v.last_purchase_at, v.order_count, v.total_spend, v.avg_order_value,
           v.window_spend, v.window_orders, v.favourite_categories, v.avg_interval_days,
           v.predicted_next_purchase_at, v.recency_score, v.frequency_score, v.monetary_score, v.rfm_segment,
           v.tier)
          IS DISTINCT FROM
          (excluded.first_purchase_at, excluded.last_purchase_at, excluded.order_count, excluded.total_spend,
           excluded.avg_order_value, excluded.window_spend, excluded.window_orders, {favourites},
           excluded.avg_interval_days, excluded.predicted_next_purchase_at, excluded.recency_score,
           excluded.frequency_score, excluded.monetary_score, excluded.rfm_segment, excluded.tier)
    RETURNING v.customer_id, v.tier
),
changes AS (
    INSERT INTO tier_changes (workspace_id, id, customer_id, from_tier, to_tier, changed_at, reason)
    SELECT :ws, guanxi_uuid7(), u.customer_id, old.tier, u.tier, CAST(:now AS timestamptz), CAST(:reason AS text)
    FROM upserted u LEFT JOIN old ON old.customer_id = u.customer_id
    WHERE old.tier IS DISTINCT FROM u.tier
    RETURNING customer_id, from_tier, to_tier, reason
)
{_TIER_EVENTS}
"""


FIGURES_ONE = text(_figures_sql(customers="= :customer_id"))
FIGURES_SOME = text(_figures_sql(customers="= ANY(CAST(:customer_ids AS uuid[]))"))
FIGURES_ALL = text(_figures_sql(customers=None))
# The per-order path runs on the driver connection: the statements are long, and SQLAlchemy's
# handling of a text statement with a dozen parameters costs as much as running it.
_FIGURES_ONE = PreparedStatement(FIGURES_ONE)
_FIGURES_SOME = PreparedStatement(FIGURES_SOME)
_CLEAR = PreparedStatement(
    text(
        "UPDATE customer_values SET prediction_due = false, "
        "expected_purchases_365 = CASE WHEN order_count > 0 THEN expected_purchases_365 END, "
        "ltv_predicted = CASE WHEN order_count > 0 THEN ltv_predicted END "
        "WHERE workspace_id = :ws AND customer_id = ANY(CAST(:ids AS uuid[]))"
    )
)
_PREDICTIONS = PreparedStatement(
    text(
        """
UPDATE customer_values v SET expected_purchases_365 = p.purchases, ltv_predicted = round(p.ltv::numeric, 4),
                             -- Still due when an order changed the row after it was read (the
                             -- nightly refit reads without locks): its prediction follows.
                             prediction_due = v.updated_at IS DISTINCT FROM p.read_at
FROM unnest(CAST(:ids AS uuid[]), CAST(:read_at AS timestamptz[]), CAST(:purchases AS float8[]),
            CAST(:ltv AS float8[]))
     AS p(customer_id, read_at, purchases, ltv)
WHERE v.workspace_id = :ws AND v.customer_id = p.customer_id
"""
    )
)


class ValueSettings(Protocol):
    """What scoring and prediction read of a workspace's value model row."""

    @property
    def tier_window_days(self) -> int: ...
    @property
    def recency_edges(self) -> list[float] | None: ...
    @property
    def frequency_edges(self) -> list[float] | None: ...
    @property
    def monetary_edges(self) -> list[float] | None: ...
    @property
    def bgnbd(self) -> dict[str, Any] | None: ...
    @property
    def gamma_gamma(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class _StoredSettings:
    tier_window_days: int
    recency_edges: list[float] | None
    frequency_edges: list[float] | None
    monetary_edges: list[float] | None
    bgnbd: dict[str, Any] | None
    gamma_gamma: dict[str, Any] | None


_SETTINGS = PreparedStatement(
    select(
        ValueModel.tier_window_days,
        ValueModel.recency_edges,
        ValueModel.frequency_edges,
        ValueModel.monetary_edges,
        ValueModel.bgnbd,
        ValueModel.gamma_gamma,
    ).where(ValueModel.workspace_id == bindparam("ws"))
)


async def _settings(session: AsyncSession, workspace_id: uuid.UUID) -> ValueSettings:
    """The model row's columns without the ORM (a per-order read); the row is created on first use.
    A row this session loaded is used as it is: it may hold changes not flushed yet."""
    loaded = session.identity_map.get(identity_key(ValueModel, workspace_id))
    if isinstance(loaded, ValueModel):
        return loaded
    row = await _SETTINGS.fetchrow(session, {"ws": workspace_id})
    if row is None:
        return await model_for(session, workspace_id)
    return _StoredSettings(
        tier_window_days=row[0],
        recency_edges=row[1],
        frequency_edges=row[2],
        monetary_edges=row[3],
        bgnbd=_json(row[4]),
        gamma_gamma=_json(row[5]),
    )


def _json(value: Any) -> dict[str, Any] | None:
    # The driver hands JSON columns over as text.
    decoded = orjson.loads(value) if isinstance(value, str | bytes) else value
    return cast(dict[str, Any] | None, decoded)


EDGES_SQL = text(
    """
SELECT percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8])
           WITHIN GROUP (ORDER BY extract(epoch FROM CAST(:now AS timestamptz) - last_purchase_at) / 86400),
       percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY order_count),
       percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY total_spend)
FROM customer_values WHERE workspace_id = :ws AND order_count > 0
"""
)


async def model_for(session: AsyncSession, workspace_id: uuid.UUID) -> ValueModel:
    """The workspace's value model row, and the default A/B/C tiers, created on first use."""
    model = await session.get(ValueModel, workspace_id)
    if model is not None:
        return model
    await session.execute(insert(ValueModel).values(workspace_id=workspace_id).on_conflict_do_nothing())
    if not await _has_tiers(session, workspace_id):
        now = clock.now()
        rows = [
            {
                "workspace_id": workspace_id,
                "id": new_id(),
                "code": code,
                "name": name,
                "rank": rank,
                "min_spend": spend,
                "min_orders": orders,
                "max_recency_days": recency,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            for code, name, rank, spend, orders, recency in DEFAULT_TIERS
        ]
        await session.execute(insert(ValueTier).values(rows).on_conflict_do_nothing())
    model = await session.get(ValueModel, workspace_id)
    assert model is not None
    return model


async def _has_tiers(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    return (
        await session.scalar(select(ValueTier.id).where(ValueTier.workspace_id == workspace_id).limit(1))
    ) is not None


def _params(model: ValueSettings, ctx: Caller, *, now: datetime, reason: str) -> dict[str, Any]:
    has_edges = model.recency_edges is not None
    return {
        "ws": ctx.workspace_id,
        "now": now,
        "window": model.tier_window_days,
        "has_edges": has_edges,
        "r_edges": model.recency_edges or [],
        "f_edges": model.frequency_edges or [],
        "m_edges": model.monetary_edges or [],
        "reason": reason,
        "actor": orjson.dumps(ctx.actor).decode(),
    }


async def refresh_customer(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> None:
    """After an order change: this customer's figures, scores and tier, in the order's transaction.
    The row is marked for the worker, which rewrites its lifetime-value prediction (`predict_due`)."""
    model = await _settings(session, ctx.workspace_id)
    params = {**_params(model, ctx, now=clock.now(), reason="order"), "customer_id": customer_id}
    await _FIGURES_ONE.execute(session, params)


async def refresh_customers(session: AsyncSession, ctx: Caller, customer_ids: Sequence[uuid.UUID]) -> None:
    """After a load of orders: the same as `refresh_customer`, in one pass over all their customers."""
    if not customer_ids:
        return
    model = await _settings(session, ctx.workspace_id)
    params = {**_params(model, ctx, now=clock.now(), reason="order"), "customer_ids": list(customer_ids)}
    await _FIGURES_SOME.execute(session, params)


async def recompute_workspace(session: AsyncSession, ctx: Caller) -> float | None:
    """The full pass: figures for every customer with orders, new quintile edges, scores against
    them, and tiers. Returns the seconds it took, or None when another worker is already
    recomputing this workspace. The lifetime-value refit is `refit_lifetime_value`, in a
    transaction of its own after this one commits, so the figures' row locks are held only as
    long as the figures take."""
    lock = func.hashtextextended(f"value-recompute:{ctx.workspace_id}", 0)
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(lock))):
        return None
    started = time.perf_counter()
    model = await model_for(session, ctx.workspace_id)
    now = clock.now()
    await session.execute(FIGURES_ALL, _params(model, ctx, now=now, reason="recompute"))
    # Kept for per-order updates, which score one customer against the same edges.
    edges = (await session.execute(EDGES_SQL, {"ws": ctx.workspace_id, "now": now})).one()
    if edges[0] is not None:
        model.recency_edges, model.frequency_edges, model.monetary_edges = (
            [float(v) for v in edges[0]],
            [float(v) for v in edges[1]],
            [float(v) for v in edges[2]],
        )
    model.recompute_requested_at = None
    model.recomputed_at = now
    model.recompute_seconds = round(time.perf_counter() - started, 3)
    return model.recompute_seconds


async def refit_lifetime_value(session: AsyncSession, ctx: Caller) -> bool:
    """BG/NBD and Gamma-Gamma refitted on the committed figures, and every buyer's prediction
    rewritten. False when another worker is refitting this workspace."""
    lock = func.hashtextextended(f"value-refit:{ctx.workspace_id}", 0)
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(lock))):
        return False
    model = await model_for(session, ctx.workspace_id)
    await _fit_and_predict(session, ctx.workspace_id, model, clock.now())
    return True


async def request_recompute(session: AsyncSession, ctx: Caller) -> datetime:
    model = await model_for(session, ctx.workspace_id)
    model.recompute_requested_at = clock.now()
    await outbox.wake_workers(session)
    return model.recompute_requested_at


async def due_recomputes(session: AsyncSession, *, now: datetime) -> list[uuid.UUID]:
    """Workspaces with a requested recompute, or none in the last 24 hours while they have orders."""
    rows = await session.execute(
        text(
            """
SELECT m.workspace_id FROM value_models m
WHERE m.recompute_requested_at IS NOT NULL
   OR m.recomputed_at IS NULL OR m.recomputed_at < CAST(:now AS timestamptz) - interval '24 hours'
"""
        ),
        {"now": now},
    )
    return [row[0] for row in rows]


@dataclass(frozen=True)
class _Summaries:
    """Buyers' BG/NBD and Gamma-Gamma inputs, with each row's `updated_at` as it was read."""

    ids: list[uuid.UUID]
    read_at: list[datetime]
    x: np.ndarray
    t_x: np.ndarray
    age: np.ndarray
    m: np.ndarray


async def _summaries(session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> _Summaries:
    statement = text(
        f"SELECT customer_id, updated_at, {SUMMARY_COLUMNS} FROM customer_values "
        "WHERE workspace_id = :ws AND order_count > 0"
    )
    return _summary_arrays((await session.execute(statement, {"ws": workspace_id, "now": now})).all())


def _summary_arrays(rows: Sequence[Sequence[Any]]) -> _Summaries:
    """Rows of (customer_id, updated_at, x, t_x, age, m)."""
    columns = np.array([[float(v) for v in row[2:6]] for row in rows], dtype=np.float64).reshape(-1, 4)
    return _Summaries(
        ids=[row[0] for row in rows],
        read_at=[row[1] for row in rows],
        x=columns[:, 0],
        t_x=columns[:, 1],
        age=columns[:, 2],
        m=columns[:, 3],
    )


async def _fit_and_predict(session: AsyncSession, workspace_id: uuid.UUID, model: ValueModel, now: datetime) -> None:
    summaries = await _summaries(session, workspace_id, now)
    x, t_x, age, m = summaries.x, summaries.t_x, summaries.age, summaries.m
    if len(summaries.ids) < MIN_CUSTOMERS_TO_FIT or int((x > 0).sum()) < MIN_CUSTOMERS_TO_FIT:
        model.bgnbd = model.gamma_gamma = None
        return
    bgnbd = lifetime_value.fit_bgnbd(x, t_x, np.maximum(age, t_x))
    gamma_gamma = lifetime_value.fit_gamma_gamma(x, m)
    model.bgnbd = {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b}
    model.gamma_gamma = {"p": gamma_gamma.p, "q": gamma_gamma.q, "v": gamma_gamma.v, "mean": float(m.mean())}
    await session.flush()
    await _write_predictions(session, workspace_id, model, summaries)


async def due_predictions(session: AsyncSession) -> list[uuid.UUID]:
    """Workspaces with figures rows whose prediction is due."""
    rows = await session.execute(text("SELECT DISTINCT workspace_id FROM customer_values WHERE prediction_due"))
    return [row[0] for row in rows]


PREDICTION_BATCH = 5_000
_DUE = PreparedStatement(
    text(
        f"""
SELECT customer_id, updated_at, {SUMMARY_COLUMNS}, order_count
FROM customer_values WHERE workspace_id = :ws AND prediction_due
ORDER BY customer_id LIMIT :batch FOR UPDATE SKIP LOCKED
"""
    )
)


async def predict_due(session: AsyncSession, workspace_id: uuid.UUID, *, batch: int = PREDICTION_BATCH) -> int:
    """One batch of due predictions, written and unmarked; returns how many rows it took. The rows
    are locked until the caller commits, so an order changing one meanwhile marks it again after."""
    rows = await _DUE.fetch(session, {"ws": workspace_id, "now": clock.now(), "batch": batch})
    if not rows:
        return 0
    model = await _settings(session, workspace_id)
    buyers = [row for row in rows if row["order_count"] > 0]
    if buyers and model.bgnbd and model.gamma_gamma:
        await _write_predictions(session, workspace_id, model, _summary_arrays(buyers))
        written = {row[0] for row in buyers}
    else:
        written = set()
    # No purchases left, or no fitted model yet: nothing to predict from.
    rest = [row[0] for row in rows if row[0] not in written]
    if rest:
        await _CLEAR.execute(session, {"ws": workspace_id, "ids": rest})
    return len(rows)


async def _write_predictions(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    model: ValueSettings,
    summaries: _Summaries,
) -> None:
    assert model.bgnbd is not None and model.gamma_gamma is not None
    x, t_x, age, m = summaries.x, summaries.t_x, summaries.age, summaries.m
    bgnbd = lifetime_value.BgNbd(**model.bgnbd)
    gg = model.gamma_gamma
    gamma_gamma = lifetime_value.GammaGamma(p=gg["p"], q=gg["q"], v=gg["v"])
    purchases = bgnbd.expected_purchases(PREDICTION_DAYS, x, t_x, np.maximum(age, t_x))
    value = gamma_gamma.expected_value(x, m, population_mean=gg["mean"])
    ltv = np.nan_to_num(purchases * value, nan=0.0)
    await _PREDICTIONS.execute(
        session,
        {
            "ws": workspace_id,
            "ids": summaries.ids,
            "read_at": summaries.read_at,
            "purchases": np.nan_to_num(purchases).tolist(),
            "ltv": ltv.tolist(),
        },
    )


async def get_value(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> dict[str, Any]:
    await require_visible(session, ctx, customer_id)
    value = await session.get(CustomerValue, (ctx.workspace_id, customer_id))
    currency = await workspaces.currency(session, ctx.workspace_id)
    if value is None:
        return _empty(customer_id, currency)

    def money(amount: Decimal | None) -> str | None:
        return None if amount is None else money_text(amount, currency)

    return {
        "customer_id": customer_id,
        "first_purchase_at": value.first_purchase_at,
        "last_purchase_at": value.last_purchase_at,
        "order_count": value.order_count,
        "total_spend": money(value.total_spend),
        "avg_order_value": money(value.avg_order_value),
        "favourite_categories": [
            {**share, "spend": money(Decimal(share["spend"]))} for share in value.favourite_categories
        ],
        "avg_interval_days": value.avg_interval_days,
        "predicted_next_purchase_at": value.predicted_next_purchase_at,
        "recency_score": value.recency_score,
        "frequency_score": value.frequency_score,
        "monetary_score": value.monetary_score,
        "rfm_segment": value.rfm_segment,
        "ltv_historical": money(value.total_spend),
        "expected_purchases_365": value.expected_purchases_365,
        "ltv_predicted": money(value.ltv_predicted),
        "tier": value.tier,
        "tier_since": value.tier_since,
        "updated_at": value.updated_at,
    }


def _empty(customer_id: uuid.UUID, currency: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "first_purchase_at": None,
        "last_purchase_at": None,
        "order_count": 0,
        "total_spend": money_text(Decimal(0), currency),
        "avg_order_value": None,
        "favourite_categories": [],
        "avg_interval_days": None,
        "predicted_next_purchase_at": None,
        "recency_score": None,
        "frequency_score": None,
        "monetary_score": None,
        "rfm_segment": None,
        "ltv_historical": money_text(Decimal(0), currency),
        "expected_purchases_365": None,
        "ltv_predicted": None,
        "tier": None,
        "tier_since": None,
        "updated_at": None,
    }
