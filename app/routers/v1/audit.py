"""The workspace's audit log, searched across records (a record's own log is under the record)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, Limit, Reader, WorkspaceAudit
from app.routers.responses import errors
from app.schemas.common import Timestamp
from app.schemas.customer import AuditPage
from app.services.events import audit

router = APIRouter(prefix="/audit", tags=["audit"])

Word = Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_]+$")]


@router.get("", response_model=AuditPage, responses=errors(), summary="Search the workspace's audit log")
async def search_audit(
    ctx: WorkspaceAudit,
    session: Reader,
    actor_type: Annotated[str | None, Query(pattern=r"^(user|api_key|system)$")] = None,
    actor_id: uuid.UUID | None = None,
    entity_type: Word = None,
    entity_id: uuid.UUID | None = None,
    action: Word = None,
    since: Annotated[Timestamp | None, Query(description="Entries at or after this instant.")] = None,
    until: Annotated[Timestamp | None, Query(description="Entries before this instant.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first, every record's entries (those of customers the caller could not otherwise see
    included), with personal data masked as the caller is masked. Needs `audit:workspace`, which
    admins hold."""
    query = audit.AuditQuery(
        actor_type=actor_type,
        actor_id=actor_id,
        entity_type=entity_type,
        entity_id=entity_id,
        action=action,
        since=since,
        until=until,
    )
    entries, next_cursor = await audit.search(session, ctx, query, limit=limit, cursor=cursor)
    return json_response({"items": [audit.present(e, ctx) for e in entries], "next_cursor": next_cursor})
