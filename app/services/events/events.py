"""The event stream as partners poll it, and the change feed apps sync from: committed events in
commit order, with a cursor."""

from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Text, and_, case, exists, func, not_, or_, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.core.masking import mask_for
from app.core.pagination import SortKey, encode_cursor, keyset_page
from app.models import Customer, OutboxEvent
from app.services.customers.visibility import visible_customer_clauses
from app.services.events.webhook_delivery import envelope


def _horizon() -> Any:
    """The oldest transaction still running: every event below it is committed (or never will be),
    so a cursor past it can never skip an event that commits later."""
    return func.pg_snapshot_xmin(func.pg_current_snapshot()).cast(Text).cast(BigInteger)


async def list_events(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None, types: list[str]
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(OutboxEvent).where(OutboxEvent.workspace_id == ctx.workspace_id, OutboxEvent.txid < _horizon())
    return await _page(session, ctx, stmt, "events", limit=limit, cursor=cursor, types=types)


_RELATION_EVENTS = "customer.relation_"


def _customer_of() -> ColumnElement[Any]:
    """The customer an event is about: a customer event's own id (a merge's survivor, a relation's
    `from` end), any other event's `customer_id`; null for events about no customer (webhooks,
    definitions)."""
    data = OutboxEvent.data
    subject = case(
        (OutboxEvent.type == "customer.merged", data["survivor_id"].astext),
        (OutboxEvent.type.startswith(_RELATION_EVENTS), data["from_customer_id"].astext),
        (OutboxEvent.type.startswith("customer."), data["id"].astext),
        else_=data["customer_id"].astext,
    )
    return subject.cast(UUID(as_uuid=True))


def _seen(ctx: Caller, customer_id: ColumnElement[Any]) -> ColumnElement[bool]:
    return exists(
        select(Customer.id).where(Customer.id == customer_id, *visible_customer_clauses(ctx, include_deleted=True))
    )


async def list_changes(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None, types: list[str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The events about customers the caller may see now (soft-deleted ones too, so an app learns of
    the deletion), masked as the caller is masked: the event stream for callers without
    `events:read`. Visibility is decided at read time, so a customer handed to another owner leaves
    the feed of its former owner."""
    # A relation is the caller's to see when both its customers are, as in its list.
    other_end = OutboxEvent.data["to_customer_id"].astext.cast(UUID(as_uuid=True))
    visible = and_(
        _seen(ctx, _customer_of()),
        or_(not_(OutboxEvent.type.startswith(_RELATION_EVENTS)), _seen(ctx, other_end)),
    )
    stmt = select(OutboxEvent).where(
        OutboxEvent.workspace_id == ctx.workspace_id, OutboxEvent.txid < _horizon(), visible
    )
    return await _page(session, ctx, stmt, "changes", limit=limit, cursor=cursor, types=types, resumable=True)


async def _page(
    session: AsyncSession,
    ctx: Caller,
    stmt: Any,
    list_name: str,
    *,
    limit: int,
    cursor: str | None,
    types: list[str],
    resumable: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """`resumable`: the last page still has a cursor (after its last event, or the one given when it
    is empty), so an app that read to the end resumes from there without reading anything twice."""
    if types and "*" not in types:
        exact = [t for t in types if not t.endswith(".*")]
        families = [t[:-1] for t in types if t.endswith(".*")]
        stmt = stmt.where(or_(OutboxEvent.type.in_(exact), *(OutboxEvent.type.startswith(f) for f in families)))
    keys = [SortKey(OutboxEvent.txid), SortKey(OutboxEvent.id)]
    rows, next_cursor = await keyset_page(session, stmt, keys, list_name=list_name, limit=limit, cursor=cursor)
    if resumable and next_cursor is None:
        next_cursor = encode_cursor(list_name, [rows[-1].txid, rows[-1].id]) if rows else cursor
    return [mask_for(ctx, envelope(row)) for row in rows], next_cursor
