"""The event stream (/api/v1/events) and the change feed apps sync from (/api/v1/changes)."""

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.core.errors import ValidationFailed
from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, CustomersRead, EventsRead, Limit, Reader
from app.routers.responses import errors
from app.schemas.event import EventPage, EventTypeList
from app.services.events import events
from app.services.events.event_catalogue import CATALOGUE, is_valid_filter

router = APIRouter(prefix="/events", tags=["events"])
changes = APIRouter(prefix="/changes", tags=["events"])
EventTypes = Annotated[list[str] | None, Query(max_length=20, description="`customer.created`, `customer.*`")]


def _checked(types: list[str] | None) -> list[str]:
    for pattern in types or []:
        if not is_valid_filter(pattern):
            raise ValidationFailed(f"Unknown event type or pattern: {pattern}", loc=["query", "type"])
    return types or []


@router.get("", response_model=EventPage, responses=errors(), summary="Poll the event stream")
async def list_events(
    ctx: EventsRead,
    session: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    type: EventTypes = None,
) -> Response:
    """Committed events of the workspace in commit order, oldest first: the same envelopes webhooks
    deliver. Keep `next_cursor` and poll again with it; an empty page means you are up to date."""
    items, next_cursor = await events.list_events(session, ctx, limit=limit, cursor=cursor, types=_checked(type))
    return json_response({"items": items, "next_cursor": next_cursor})


@changes.get("", response_model=EventPage, responses=errors(), summary="Changes to the customers you may see")
async def list_changes(
    ctx: CustomersRead,
    session: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    type: EventTypes = None,
) -> Response:
    """The event stream for apps (any caller with `customers:read`): committed events about a
    customer the caller may see now (customer, interaction, task, ticket, order, tier, stage and
    segment membership events), oldest first, masked as the caller's customer reads are. Poll with
    `next_cursor`, which the last page carries too: keep it and resume from it later; an empty page
    means you are up to date."""
    items, next_cursor = await events.list_changes(session, ctx, limit=limit, cursor=cursor, types=_checked(type))
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get("/types", response_model=EventTypeList, responses=errors(), summary="The event catalogue")
async def event_types(_caller: EventsRead) -> Response:
    """Every event type with a description and the JSON schema of its `data`."""
    items = [{"name": e.name, "description": e.description, "schema": e.data.model_json_schema()} for e in CATALOGUE]
    return json_response({"items": items})
