"""Import jobs: accept an upload into the database, queue it, run it, report it, cancel it."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock, scoped
from app.core.access import Caller, Scope, system_caller
from app.core.errors import Conflict, Forbidden, ValidationFailed
from app.core.ids import new_id
from app.core.settings import get_settings
from app.models import ImportJob, ImportRowError
from app.services.bulk import imports, interaction_imports, order_imports, scratch
from app.services.customers import custom_fields
from app.services.events import outbox
from app.services.files import stored_files

FORMATS = {".csv": "csv", ".xlsx": "xlsx"}
CONTENT_TYPES = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
UPLOAD_GONE = "The uploaded file is no longer kept (past its retention, or from before an upgrade); upload it again."


async def create(
    session: AsyncSession,
    ctx: Caller,
    *,
    filename: str,
    upload: Path,
    mapping: dict[str, str],
    mode: str,
    match_on: str | None,
    kind: str = "customers",
) -> ImportJob:
    """Checks the file type, encoding and mapping now, and stores the file where every worker reads it;
    the rows are the worker's. `upload` is the caller's to remove."""
    if kind == "orders" and not ctx.can(Scope.ORDERS_WRITE):
        raise Forbidden("Importing orders needs the orders:write scope.")
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise ValidationFailed("Upload a .csv or .xlsx file.", loc=["body", "file"], error_type="file_type")
    file_format = FORMATS[suffix]
    encoding = await asyncio.to_thread(_inspect, upload, file_format)
    if kind == "customers":
        imports.check_mapping(mapping, await custom_fields.definitions(session, ctx))
        if mode == "upsert" and match_on is None:
            raise ValidationFailed("An upsert needs match_on: email, phone or code.", loc=["body", "match_on"])
    elif match_on is not None:
        raise ValidationFailed(
            f"Imported {kind} are matched by source and external_id; match_on is for customers.",
            loc=["body", "match_on"],
        )
    elif kind == "interactions":
        interaction_imports.check_mapping(mapping, mode)
    else:
        order_imports.check_mapping(mapping)
    stored = await stored_files.save(
        session,
        ctx.workspace_id,
        purpose="import",
        name=filename,
        content_type=CONTENT_TYPES[file_format],
        content=stored_files.read_local(upload),
        keep_for=timedelta(days=get_settings().file_retention_days),
    )
    job = ImportJob(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        kind=kind,
        status="queued",
        mode=mode,
        match_on=match_on,
        mapping=mapping,
        filename=filename[:255],
        file_format=file_format,
        file_id=stored.id,
        encoding=encoding,
        rows_read=0,
        created=0,
        updated=0,
        skipped=0,
        failed=0,
        cancel_requested=False,
        created_by=ctx.user_id,
        created_at=clock.now(),
    )
    session.add(job)
    await session.flush()
    await outbox.wake_workers(session)
    return job


def _inspect(upload: Path, file_format: str) -> str | None:
    """The CSV's encoding; for XLSX, that it is a zip at all."""
    if file_format == "xlsx":
        with upload.open("rb") as file:
            if file.read(4) != b"PK\x03\x04":
                raise ValidationFailed("This is not an XLSX file.", loc=["body", "file"], error_type="file_type")
        return None
    try:
        return imports.detect_encoding(upload)
    except ValueError as exc:
        raise ValidationFailed(str(exc), loc=["body", "file"], error_type="encoding") from exc


async def get(session: AsyncSession, ctx: Caller, job_id: uuid.UUID) -> ImportJob:
    """An import is its uploader's (a user; the workspace's keys for one an API key queued) and the
    admins': its rejected rows can echo the file's personal data. Anyone else gets the same 404."""
    statement = scoped.in_workspace(ImportJob, ctx).where(ImportJob.id == job_id)
    if not ctx.sees_all_jobs:
        statement = statement.where(
            ImportJob.created_by == ctx.user_id if ctx.user_id else ImportJob.created_by.is_(None)
        )
    return await scoped.one(session, statement, missing="No import with that id.")


async def cancel(session: AsyncSession, ctx: Caller, job_id: uuid.UUID) -> ImportJob:
    job = await get(session, ctx, job_id)
    if job.status not in ("queued", "running"):
        raise Conflict(f"The import is already {job.status}.")
    job.cancel_requested = True
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = clock.now()
    return job


async def errors(session: AsyncSession, ctx: Caller, job_id: uuid.UUID) -> list[ImportRowError]:
    await get(session, ctx, job_id)
    rows = await session.scalars(
        select(ImportRowError)
        .where(ImportRowError.workspace_id == ctx.workspace_id, ImportRowError.job_id == job_id)
        .order_by(ImportRowError.row_number, ImportRowError.column)
    )
    return list(rows.all())


def present(job: ImportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.kind,
        "status": job.status,
        "mode": job.mode,
        "match_on": job.match_on,
        "filename": job.filename,
        "file_format": job.file_format,
        "encoding": job.encoding,
        "mapping": job.mapping,
        "progress": {
            "rows_read": job.rows_read,
            "created": job.created,
            "updated": job.updated,
            "skipped": job.skipped,
            "failed": job.failed,
        },
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


CLAIM_SQL = """
UPDATE import_jobs SET status = 'running', started_at = $1
WHERE (workspace_id, id) = (
    SELECT workspace_id, id FROM import_jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING workspace_id, id
"""


# A running job holds a session advisory lock on its key for as long as it runs (`process`). The
# server drops the lock with the session, so a job still 'running' whose lock is free lost its
# worker (killed, or its connection ended by a database restart) and would otherwise stay running
# for ever. The grace period covers the moment between the claim and taking the lock.
JOB_KEY = "hashtextextended('import-job:' || CAST($1 AS text), 0)"
INTERRUPTED = (
    "The import was interrupted (its worker or database connection was lost). Rows committed before "
    "that are in; upload the file again to finish (an upsert import changes nothing it already did)."
)
ORPHAN_GRACE = timedelta(minutes=1)
REAP_SQL = """
UPDATE import_jobs SET status = 'failed', error = $2, finished_at = $1
WHERE status = 'running' AND started_at < CAST($1 AS timestamptz) - CAST($3 AS interval)
  AND pg_try_advisory_xact_lock(hashtextextended('import-job:' || CAST(id AS text), 0))
RETURNING workspace_id, id
"""


async def fail_orphans(pool: asyncpg.Pool) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Running jobs no worker holds any more, marked failed; returns them."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(REAP_SQL, clock.now(), INTERRUPTED, ORPHAN_GRACE)
    return [(row["workspace_id"], row["id"]) for row in rows]


async def claim_next(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The oldest queued job, taken by this worker alone."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(CLAIM_SQL, clock.now())
    return (row["workspace_id"], row["id"]) if row else None


# A batch writes thousands of rows and their index entries in a statement; the limit the pool's
# connections carry (GUANXI_STATEMENT_TIMEOUT_MS, 5 s by default) is sized for API requests, and a
# batch on a busy machine could pass it and fail the whole import.
BATCH_STATEMENT_TIMEOUT = "120s"


async def process(
    sessions: async_sessionmaker[AsyncSession],
    pool: asyncpg.Pool,
    workspace_id: uuid.UUID,
    job_id: uuid.UUID,
    on_progress: imports.Progress | None = None,
) -> ImportJob:
    """Run a claimed job to its end and record how it ended, holding the job's lock meanwhile."""
    async with pool.acquire() as guard:
        # Released with the connection: the pool's reset on release runs pg_advisory_unlock_all().
        await guard.execute(f"SELECT pg_advisory_lock({JOB_KEY})", str(job_id))
        return await _run(sessions, pool, workspace_id, job_id, on_progress)


async def _run(
    sessions: async_sessionmaker[AsyncSession],
    pool: asyncpg.Pool,
    workspace_id: uuid.UUID,
    job_id: uuid.UUID,
    on_progress: imports.Progress | None,
) -> ImportJob:
    ctx = system_caller(workspace_id)
    async with sessions() as session:
        job = await get(session, ctx, job_id)
        job.status = "running"
        job.started_at = job.started_at or clock.now()
        source = scratch.local_copy(job)
        try:
            if job.file_id is None:
                raise ValueError(UPLOAD_GONE)
            await stored_files.copy_to(sessions, workspace_id, job.file_id, source)
            if job.kind == "interactions":
                await interaction_imports.run(session, job, on_progress)
            elif job.kind == "orders":
                async with _writer(pool) as conn:
                    await order_imports.run(conn, session, job, on_progress)
            else:
                async with _writer(pool) as conn, _writer(pool) as second:
                    await imports.run((conn, second), session, ctx, job, on_progress)
            if job.status != "cancelled":
                job.status = "done"
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            job.status, job.error = "failed", str(exc)[:500]
        finally:
            await asyncio.to_thread(source.unlink, missing_ok=True)
        job.finished_at = clock.now()
        await session.merge(job)
        await session.commit()
    return job


@contextlib.asynccontextmanager
async def _writer(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the pool with the batches' statement limit."""
    async with pool.acquire() as conn:
        # Released with the connection: the pool's reset on release runs RESET ALL.
        await conn.execute("SELECT set_config('statement_timeout', $1, false)", BATCH_STATEMENT_TIMEOUT)
        yield conn
