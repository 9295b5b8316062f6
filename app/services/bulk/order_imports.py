"""Order imports: one row per order line; the rows sharing (source, external_id) are one order,
idempotent by that key as POST /orders is.

The lines of an order may lie anywhere in the file, so the worker first copies every row into a
staging table, then takes the orders a page at a time. Each order is checked with the API's own
schema and amount rules (its rows must agree on the order's fields; one bad row rejects the whole
order), and the page is merged set-based in one transaction: orders created, or in upsert mode
updated where a field or a line differs, with their lines, `order.created` / `order.updated`
events and audit entries, and their fulfilment through the API's one writer (a move it refuses
rejects the order); then the value figures, tier and lifecycle stage of every customer the
page touched, in one pass over them all, as the per-order path keeps them."""

from collections.abc import Sequence
from decimal import Decimal
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.wire import currency_places, utc_text_sql
from app.models import ImportJob, Workspace
from app.schemas.order import OrderIn, OrderLineIn
from app.services.bulk import record_imports
from app.services.bulk.imports import Progress
from app.services.bulk.record_imports import CUSTOMER_KEYS, Loc, Problem, as_is, as_text, changes_sql
from app.services.events import audit, outbox
from app.services.loyalty import points
from app.services.segments import lifecycle
from app.services.value import customer_values, fulfilment, orders

BATCH = 5000
ORDERS_PER_PAGE = 1000
HEADER_FIELDS = (
    "ordered_at",
    "status",
    "currency",
    "total_amount",
    "refunded_amount",
    "channel",
    "store",
    "fulfilment_status",
    "tracking_reference",
)
LINE_FIELDS = tuple(OrderLineIn.model_fields)
FIELDS = (*CUSTOMER_KEYS, "source", "external_id", *HEADER_FIELDS, *LINE_FIELDS)
# A file has an order's lines one per row; without a currency it is the workspace's, without a
# total the lines' sum.
_FILLED = {"customer_id", "currency", "total_amount", "lines"}
REQUIRED = (
    *(name for name, field in OrderIn.model_fields.items() if field.is_required() and name not in _FILLED),
    *(name for name, field in OrderLineIn.model_fields.items() if field.is_required()),
)
_DEFAULT_SOURCE = str(OrderIn.model_fields["source"].default)
_AGREED = (*CUSTOMER_KEYS, *HEADER_FIELDS)  # every row of an order that has one of these must have the same
_CELLS = (*_AGREED, *LINE_FIELDS)

CREATE_LINES = (
    "CREATE TEMP TABLE order_import_lines (row_number int, source text, external_id text, rejected boolean, "
    + ", ".join(f"{name} text" for name in _CELLS)
    + ")"
)
LINE_COLUMNS = ["row_number", "source", "external_id", "rejected", *_CELLS]
PAGE_SQL = """
WITH page AS (
    SELECT DISTINCT source, external_id FROM order_import_lines
    WHERE (source, external_id) > ($1, $2)
    ORDER BY source, external_id
    LIMIT $3
)
SELECT l.* FROM order_import_lines l JOIN page USING (source, external_id)
ORDER BY l.source, l.external_id, l.row_number
"""

STAGE_COLUMNS = (
    ("source", "text"),
    ("external_id", "text"),
    ("customer_id", "uuid"),
    ("ordered_at", "timestamptz"),
    ("status", "text"),
    ("currency", "text"),
    ("total_amount", "numeric"),
    ("refunded_amount", "numeric"),
    ("channel", "text"),
    ("store", "text"),
    ("fulfilment_status", "text"),
    ("tracking_reference", "text"),
    ("row_numbers", "int[]"),
)
STAGE_EXTRA = (
    "order_id uuid",
    "previous_customer_id uuid",
    "created boolean NOT NULL DEFAULT false",
    "changes jsonb",  # upserts only: {field: {before, after}} against the stored order
)
STAGE_LINE_COLUMNS = (
    ("source", "text"),
    ("external_id", "text"),
    ("line_no", "int"),
    ("sku", "text"),
    ("product_name", "text"),
    ("category", "text"),
    ("quantity", "numeric"),
    ("unit_price", "numeric"),
)

_ORDER_FIELDS = (
    ("customer_id", as_is),
    ("ordered_at", utc_text_sql),
    ("status", as_is),
    ("currency", as_is),
    ("total_amount", as_text),
    ("refunded_amount", as_text),
    ("channel", as_is),
    ("store", as_is),
)
CLASSIFY_SQL = text(
    f"""
WITH existing AS (
    SELECT o.* FROM orders o
    JOIN order_import_stage s ON o.workspace_id = :ws AND o.source = s.source AND o.external_id = s.external_id
    FOR UPDATE OF o
),
old_lines AS (
    SELECT l.order_id,
           array_agg(ROW(l.sku::text, l.product_name::text, l.category::text, l.quantity::numeric,
                         l.unit_price::numeric) ORDER BY l.line_no) AS lines
    FROM order_lines l JOIN existing e ON l.workspace_id = :ws AND l.order_id = e.id
    GROUP BY l.order_id
),
new_lines AS (
    SELECT source, external_id, count(*) AS n,
           array_agg(ROW(sku, product_name, category, quantity, unit_price) ORDER BY line_no) AS lines
    FROM order_import_stage_lines
    GROUP BY source, external_id
)
UPDATE order_import_stage s
SET order_id = e.id, previous_customer_id = e.customer_id,
    changes = {changes_sql((name, f"e.{name}", f"s.{name}", render) for name, render in _ORDER_FIELDS)}
              || CASE WHEN ol.lines IS DISTINCT FROM nl.lines
                      THEN jsonb_build_object('lines', jsonb_build_object('before', NULL, 'after', nl.n))
                      ELSE '{{}}'::jsonb END
FROM existing e
LEFT JOIN old_lines ol ON ol.order_id = e.id
JOIN new_lines nl ON nl.source = e.source AND nl.external_id = e.external_id
WHERE e.source = s.source AND e.external_id = s.external_id
"""
)
UPDATE_SQL = text(
    f"""
UPDATE orders o SET {", ".join(f"{name} = s.{name}" for name, _ in _ORDER_FIELDS)},
    version = o.version + 1, updated_at = :now
FROM order_import_stage s
WHERE o.workspace_id = :ws AND o.id = s.order_id AND s.changes <> '{{}}'::jsonb
"""
)
DELETE_LINES_SQL = text(
    """
DELETE FROM order_lines l USING order_import_stage s
WHERE l.workspace_id = :ws AND l.order_id = s.order_id AND s.changes -> 'lines' IS NOT NULL
"""
)
INSERT_SQL = text(
    """
WITH created AS (
    INSERT INTO orders (workspace_id, id, customer_id, source, external_id, ordered_at, status, currency,
                        total_amount, refunded_amount, channel, store, created_at, updated_at, version)
    SELECT :ws, guanxi_uuid7(), customer_id, source, external_id, ordered_at, status, currency, total_amount,
           refunded_amount, channel, store, :now, :now, 1
    FROM order_import_stage WHERE order_id IS NULL
    ON CONFLICT DO NOTHING
    RETURNING id, source, external_id
)
UPDATE order_import_stage s SET order_id = c.id, created = true
FROM created c WHERE s.source = c.source AND s.external_id = c.external_id
"""
)
LINES_SQL = text(
    """
INSERT INTO order_lines (workspace_id, id, order_id, line_no, sku, product_name, category, quantity, unit_price)
SELECT :ws, guanxi_uuid7(), s.order_id, l.line_no, l.sku, l.product_name, l.category, l.quantity, l.unit_price
FROM order_import_stage s
JOIN order_import_stage_lines l ON l.source = s.source AND l.external_id = s.external_id
WHERE s.created OR s.changes -> 'lines' IS NOT NULL
"""
)
# Per written order: `order.created`, or `order.updated` with the fields that changed, and the audit
# entry the per-order path writes.
_CHANGED_FIELDS = """(SELECT jsonb_agg(k ORDER BY k COLLATE "C") FROM jsonb_object_keys(w.changes) k)"""
_WRITTEN = """written w JOIN orders o ON o.workspace_id = :ws AND o.id = w.order_id"""
_EVENTS = {
    event_type: outbox.emit_rows_sql(
        f"(SELECT guanxi_uuid7() AS id, {payload} AS data FROM {_WRITTEN} WHERE {'' if created else 'NOT '}w.created)",
        workspace_id=":ws",
        event_type=f"'{event_type}'",
        at="CAST(:now AS timestamptz)",
        actor="CAST(:actor AS jsonb)",
    )
    for event_type, payload, created in (
        ("order.created", orders.ORDER_EVENT.sql("o"), True),
        ("order.updated", orders.ORDER_CHANGED_EVENT.sql("o", changed_fields=_CHANGED_FIELDS), False),
    )
}
_AUDITED = audit.record_rows_sql(
    """(
    SELECT CAST(:ws AS uuid) AS workspace_id, 'order' AS entity_type, order_id AS entity_id,
           CASE WHEN created THEN 'created' ELSE 'updated' END AS action, CAST(:actor_type AS text) AS actor_type,
           CAST(:actor_id AS uuid) AS actor_id, CASE WHEN created THEN '{}'::jsonb ELSE changes END AS changes,
           CAST(:now AS timestamptz) AS occurred_at
    FROM written
)"""
)
RECORD_SQL = text(
    f"""
WITH written AS (
    SELECT order_id, created, changes FROM order_import_stage
    WHERE created OR changes <> '{{}}'::jsonb
),
created_events AS (
    {_EVENTS["order.created"]}
),
updated_events AS (
    {_EVENTS["order.updated"]}
)
{_AUDITED}
"""
)
# The orders whose fulfilment the page sets: every new one (its first status), and stored ones the file moves.
FULFILMENT_SQL = text(
    """
SELECT order_id, created, status, fulfilment_status, tracking_reference FROM order_import_stage
WHERE created OR (order_id IS NOT NULL AND (fulfilment_status IS NOT NULL OR tracking_reference IS NOT NULL))
"""
)
# The orders the page created or changed: their points are earned or taken back with them.
WRITTEN_SQL = text("SELECT order_id FROM order_import_stage WHERE created OR changes <> '{}'::jsonb")
SUMMARY_SQL = text(
    """
SELECT coalesce(sum(cardinality(row_numbers)) FILTER (WHERE created), 0),
       coalesce(sum(cardinality(row_numbers)) FILTER (
           WHERE NOT created AND (changes <> '{}'::jsonb OR order_id = ANY (CAST(:moved AS uuid[])))), 0),
       ARRAY(SELECT customer_id FROM order_import_stage WHERE created OR changes <> '{}'::jsonb
             UNION
             SELECT previous_customer_id FROM order_import_stage WHERE NOT created AND changes <> '{}'::jsonb)
FROM order_import_stage
"""
)


def check_mapping(mapping: dict[str, str]) -> None:
    """A customer key, the order's id and date, and the line's product, quantity and price."""
    record_imports.check_mapping(mapping, FIELDS, REQUIRED)


async def run(
    conn: asyncpg.Connection, session: AsyncSession, job: ImportJob, on_progress: Progress | None = None
) -> None:
    """Process a job to its end: read the file into a staging table on `conn`, then merge a page
    of orders per transaction on `session`, which holds the job row (its counters are written with
    each commit)."""
    ctx = await record_imports.uploader(session, job)
    workspace = await session.get(Workspace, ctx.workspace_id)
    assert workspace is not None
    pages = _Pages(ctx, job, workspace.currency, ZoneInfo(workspace.timezone))
    # A job that failed on this pooled connection may have left its table behind.
    await conn.execute("DROP TABLE IF EXISTS order_import_lines")
    await conn.execute(CREATE_LINES)
    try:
        if not await _read(conn, session, job, on_progress):
            job.status = "cancelled"
            return
        await conn.execute("CREATE INDEX ON order_import_lines (source, external_id, row_number)")
        await conn.execute("ANALYZE order_import_lines")
        after = ("", "")
        while rows := await conn.fetch(PAGE_SQL, *after, ORDERS_PER_PAGE):
            after = (rows[-1]["source"], rows[-1]["external_id"])
            await pages.merge(session, rows)
            if on_progress:
                on_progress(job)
            if await record_imports.cancel_requested(session, job):
                job.status = "cancelled"
                return
    finally:
        await conn.execute("DROP TABLE IF EXISTS order_import_lines")


async def _read(conn: asyncpg.Connection, session: AsyncSession, job: ImportJob, on_progress: Progress | None) -> bool:
    """Stage every row that names its order (flagged when it is rejected, so its order is too) and
    report the rows that cannot be read. False when the job was cancelled meanwhile."""
    columns = record_imports.columns_of(job.mapping)
    staged: list[tuple[Any, ...]] = []
    problems: list[Problem] = []
    for number, cells in record_imports.read_rows(job):
        job.rows_read += 1
        values, row_problems = record_imports.field_values(cells, job.mapping, number)
        if "external_id" not in values and not any(column == columns["external_id"] for _, column, _ in row_problems):
            row_problems.append((number, columns["external_id"], "external_id is required: it names the order"))
        if row_problems:
            job.failed += 1
            problems += row_problems
        if "external_id" in values:
            source = values.get("source", _DEFAULT_SOURCE)
            staged.append((number, source, values["external_id"], bool(row_problems), *map(values.get, _CELLS)))
        if job.rows_read % BATCH == 0:
            await _flush(conn, session, job, staged, problems)
            staged, problems = [], []
            if on_progress:
                on_progress(job)
            if await record_imports.cancel_requested(session, job):
                return False
    await _flush(conn, session, job, staged, problems)
    return True


async def _flush(
    conn: asyncpg.Connection,
    session: AsyncSession,
    job: ImportJob,
    staged: list[tuple[Any, ...]],
    problems: list[Problem],
) -> None:
    if staged:
        await conn.copy_records_to_table("order_import_lines", records=staged, columns=LINE_COLUMNS)
    await record_imports.record_problems(session, job, problems)
    await session.commit()


class _Order:
    """The rows of one order, the order's fields they agree on, and what is wrong with them."""

    def __init__(self, key: tuple[str, str], rows: list[asyncpg.Record], columns: dict[str, str]) -> None:
        self.source, self.external_id = key
        self.rows = rows
        self.columns = columns
        self.problems: list[Problem] = []
        self.fields: dict[str, str] = {}
        self.field_rows: dict[str, int] = {}
        for row in rows:
            for name in _AGREED:
                value = row[name]
                if value is None:
                    continue
                if name not in self.fields:
                    self.fields[name], self.field_rows[name] = value, row["row_number"]
                elif value != self.fields[name]:
                    self.problems.append(
                        (
                            row["row_number"],
                            columns[name],
                            f"differs from row {self.field_rows[name]} of order {self.external_id}",
                        )
                    )
        self.refs, ref_problems = record_imports.customer_refs(
            self.fields, columns, rows[0]["row_number"], self.field_rows
        )
        self.problems += ref_problems
        self.rejected_rows = [row["row_number"] for row in rows if row["rejected"]]

    def where(self, loc: Loc) -> tuple[int, str]:
        """The row and column of an error in the order as the API's schema sees it."""
        if len(loc) >= 3 and loc[0] == "lines" and isinstance(loc[1], int) and loc[1] < len(self.rows):
            field = str(loc[2])
            return self.rows[loc[1]]["row_number"], self.columns.get(field, field)
        field = str(loc[0]) if loc and loc[0] != "lines" else "external_id"
        return self.field_rows.get(field, self.rows[0]["row_number"]), self.columns.get(field, field)

    def rejection(self) -> list[Problem]:
        """Its problems, and a pointer to them on every other row: the order goes in whole or not at all."""
        first = min([number for number, _, _ in self.problems] + self.rejected_rows)
        reported = {number for number, _, _ in self.problems} | set(self.rejected_rows)
        reason = f"order {self.external_id} is rejected: see row {first}"
        return self.problems + [
            (row["row_number"], self.columns["external_id"], reason)
            for row in self.rows
            if row["row_number"] not in reported
        ]


class _Pages:
    """Checks and merges the orders of one page."""

    def __init__(self, ctx: Caller, job: ImportJob, currency: str, zone: ZoneInfo) -> None:
        self.ctx, self.job, self.currency, self.zone = ctx, job, currency, zone
        self.places = currency_places(currency)
        self.columns = record_imports.columns_of(job.mapping)

    async def merge(self, session: AsyncSession, rows: Sequence[asyncpg.Record]) -> None:
        """One transaction: find the customers, check the orders, write the valid ones, keep the rest."""
        page = [
            _Order(key, list(group), self.columns)
            for key, group in groupby(rows, key=lambda row: (row["source"], row["external_id"]))
        ]
        found = await record_imports.find_customers(session, self.ctx, (order.refs for order in page))
        valid: list[tuple[_Order, OrderIn]] = []
        rejected: list[Problem] = []
        for order in page:
            data = self._check(order, found)
            if data is None:
                rejected += order.rejection()
                self.job.failed += len(order.rows) - len(order.rejected_rows)
            else:
                valid.append((order, data))
        if valid and self.job.mode == "upsert":
            valid = await self._allowed_moves(session, valid, rejected)
        if valid:
            await self._write(session, valid)
        await record_imports.record_problems(session, self.job, rejected)
        await session.commit()

    async def _allowed_moves(
        self, session: AsyncSession, valid: list[tuple[_Order, OrderIn]], rejected: list[Problem]
    ) -> list[tuple[_Order, OrderIn]]:
        """The orders whose fulfilment move is allowed from their stored status; the others are
        rejected whole, as the API refuses them."""
        moving = [(order.source, order.external_id) for order, data in valid if data.fulfilment_status]
        current = await fulfilment.current_by_key(session, self.ctx, moving)
        allowed = []
        for order, data in valid:
            stored = current.get((order.source, order.external_id))
            problem = fulfilment.refusal(stored, data.fulfilment_status) if stored and data.fulfilment_status else None
            if problem is None:
                allowed.append((order, data))
                continue
            moves = ", ".join(problem.extra["allowed"]) or "none"
            where = order.field_rows["fulfilment_status"], self.columns["fulfilment_status"]
            order.problems.append((*where, f"{problem.detail} Allowed: {moves}."))
            rejected += order.rejection()
            self.job.failed += len(order.rows) - len(order.rejected_rows)
        return allowed

    def _check(self, order: _Order, found: dict[tuple[str, str], Any]) -> OrderIn | None:
        """The order as the API's OrderIn and amount rules take it, or None with its problems noted."""
        customer_id = None
        if not order.problems:
            customer_id, problems = record_imports.customer_of(
                order.refs, found, self.columns, order.rows[0]["row_number"], order.field_rows
            )
            order.problems += problems
        lines = [{name: row[name] for name in LINE_FIELDS if row[name] is not None} for row in order.rows]
        data: dict[str, Any] = {
            "source": order.source,
            "external_id": order.external_id,
            "currency": self.currency,
            "total_amount": _lines_total(lines, self.places),
            **{name: order.fields[name] for name in HEADER_FIELDS if name in order.fields},
            "lines": lines,
        }
        if customer_id is not None:
            data["customer_id"] = customer_id
        if "ordered_at" in data:
            data["ordered_at"] = record_imports.wall_clock(data["ordered_at"], self.zone)
        try:
            parsed = OrderIn.model_validate(data)
            orders.check_amounts(parsed, self.currency)
        except (ValidationError, ValidationFailed) as exc:
            # A row rejected on reading has been reported already; its blanked cells would only repeat it.
            order.problems += [
                problem
                for problem in record_imports.schema_problems(record_imports.validation_errors(exc), order.where)
                if problem[0] not in order.rejected_rows
            ]
        if order.problems or order.rejected_rows or customer_id is None:
            return None
        return parsed

    async def _write(self, session: AsyncSession, valid: list[tuple[_Order, OrderIn]]) -> None:
        """Stage the page's orders and lines with COPY, merge them, then bring their customers' figures up to date."""
        await record_imports.stage(
            session,
            "order_import_stage",
            STAGE_COLUMNS,
            [
                (
                    data.source,
                    data.external_id,
                    data.customer_id,
                    data.ordered_at,
                    data.status,
                    data.currency,
                    data.total_amount,
                    data.refunded_amount,
                    data.channel,
                    data.store,
                    data.fulfilment_status,
                    data.tracking_reference,
                    [row["row_number"] for row in order.rows],
                )
                for order, data in valid
            ],
            extra=STAGE_EXTRA,
        )
        await record_imports.stage(
            session,
            "order_import_stage_lines",
            STAGE_LINE_COLUMNS,
            [
                (
                    data.source,
                    data.external_id,
                    no,
                    line.sku,
                    line.product_name,
                    line.category,
                    line.quantity,
                    line.unit_price,
                )
                for _, data in valid
                for no, line in enumerate(data.lines, start=1)
            ],
        )
        params = {"ws": self.ctx.workspace_id, "now": clock.now()}
        if self.job.mode == "upsert":
            await session.execute(CLASSIFY_SQL, params)
            await session.execute(UPDATE_SQL, params)
            await session.execute(DELETE_LINES_SQL, params)
        await session.execute(INSERT_SQL, params)
        await session.execute(LINES_SQL, params)
        moved = await fulfilment.write(
            session,
            self.ctx,
            [
                fulfilment.Change(
                    row.order_id,
                    row.fulfilment_status or (fulfilment.first_status(row.status) if row.created else None),
                    row.tracking_reference,
                    created=row.created,
                )
                for row in await session.execute(FULFILMENT_SQL)
            ],
        )
        await session.execute(
            RECORD_SQL,
            {
                **params,
                "actor": orjson.dumps(self.ctx.actor).decode(),
                "money_places": self.places,
                "actor_type": self.ctx.actor_type,
                "actor_id": self.ctx.actor_id,
            },
        )
        await points.sync_orders(session, self.ctx, list((await session.execute(WRITTEN_SQL)).scalars()))
        created, updated, customers = (await session.execute(SUMMARY_SQL, {"moved": list(moved)})).one()
        staged = sum(len(order.rows) for order, _ in valid)
        self.job.created += created
        self.job.updated += updated
        self.job.skipped += staged - created - updated
        if customers:
            await customer_values.refresh_customers(session, self.ctx, customers)
            await lifecycle.apply_rules(session, self.ctx, customer_ids=customers)


def _lines_total(lines: list[dict[str, str]], places: int) -> str:
    """What a file without an order total means: the lines' sum in the currency's decimals. Lines
    that cannot be read leave "0", as their own errors reject the order."""
    try:
        total = sum((Decimal(line["quantity"]) * Decimal(line["unit_price"]) for line in lines), Decimal(0))
        return str(total.quantize(Decimal(1).scaleb(-places)))
    except (KeyError, ArithmeticError):
        return "0"
