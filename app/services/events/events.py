"""The event stream as partners poll it: committed events in commit order, with a cursor."""

from typing import Any

from sqlalchemy import BigInteger, Text, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.core.pagination import SortKey, keyset_page
from app.models import OutboxEvent
from app.services.events.webhook_delivery import envelope


def _horizon() -> Any:
    """The oldest transaction still running: every event below it is committed (or never will be),
    so a cursor past it can never skip an event that commits later."""
    return func.pg_snapshot_xmin(func.pg_current_snapshot()).cast(Text).cast(BigInteger)


async def list_events(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None, types: list[str]
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(OutboxEvent).where(OutboxEvent.workspace_id == ctx.workspace_id, OutboxEvent.txid < _horizon())
    if types and "*" not in types:
        exact = [t for t in types if not t.endswith(".*")]
        families = [t[:-1] for t in types if t.endswith(".*")]
        stmt = stmt.where(or_(OutboxEvent.type.in_(exact), *(OutboxEvent.type.startswith(f) for f in families)))
    keys = [SortKey(OutboxEvent.txid), SortKey(OutboxEvent.id)]
    rows, next_cursor = await keyset_page(session, stmt, keys, list_name="events", limit=limit, cursor=cursor)
    return [envelope(row) for row in rows], next_cursor
