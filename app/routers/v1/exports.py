"""Export jobs: /api/v1/exports."""

import uuid
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, CustomersRead, Limit, Reader, Session
from app.routers.responses import errors, files
from app.schemas.common import InputModel
from app.schemas.export import ExportOut, ExportPage
from app.services.bulk import exports

router = APIRouter(prefix="/exports", tags=["exports"])

_ATTACHMENT = {
    "Content-Disposition": {
        "description": "`attachment` with the file's name.",
        "required": True,
        "schema": {"type": "string"},
    }
}


class ExportIn(InputModel):
    resource: Literal["customers"] = "customers"
    format: Literal["csv", "xlsx"] = "csv"
    filter: dict[str, Any] | None = Field(default=None, description="The filter language; none: every customer.")


@router.post(
    "", status_code=202, response_model=ExportOut, responses=errors(), summary="Export customers to CSV or XLSX"
)
async def create_export(body: ExportIn, ctx: CustomersRead, session: Session) -> Response:
    """The worker writes the customers the caller may see, masked as the API masks them for this
    caller, with formula-like cells escaped; download when the status is done."""
    job = await exports.create(session, ctx, file_format=body.format, filter_=body.filter)
    return json_response(exports.present(job), status_code=202, headers={"Location": f"/api/v1/exports/{job.id}"})


@router.get("", response_model=ExportPage, responses=errors(), summary="The caller's exports")
async def list_exports(
    ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first: the exports the caller created; an admin sees every export of the workspace."""
    jobs, next_cursor = await exports.list_exports(session, ctx, limit=limit, cursor=cursor)
    return json_response({"items": [exports.present(job) for job in jobs], "next_cursor": next_cursor})


@router.get("/{job_id}", response_model=ExportOut, responses=errors(404), summary="Export status")
async def get_export(job_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """An export is its creator's (and admins'): anyone else gets 404."""
    return json_response(exports.present(await exports.get(session, ctx, job_id)))


@router.get(
    "/{job_id}/download",
    response_class=Response,
    responses=errors(404, 409, 410) | files(*exports.MEDIA_TYPES.values(), headers=_ATTACHMENT),
    summary="Download an export",
)
async def download_export(job_id: uuid.UUID, ctx: CustomersRead, session: Reader, request: Request) -> Response:
    """The file, streamed from the database; 409 until the export is done, 410 past its retention.
    Only its creator (and admins) may download it: it holds what its creator sees, masked as they are."""
    file = await exports.download(session, request.app.state.readers, ctx, job_id)
    return StreamingResponse(
        file.content,
        media_type=file.media_type,
        headers={"Content-Disposition": f'attachment; filename="{file.filename}"'},
    )
