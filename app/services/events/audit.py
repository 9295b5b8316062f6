"""Audit log: record field-level changes, and read them back per record or across the workspace."""

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.masking import mask_for
from app.core.pagination import SortKey, keyset_page
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


class Versioned(Protocol):
    id: uuid.UUID
    version: int
    updated_at: datetime


def record_update(session: AsyncSession, ctx: Caller, row: Versioned, *, entity_type: str, changes: Changes) -> None:
    """A versioned row changed: its next version (the next ETag), when, and the audit entry. Nothing
    when nothing changed, so a PATCH that repeats the stored values keeps the ETag."""
    if not changes:
        return
    row.version += 1
    row.updated_at = clock.now()
    record(session, ctx, entity_type=entity_type, entity_id=row.id, action="updated", changes=changes)


def record_rows_sql(entries: str) -> str:
    """SQL of `record` for many entries in one statement: an audit entry per row of `entries` (a
    SELECT, or a CTE's name, with the columns workspace_id, entity_type, entity_id, action,
    actor_type, actor_id, changes, occurred_at)."""
    return (
        "INSERT INTO audit_log (workspace_id, id, entity_type, entity_id, action, actor_type, actor_id, changes, "
        "occurred_at) SELECT n.workspace_id, guanxi_uuid7(), n.entity_type, n.entity_id, n.action, n.actor_type, "
        f"n.actor_id, n.changes, n.occurred_at FROM {entries} AS n"
    )


def changes_sql(fields: Iterable[tuple[str, str, str, Callable[[str], str]]]) -> str:
    """SQL for the `Changes` of one row over (field, before, after, JSON form) expressions, holding
    only the fields whose value differs."""
    return " || ".join(
        f"CASE WHEN {before} IS DISTINCT FROM {after} THEN jsonb_build_object('{name}', "
        f"jsonb_build_object('before', {render(before)}, 'after', {render(after)})) ELSE '{{}}'::jsonb END"
        for name, before, after, render in fields
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
    stmt = select(AuditEntry).where(
        AuditEntry.workspace_id == ctx.workspace_id,
        AuditEntry.entity_type == entity_type,
        AuditEntry.entity_id == entity_id,
    )
    keys = [SortKey(AuditEntry.id, descending=True)]
    list_name = f"audit:{entity_type}:{entity_id}"
    return await keyset_page(session, stmt, keys, list_name=list_name, limit=limit, cursor=cursor)


@dataclass(frozen=True)
class AuditQuery:
    """What a workspace-wide search narrows by; every part is optional."""

    actor_type: str | None = None
    actor_id: uuid.UUID | None = None
    entity_type: str | None = None
    entity_id: uuid.UUID | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def search(
    session: AsyncSession, ctx: Caller, query: AuditQuery, *, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """Every entry of the workspace, newest first: for callers who may read the whole log, whatever
    record it is about (the route requires the scope)."""
    stmt = select(AuditEntry).where(AuditEntry.workspace_id == ctx.workspace_id)
    exact = {
        AuditEntry.actor_type: query.actor_type,
        AuditEntry.actor_id: query.actor_id,
        AuditEntry.entity_type: query.entity_type,
        AuditEntry.entity_id: query.entity_id,
        AuditEntry.action: query.action,
    }
    for column, value in exact.items():
        if value is not None:
            stmt = stmt.where(column == value)
    if query.since is not None:
        stmt = stmt.where(AuditEntry.occurred_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(AuditEntry.occurred_at < query.until)
    keys = [SortKey(AuditEntry.id, descending=True)]
    return await keyset_page(session, stmt, keys, list_name="audit", limit=limit, cursor=cursor)


def present(entry: AuditEntry, ctx: Caller) -> dict[str, Any]:
    """An entry as the API shows it: its before and after values masked as the caller is masked."""
    return {
        "id": entry.id,
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "action": entry.action,
        "actor": {"type": entry.actor_type, "id": str(entry.actor_id) if entry.actor_id else None},
        "changes": mask_for(ctx, entry.changes),
        "occurred_at": entry.occurred_at,
    }
