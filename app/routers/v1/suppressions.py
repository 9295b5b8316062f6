"""The suppression list: /api/v1/suppressions."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, IdempotencyKey, Limit, OutreachAdmin, Reader, Session
from app.routers.responses import errors, idempotent, stored
from app.schemas.outreach import Medium, SuppressionIn, SuppressionOut, SuppressionPage
from app.services.outreach import suppressions

router = APIRouter(prefix="/suppressions", tags=["outreach"])


@router.post("", status_code=201, response_model=SuppressionOut, responses=errors(409), summary="Suppress an address")
async def add_suppression(
    request: Request, data: SuppressionIn, ctx: OutreachAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """No message goes to the address on that medium (`email`, `sms`); an `unsubscribe` entry stops
    marketing only. 409 naming the entry in `existing_id` when the address is already listed."""

    async def create() -> StoredResponse:
        row = await suppressions.add(session, ctx, data)
        return stored(201, suppressions.present(row, ctx), {"Location": f"/api/v1/suppressions/{row.id}"})

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=SuppressionPage, responses=errors(), summary="List suppressions")
async def list_suppressions(
    ctx: OutreachAdmin,
    session: Reader,
    medium: Medium | None = None,
    address: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first; `address` (with `medium`) finds one."""
    rows, next_cursor = await suppressions.list_page(
        session, ctx, medium=medium, address=address, limit=limit, cursor=cursor
    )
    return json_response({"items": [suppressions.present(r, ctx) for r in rows], "next_cursor": next_cursor})


@router.get("/{suppression_id}", response_model=SuppressionOut, responses=errors(404), summary="Get a suppression")
async def get_suppression(suppression_id: uuid.UUID, ctx: OutreachAdmin, session: Reader) -> Response:
    return json_response(suppressions.present(await suppressions.get(session, ctx, suppression_id), ctx))


@router.delete("/{suppression_id}", status_code=204, responses=errors(404), summary="Remove a suppression")
async def delete_suppression(suppression_id: uuid.UUID, ctx: OutreachAdmin, session: Session) -> Response:
    """The address may be sent to again (an unsubscribe also withdrew consent, which stays withdrawn)."""
    await suppressions.remove(session, ctx, suppression_id)
    return Response(status_code=204)
