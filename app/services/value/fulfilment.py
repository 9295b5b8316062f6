"""Orders' fulfilment: where the goods are, kept apart from the money (`orders.status`, which the
value figures read).

`write` is the one writer of an order's fulfilment status and tracking reference, whatever the path:
POST /orders/{id}/fulfilment, the order upsert and its batch, and the order file import (a page of
orders in one call). It checks every move of a stored order against TRANSITIONS, then in one
statement sets the orders, appends their history, and for a stored order emits
`order.fulfilment_changed` and writes the audit entry. A new order's first status is the first row
of its history; its `order.created` event and audit entry tell the rest."""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

import orjson
from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.core import clock
from app.core.access import Caller
from app.core.errors import Conflict
from app.models import Order
from app.schemas.order import FulfilmentStatus
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column, timestamp

STATUSES: Final = get_args(FulfilmentStatus)
# Forward only, skipping steps a shop may not report (cash on delivery ships before it is paid;
# a pickup is delivered without shipping); cancelled and returned are final.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"paid", "shipped", "cancelled"}),
    "paid": frozenset({"shipped", "delivered", "cancelled"}),
    "shipped": frozenset({"delivered", "returned"}),
    "delivered": frozenset({"returned"}),
    "cancelled": frozenset(),
    "returned": frozenset(),
}
# A new order sent without a fulfilment status starts where its financial status puts it (the
# migration that added fulfilment backfilled stored orders by the same rule).
_FIRST: Final = {"paid": "paid", "partially_refunded": "paid", "refunded": "returned", "cancelled": "cancelled"}


def first_status(financial_status: str) -> str:
    return _FIRST[financial_status]


def refusal(current: str, wanted: str) -> Conflict | None:
    """The 409 for a move TRANSITIONS does not allow; None when it does (staying is allowed: a new
    tracking reference alone)."""
    if wanted == current or wanted in TRANSITIONS[current]:
        return None
    return Conflict(
        f"A {current} order cannot move to {wanted}.", current_status=current, allowed=sorted(TRANSITIONS[current])
    )


@dataclass(frozen=True)
class Change:
    """What one order's fulfilment becomes. None keeps the status or the tracking reference."""

    order_id: uuid.UUID
    status: str | None = None
    tracking_reference: str | None = None
    note: str | None = None
    # A new order (its status is its first, not a move): no version step, event or audit entry of its own.
    created: bool = False


# `c` one changed order: its history row's values with its order's customer and keys.
EVENT: Payload[Any] = Payload(
    (
        column("order_id"),
        column("customer_id"),
        column("source"),
        column("external_id"),
        column("from_status"),
        column("to_status"),
        column("tracking_reference"),
        column("note"),
        timestamp("at"),
    ),
    model=data_model("order.fulfilment_changed"),
)
_AUDIT_CHANGES = audit.changes_sql(
    (
        ("fulfilment_status", "c.from_status", "c.to_status", lambda value: value),
        ("tracking_reference", "c.from_tracking", "c.tracking_reference", lambda value: value),
    )
)
_WRITE = text(
    f"""
WITH wanted AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:froms AS text[]), CAST(:tos AS text[]),
                         CAST(:from_trackings AS text[]), CAST(:trackings AS text[]), CAST(:notes AS text[]),
                         CAST(:created AS boolean[]))
        AS w(order_id, from_status, to_status, from_tracking, tracking_reference, note, created)
),
updated AS (
    UPDATE orders o
    SET fulfilment_status = w.to_status, tracking_reference = w.tracking_reference,
        fulfilment_updated_at = CAST(:now AS timestamptz),
        version = o.version + CASE WHEN w.created THEN 0 ELSE 1 END,
        updated_at = CASE WHEN w.created THEN o.updated_at ELSE CAST(:now AS timestamptz) END
    FROM wanted w
    WHERE o.workspace_id = CAST(:ws AS uuid) AND o.id = w.order_id
    RETURNING o.id, o.customer_id, o.source, o.external_id, o.fulfilment_status, o.tracking_reference,
              o.fulfilment_updated_at, o.version, o.updated_at
),
history AS (
    INSERT INTO order_fulfilment_history (workspace_id, id, order_id, from_status, to_status, tracking_reference,
                                          note, actor, at)
    SELECT CAST(:ws AS uuid), guanxi_uuid7(), order_id, CASE WHEN created THEN NULL ELSE from_status END, to_status,
           tracking_reference, note, CAST(:actor AS jsonb), CAST(:now AS timestamptz)
    FROM wanted
),
changed AS (
    SELECT w.*, u.customer_id, u.source, u.external_id, CAST(:now AS timestamptz) AS at
    FROM wanted w JOIN updated u ON u.id = w.order_id
    WHERE NOT w.created
),
events AS (
    {
        outbox.emit_rows_sql(
            f"(SELECT guanxi_uuid7() AS id, {EVENT.sql('c')} AS data FROM changed c)",
            workspace_id="CAST(:ws AS uuid)",
            event_type="'order.fulfilment_changed'",
            at="CAST(:now AS timestamptz)",
            actor="CAST(:actor AS jsonb)",
        )
    }
),
audited AS (
    {
        audit.record_rows_sql(
            f'''(SELECT CAST(:ws AS uuid) AS workspace_id, 'order' AS entity_type, c.order_id AS entity_id,
                    'fulfilment_changed' AS action, CAST(:actor_type AS text) AS actor_type,
                    CAST(:actor_id AS uuid) AS actor_id, {_AUDIT_CHANGES} AS changes,
                    CAST(:now AS timestamptz) AS occurred_at
             FROM changed c)'''
        )
    }
)
SELECT id, fulfilment_status, tracking_reference, fulfilment_updated_at, version, updated_at FROM updated
"""
)
_WRITTEN = ("fulfilment_status", "tracking_reference", "fulfilment_updated_at", "version", "updated_at")


async def write(session: AsyncSession, ctx: Caller, changes: Sequence[Change]) -> set[uuid.UUID]:
    """Apply `changes` (each order at most once) or, when a stored order's move is not allowed, raise
    its 409 and write nothing. The stored orders that changed are returned; the Order rows the
    session holds are brought up to date."""
    if not changes:
        return set()
    stored = await session.execute(
        select(Order.id, Order.fulfilment_status, Order.tracking_reference)
        .where(Order.workspace_id == ctx.workspace_id, Order.id.in_([change.order_id for change in changes]))
        .with_for_update()
    )
    current = {row.id: (row.fulfilment_status, row.tracking_reference) for row in stored}
    rows: list[tuple[Any, ...]] = []
    for change in changes:
        status, tracking = current[change.order_id]
        wanted = change.status or status
        wanted_tracking = change.tracking_reference or tracking
        if not change.created:
            problem = refusal(status, wanted)
            if problem is not None:
                raise problem
            if (wanted, wanted_tracking) == (status, tracking):
                continue
        rows.append((change.order_id, status, wanted, tracking, wanted_tracking, change.note, change.created))
    if not rows:
        return set()
    ids, froms, tos, from_trackings, trackings, notes, created = (list(column) for column in zip(*rows, strict=True))
    written = await session.execute(
        _WRITE,
        {
            "ids": ids,
            "froms": froms,
            "tos": tos,
            "from_trackings": from_trackings,
            "trackings": trackings,
            "notes": notes,
            "created": created,
            "ws": ctx.workspace_id,
            "now": clock.now(),
            "actor": orjson.dumps(ctx.actor).decode(),
            "actor_type": ctx.actor_type,
            "actor_id": ctx.actor_id,
        },
    )
    for row in written:
        held = session.identity_map.get(session.identity_key(Order, (ctx.workspace_id, row.id)))
        if held is not None:
            for name in _WRITTEN:
                set_committed_value(held, name, getattr(row, name))
    return {order_id for order_id, *_, was_created in rows if not was_created}


async def current_by_key(
    session: AsyncSession, ctx: Caller, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The fulfilment status of the stored orders among (source, external_id) `keys`, locked until
    the transaction ends so that a move checked against it stays allowed when written."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = await session.execute(
        select(Order.source, Order.external_id, Order.fulfilment_status)
        .where(Order.workspace_id == ctx.workspace_id, tuple_(Order.source, Order.external_id).in_(wanted))
        .with_for_update()
    )
    return {(row.source, row.external_id): row.fulfilment_status for row in rows}
