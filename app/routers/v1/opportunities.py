"""Opportunities (sales deals) through their pipelines: /api/v1/opportunities."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
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
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.sales import (
    BoardOut,
    MoveIn,
    OpportunityIn,
    OpportunityOut,
    OpportunityPage,
    OpportunityPatch,
    OpportunityQuery,
    OpportunitySort,
    StageChangePage,
)
from app.services.sales import board, opportunities

router = APIRouter(prefix="/opportunities", tags=["opportunities"])


@router.post("", status_code=201, response_model=OpportunityOut, responses=errors(404), summary="Open an opportunity")
async def create_opportunity(
    request: Request, data: OpportunityIn, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """For a customer the caller may see (404 otherwise), in an open stage of the pipeline (its
    first open stage unless `stage` says; 422 for a stage it lacks). The amount is not negative and
    in the workspace currency (422 otherwise). The owner is the customer's unless given. A customer
    in lifecycle stage `lead` becomes a `prospect`. `opportunity.created` is emitted."""

    async def create() -> StoredResponse:
        opportunity = opportunities.present(await opportunities.create(session, ctx, data))
        return stored_resource(opportunity, location=f"/api/v1/opportunities/{opportunity['id']}")

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=OpportunityPage, responses=errors(), summary="List and filter opportunities")
async def list_opportunities(
    ctx: CustomersRead,
    session: Reader,
    filters: Annotated[OpportunityQuery, Query()],
    sort: Annotated[
        OpportunitySort, Query(description="`-created_at` (newest first), `created_at`, `-amount` or `amount`.")
    ] = "-created_at",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The live opportunities of the customers the caller may see. Every filter given narrows the
    list; a repeated one matches any of its values; `q` finds words of the title."""
    page, next_cursor = await opportunities.list_opportunities(
        session, ctx, filters, sort=sort, limit=limit, cursor=cursor, loc="query"
    )
    return json_response({"items": [opportunities.present(o) for o in page], "next_cursor": next_cursor})


@router.get("/board", response_model=BoardOut, responses=errors(404), summary="A pipeline's board")
async def get_opportunity_board(pipeline_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """Per stage, in order: how many live opportunities the caller may see stand in it, their
    amount and their weighted amount (amount × the stage's probability / 100)."""
    return json_response(await board.board(session, ctx, pipeline_id))


@router.get("/{opportunity_id}", response_model=OpportunityOut, responses=errors(404), summary="Get an opportunity")
async def get_opportunity(opportunity_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(opportunities.present(await opportunities.get(session, ctx, opportunity_id)))


@router.patch(
    "/{opportunity_id}",
    response_model=OpportunityOut,
    responses=errors(404, 412, 428),
    summary="Change an opportunity",
)
async def update_opportunity(
    opportunity_id: uuid.UUID, patch: OpportunityPatch, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    """Title, amount, expected close date, owner, source. The stage moves through `/move`.
    `opportunity.updated` names the fields that changed."""
    opportunity = await opportunities.update(session, ctx, opportunity_id, patch, expected_version=version)
    return resource_response(opportunities.present(opportunity))


@router.delete("/{opportunity_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete an opportunity")
async def delete_opportunity(
    opportunity_id: uuid.UUID, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    """Soft delete: it leaves lists and the board; its history stays. `opportunity.deleted` is emitted."""
    await opportunities.delete(session, ctx, opportunity_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/{opportunity_id}/move",
    response_model=OpportunityOut,
    responses=errors(404, 409, 412, 428),
    summary="Move an opportunity to another stage",
)
async def move_opportunity(
    opportunity_id: uuid.UUID, body: MoveIn, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    """To another stage of its pipeline (422 for a stage it lacks). A lost stage may need
    `lost_reason` (422 without). A won or lost opportunity moves again only with `reopen: true`:
    409 otherwise, listing the stages in `allowed_with_reopen`. Of two moves from the same version
    one wins, the other is a 412. Written to the stage history; `opportunity.stage_changed` is
    emitted, and `opportunity.won` or `opportunity.lost` when it enters such a stage."""
    opportunity = await opportunities.move(session, ctx, opportunity_id, body, expected_version=version)
    return resource_response(opportunities.present(opportunity))


@router.get(
    "/{opportunity_id}/history",
    response_model=StageChangePage,
    responses=errors(404),
    summary="An opportunity's stage history",
)
async def list_opportunity_history(
    opportunity_id: uuid.UUID, ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Oldest first: the stage it was created in (`from_stage` null), then every move, with who,
    when and how long it stayed in the stage before."""
    changes, next_cursor = await opportunities.history(session, ctx, opportunity_id, limit=limit, cursor=cursor)
    return json_response({"items": [opportunities.present_change(c) for c in changes], "next_cursor": next_cursor})
