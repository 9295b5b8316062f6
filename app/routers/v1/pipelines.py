"""Sales pipelines and their stages: /api/v1/pipelines."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import CustomersRead, IdempotencyKey, IfMatch, PipelinesAdmin, Reader, Session
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.sales import PipelineIn, PipelineList, PipelineOut, PipelinePatch
from app.services.sales import pipelines

router = APIRouter(prefix="/pipelines", tags=["sales pipelines"])


@router.post("", status_code=201, response_model=PipelineOut, responses=errors(), summary="Add a pipeline")
async def create_pipeline(
    request: Request, data: PipelineIn, ctx: PipelinesAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """Its stages in order, each with a unique `code`, a win `probability` (0-100), a `kind` (open,
    won or lost), `stale_after_days` and, for lost stages, `lost_reason_required`. At least one
    stage is open. A workspace has as many pipelines as it needs (new business, renewals...)."""

    async def create() -> StoredResponse:
        pipeline = await pipelines.create(session, ctx, data)
        return stored_resource(pipeline, location=f"/api/v1/pipelines/{pipeline['id']}")

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=PipelineList, responses=errors(), summary="List pipelines")
async def list_pipelines(ctx: CustomersRead, session: Reader) -> Response:
    """Every live pipeline of the workspace with its stages, oldest first (one page)."""
    return json_response({"items": await pipelines.list_all(session, ctx), "next_cursor": None})


@router.get("/{pipeline_id}", response_model=PipelineOut, responses=errors(404), summary="Get a pipeline")
async def get_pipeline(pipeline_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(await pipelines.get(session, ctx, pipeline_id))


@router.patch(
    "/{pipeline_id}", response_model=PipelineOut, responses=errors(404, 409, 412, 428), summary="Change a pipeline"
)
async def update_pipeline(
    pipeline_id: uuid.UUID, patch: PipelinePatch, ctx: PipelinesAdmin, session: Session, version: IfMatch
) -> Response:
    """`stages` replaces the whole ordered list; a stage keeps its opportunities by its code. A
    stage that opportunities stand in (deleted ones too) cannot be removed or change kind: 409
    naming them in `stages_in_use`."""
    return resource_response(await pipelines.update(session, ctx, pipeline_id, patch, expected_version=version))


@router.delete("/{pipeline_id}", status_code=204, responses=errors(404, 409, 412, 428), summary="Delete a pipeline")
async def delete_pipeline(pipeline_id: uuid.UUID, ctx: PipelinesAdmin, session: Session, version: IfMatch) -> Response:
    """Soft delete; 409 while live opportunities are in it."""
    await pipelines.delete_pipeline(session, ctx, pipeline_id, expected_version=version)
    return Response(status_code=204)
