"""Segments and the filter language: /api/v1/segments, /api/v1/customers/search."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    Cursor,
    CustomersRead,
    CustomersWrite,
    IdempotencyKey,
    IfMatch,
    Limit,
    Reader,
    Session,
)
from app.routers.responses import csv_alternative, errors, idempotent, resource_response, stored_resource
from app.schemas.customer import CustomerPage
from app.schemas.segment import (
    CustomerSearch,
    FieldList,
    MemberChange,
    Preview,
    PreviewOut,
    SegmentCreate,
    SegmentList,
    SegmentOut,
    SegmentPatch,
    SizeList,
    SnapshotIn,
)
from app.services.bulk import csv_export
from app.services.customers.customer_output import present
from app.services.filters import catalogue
from app.services.segments import segments

router = APIRouter(tags=["segments"])


@router.get("/segments/fields", response_model=FieldList, responses=errors(), summary="The filter field catalogue")
async def list_segment_fields(ctx: CustomersRead, session: Reader) -> Response:
    """Every field a filter can test, its type and operators (custom fields included), for rule editors.
    `segment` (ops `in`, `not_in`, value: segment ids) tests membership of other segments."""
    return json_response({"items": await catalogue.describe_fields(session, ctx)})


@router.post("/customers/search", response_model=CustomerPage, responses=errors(), summary="Search with a filter")
async def search_customers(body: CustomerSearch, ctx: CustomersRead, session: Reader) -> Response:
    """The filter language over the customers the caller may see, newest first, cursor-paginated.
    An invalid filter is a 422 whose `loc` is the path to the bad node."""
    rows, next_cursor = await segments.search(session, ctx, body.filter, limit=body.limit, cursor=body.cursor)
    return json_response({"items": [present(r, ctx) for r in rows], "next_cursor": next_cursor})


@router.post("/segments/preview", response_model=PreviewOut, responses=errors(), summary="Preview a filter")
async def preview_segment(body: Preview, ctx: CustomersRead, session: Reader) -> Response:
    """Count and first page of the customers an unsaved filter selects."""
    count, rows = await segments.preview(session, ctx, body.filter, limit=body.limit)
    return json_response({"count": count, "items": [present(r, ctx) for r in rows]})


@router.get("/segments", response_model=SegmentList, responses=errors(), summary="List segments")
async def list_segments(ctx: CustomersRead, session: Session) -> Response:
    """Built-in segments (RFM segments, birthdays this month, new this month, at risk) included."""
    return json_response({"items": [segments.present(s) for s in await segments.list_all(session, ctx)]})


@router.post("/segments", status_code=201, response_model=SegmentOut, responses=errors(), summary="Create a segment")
async def create_segment(
    request: Request, body: SegmentCreate, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Dynamic segments are materialised by the worker (at once after creation, then every 6 hours);
    static lists take members through POST /segments/{id}/members."""

    async def create() -> StoredResponse:
        segment = await segments.create(
            session, ctx, name=body.name, description=body.description, kind=body.kind, filter_=body.filter
        )
        return stored_resource(segments.present(segment), location=f"/api/v1/segments/{segment.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get("/segments/{segment_id}", response_model=SegmentOut, responses=errors(404), summary="Get a segment")
async def get_segment(segment_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(segments.present(await segments.get(session, ctx, segment_id)))


@router.patch(
    "/segments/{segment_id}", response_model=SegmentOut, responses=errors(404, 409, 412, 428), summary="Change"
)
async def update_segment(
    segment_id: uuid.UUID, body: SegmentPatch, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    changes = body.model_dump(include=body.model_fields_set)
    return resource_response(
        segments.present(await segments.update(session, ctx, segment_id, changes, expected_version=version))
    )


@router.delete(
    "/segments/{segment_id}", status_code=204, responses=errors(404, 409, 412, 428), summary="Delete a segment"
)
async def delete_segment(segment_id: uuid.UUID, ctx: CustomersWrite, session: Session, version: IfMatch) -> Response:
    await segments.delete_segment(session, ctx, segment_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/segments/{segment_id}/refresh",
    status_code=202,
    response_model=SegmentOut,
    responses=errors(404, 409),
    summary="Refresh now",
)
async def refresh_segment(segment_id: uuid.UUID, ctx: CustomersWrite, session: Session) -> Response:
    """Asks the worker to rematerialise a dynamic segment now."""
    return resource_response(
        segments.present(await segments.request_refresh(session, ctx, segment_id)), status_code=202
    )


@router.post(
    "/segments/{segment_id}/members", response_model=SegmentOut, responses=errors(404, 409), summary="Edit a list"
)
async def change_segment_members(
    segment_id: uuid.UUID, body: MemberChange, ctx: CustomersWrite, session: Session
) -> Response:
    """Add and remove up to 1,000 customers of a static list per call."""
    segment = await segments.change_members(session, ctx, segment_id, add=body.add, remove=body.remove)
    return resource_response(segments.present(segment))


@router.post(
    "/segments/{segment_id}/snapshot",
    status_code=201,
    response_model=SegmentOut,
    responses=errors(404),
    summary="Freeze the current members",
)
async def snapshot_segment(
    request: Request,
    segment_id: uuid.UUID,
    body: SnapshotIn,
    ctx: CustomersWrite,
    session: Session,
    key: IdempotencyKey,
) -> Response:
    async def create() -> StoredResponse:
        frozen = await segments.snapshot(session, ctx, segment_id, name=body.name)
        return stored_resource(segments.present(frozen), location=f"/api/v1/segments/{frozen.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get(
    "/segments/{segment_id}/members",
    response_model=CustomerPage,
    responses=errors(404) | csv_alternative(),
    summary="Members",
)
async def list_segment_members(
    segment_id: uuid.UUID,
    ctx: CustomersRead,
    session: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Cursor-paginated; `Accept: text/csv` exports every member the caller may see (masked like the API)."""
    if accept and "text/csv" in accept:
        rows, _ = await segments.members(session, ctx, segment_id, limit=None, cursor=None)
        table = [["code", "name", "emails", "phones", "city", "tags"]]
        for row in rows:
            shown = present(row, ctx)
            table.append(
                [
                    shown["code"],
                    shown["name"],
                    " ".join(shown["emails"]),
                    " ".join(shown["phones"]),
                    shown["address"]["city"] or "",
                    " ".join(shown["tags"]),
                ]
            )
        return Response(csv_export.render(table), media_type="text/csv; charset=utf-8")
    rows, next_cursor = await segments.members(session, ctx, segment_id, limit=limit, cursor=cursor)
    return json_response({"items": [present(r, ctx) for r in rows], "next_cursor": next_cursor})


@router.get("/segments/{segment_id}/sizes", response_model=SizeList, responses=errors(404), summary="Size over time")
async def segment_sizes(segment_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    rows = await segments.sizes(session, ctx, segment_id)
    return json_response(
        {
            "items": [
                {"measured_at": r.measured_at, "members": r.members, "joined": r.joined, "left": r.left} for r in rows
            ]
        }
    )
