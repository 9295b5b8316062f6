"""The event stream: /api/v1/events."""

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.core.errors import ValidationFailed
from app.http.json_response import json_response
from app.routers.deps import EventsRead, Reader
from app.routers.responses import errors
from app.schemas.event import EventPage, EventTypeList
from app.services.events import events
from app.services.events.event_catalogue import CATALOGUE, is_valid_filter

router = APIRouter(prefix="/events", tags=["events"])


@router.get("", response_model=EventPage, responses=errors(), summary="Poll the event stream")
async def list_events(
    ctx: EventsRead,
    session: Reader,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    type: Annotated[list[str] | None, Query(max_length=20, description="`customer.created`, `customer.*`")] = None,
) -> Response:
    """Committed events of the workspace in commit order, oldest first: the same envelopes webhooks
    deliver. Keep `next_cursor` and poll again with it; an empty page means you are up to date."""
    for pattern in type or []:
        if not is_valid_filter(pattern):
            raise ValidationFailed(f"Unknown event type or pattern: {pattern}", loc=["query", "type"])
    items, next_cursor = await events.list_events(session, ctx, limit=limit, cursor=cursor, types=type or [])
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get("/types", response_model=EventTypeList, responses=errors(), summary="The event catalogue")
async def event_types(_caller: EventsRead) -> Response:
    """Every event type with a description and the JSON schema of its `data`."""
    items = [{"name": e.name, "description": e.description, "schema": e.data.model_json_schema()} for e in CATALOGUE]
    return json_response({"items": items})
