"""Audit log: record field-level changes, and read them back per record."""

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.pagination import decode_cursor, encode_cursor
from app.models import AuditEntry

Changes = dict[str, dict[str, Any]]


def record(
    session: AsyncSession,
    ctx: Caller,
    *,
    entity_type: str,
    entity_id: uuid.UUID,
    action: str,
    changes: Changes,
) -> None:
    session.add(
        AuditEntry(
            workspace_id=ctx.workspace_id,
            entity_type=entity_type,
            entity_id=entity_id,
            action=action,
            actor_type=ctx.actor_type,
            actor_id=ctx.actor_id,
            changes=changes,
            occurred_at=clock.now(),
        )
    )


async def list_for(
    session: AsyncSession,
    ctx: Caller,
    *,
    entity_type: str,
    entity_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> tuple[list[AuditEntry], str | None]:
    """Newest first; the entity's visibility is the caller's to check before calling."""
    stmt = (
        select(AuditEntry)
        .where(
            AuditEntry.workspace_id == ctx.workspace_id,
            AuditEntry.entity_type == entity_type,
            AuditEntry.entity_id == entity_id,
        )
        .order_by(AuditEntry.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        (after,) = decode_cursor(cursor, expected_length=1)
        try:
            stmt = stmt.where(AuditEntry.id < uuid.UUID(str(after)))
        except ValueError as exc:
            raise ValidationFailed("The cursor is not valid for this list.", loc=["query", "cursor"]) from exc
    rows = list((await session.scalars(stmt)).all())
    next_cursor = encode_cursor([str(rows[limit - 1].id)]) if len(rows) > limit else None
    return rows[:limit], next_cursor
