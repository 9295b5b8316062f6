"""The event stream as partners poll it: committed events in commit order, with a cursor."""

import uuid
from typing import Any

from sqlalchemy import BigInteger, Text, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.pagination import decode_cursor, encode_cursor
from app.models import OutboxEvent
from app.services.events.webhook_delivery import envelope


def _horizon() -> Any:
    """The oldest transaction still running: every event below it is committed (or never will be),
    so a cursor past it can never skip an event that commits later."""
    return func.pg_snapshot_xmin(func.pg_current_snapshot()).cast(Text).cast(BigInteger)


async def list_events(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None, types: list[str]
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.workspace_id == ctx.workspace_id, OutboxEvent.txid < _horizon())
        .order_by(OutboxEvent.txid, OutboxEvent.id)
        .limit(limit + 1)
    )
    if types and "*" not in types:
        exact = [t for t in types if not t.endswith(".*")]
        families = [t[:-1] for t in types if t.endswith(".*")]
        stmt = stmt.where(or_(OutboxEvent.type.in_(exact), *(OutboxEvent.type.startswith(f) for f in families)))
    if cursor:
        txid, event_id = decode_cursor(cursor, expected_length=2)
        try:
            after = (int(txid), uuid.UUID(str(event_id)))
        except (TypeError, ValueError) as exc:
            raise ValidationFailed("The cursor is not valid for this list.", loc=["query", "cursor"]) from exc
        stmt = stmt.where(tuple_(OutboxEvent.txid, OutboxEvent.id) > tuple_(*after))
    rows = list((await session.scalars(stmt)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.txid, str(last.id)])
    return [envelope(row) for row in rows[:limit]], next_cursor
