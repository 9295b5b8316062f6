"""Import jobs: /api/v1/imports."""

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, File, Form, UploadFile
from starlette.responses import Response

from app.core.errors import PayloadTooLarge, ValidationFailed
from app.core.settings import get_settings
from app.http.json_response import json_response
from app.routers.deps import CustomersRead, CustomersWrite, Session
from app.routers.responses import CSV, errors, files
from app.schemas.import_job import ImportJobOut
from app.services.bulk import csv_export, import_jobs

router = APIRouter(prefix="/imports", tags=["imports"])
CHUNK = 1 << 20


@router.post(
    "",
    status_code=202,
    response_model=ImportJobOut,
    responses=errors(413),
    summary="Import customers, interactions or orders from CSV or XLSX",
)
async def create_import(
    ctx: CustomersWrite,
    session: Session,
    file: Annotated[UploadFile, File(description="A .csv (UTF-8 with or without BOM, or GB18030) or .xlsx file")],
    mapping: Annotated[
        str,
        # At least "{}": an empty form field reads as a missing one.
        Form(min_length=2, description='JSON object: file column → field, e.g. {"姓名": "name", "手机": "phone"}'),
    ],
    type_: Annotated[
        Literal["customers", "interactions", "orders"], Form(alias="type", description="What the file holds.")
    ] = "customers",
    mode: Annotated[Literal["create_only", "upsert"], Form()] = "create_only",
    match_on: Annotated[
        Literal["email", "phone", "code"] | None, Form(description="Customers: the key an upsert matches on.")
    ] = None,
) -> Response:
    """Queues a job the worker runs: follow it at GET /imports/{id}; rejected rows at /errors.

    Customer fields: name, kind, email, phone, company, title, gender, birthday, country, province,
    city, district, street, postcode, source, tags, notes, code and custom.<key>.

    Interactions and orders name their customer by customer_code, customer_email, customer_phone
    or customer_id, and are matched by (source, external_id). Interaction fields: channel,
    direction, occurred_at, duration_seconds, subject, content, outcome, next_step, user_email,
    source, external_id. Orders, one row per line (orders:write scope): source, external_id,
    ordered_at, status, currency, total_amount, refunded_amount, channel, store, sku,
    product_name, category, quantity, unit_price."""
    try:
        parsed = orjson.loads(mapping)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("mapping must be a JSON object.", loc=["body", "mapping"]) from exc
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise ValidationFailed("mapping must map column names to field names.", loc=["body", "mapping"])
    limit = get_settings().import_max_bytes
    # The upload is checked from a scratch copy of this process's own, then kept in the database.
    with tempfile.NamedTemporaryFile(suffix=".upload") as spool:
        size = 0
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Imports take files up to {limit} bytes.")
            await asyncio.to_thread(spool.write, chunk)
        await asyncio.to_thread(spool.flush)
        job = await import_jobs.create(
            session,
            ctx,
            filename=file.filename or "upload",
            upload=Path(spool.name),
            mapping=parsed,
            mode=mode,
            match_on=match_on,
            kind=type_,
        )
    return json_response(import_jobs.present(job), status_code=202, headers={"Location": f"/api/v1/imports/{job.id}"})


@router.get("/{job_id}", response_model=ImportJobOut, responses=errors(404), summary="Import status and progress")
async def get_import(job_id: uuid.UUID, ctx: CustomersRead, session: Session) -> Response:
    return json_response(import_jobs.present(await import_jobs.get(session, ctx, job_id)))


@router.post("/{job_id}/cancel", response_model=ImportJobOut, responses=errors(404, 409), summary="Cancel an import")
async def cancel_import(job_id: uuid.UUID, ctx: CustomersWrite, session: Session) -> Response:
    """A running import stops after its current batch; what was committed stays."""
    return json_response(import_jobs.present(await import_jobs.cancel(session, ctx, job_id)))


@router.get(
    "/{job_id}/errors", response_class=Response, responses=errors(404) | files(CSV), summary="Rejected rows (CSV)"
)
async def import_errors(job_id: uuid.UUID, ctx: CustomersRead, session: Session) -> Response:
    """Row number, column and reason of every rejected row."""
    rows = await import_jobs.errors(session, ctx, job_id)
    table = [["row", "column", "reason"], *([str(r.row_number), r.column or "", r.reason] for r in rows)]
    return Response(csv_export.render(table), media_type="text/csv; charset=utf-8")
