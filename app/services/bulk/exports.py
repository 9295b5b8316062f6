"""Customer exports: a filter's customers, as the requesting caller may see them, to CSV or XLSX."""

import asyncio
import csv
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
from sqlalchemy import ARRAY, ColumnElement, Row, bindparam, select, text, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import NullType

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, Gone
from app.core.ids import new_id
from app.core.masking import is_masked, mask_personal
from app.core.pagination import SortKey, keyset_page
from app.core.settings import get_settings
from app.core.wire import utc_text
from app.models import Customer, ExportJob
from app.services.bulk import imports
from app.services.bulk.csv_export import join_list, safe_cell
from app.services.bulk.scratch import scratch_dir
from app.services.customers import custom_fields
from app.services.customers.visibility import visible_customer_clauses
from app.services.events import outbox
from app.services.files import stored_files
from app.services.filters.compiler import compile_filter
from app.services.segments import segments

# The import's fields (an export is a file the import takes back: each column maps to the field it
# is named after), then the custom fields as `custom.<key>`, then when the customer was created.
FIELDS = imports.FIELDS
BATCH = 10_000


def _caller_record(ctx: Caller) -> dict[str, Any]:
    return {
        "workspace_id": str(ctx.workspace_id),
        "actor_type": ctx.actor_type,
        "actor_id": str(ctx.actor_id) if ctx.actor_id else None,
        "scopes": sorted(ctx.scopes),
        "visibility": ctx.visibility,
        "user_id": str(ctx.user_id) if ctx.user_id else None,
        "team_id": str(ctx.team_id) if ctx.team_id else None,
    }


def _caller_from(record: dict[str, Any]) -> Caller:
    def as_uuid(value: str | None) -> uuid.UUID | None:
        return uuid.UUID(value) if value else None

    return Caller(
        workspace_id=uuid.UUID(record["workspace_id"]),
        actor_type=record["actor_type"],
        actor_id=as_uuid(record["actor_id"]),
        scopes=frozenset(record["scopes"]),
        visibility=record["visibility"],
        user_id=as_uuid(record["user_id"]),
        team_id=as_uuid(record["team_id"]),
    )


async def create(session: AsyncSession, ctx: Caller, *, file_format: str, filter_: Any) -> ExportJob:
    if filter_ is not None:
        await compile_filter(session, ctx, filter_)
    job = ExportJob(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        resource="customers",
        file_format=file_format,
        filter=filter_,
        caller=_caller_record(ctx),
        status="queued",
        rows=0,
        created_at=clock.now(),
    )
    session.add(job)
    await session.flush()
    await outbox.wake_workers(session)
    return job


def _own(ctx: Caller) -> list[ColumnElement[bool]]:
    """An export belongs to its creator (the actor recorded with it) and to admins: it holds what its
    creator may see, so nobody else reads it, and another caller's export is the same 404 as none."""
    if ctx.sees_all_jobs:
        return []
    return [
        ExportJob.caller["actor_type"].astext == ctx.actor_type,
        ExportJob.caller["actor_id"].astext == (str(ctx.actor_id) if ctx.actor_id else None),
    ]


async def get(session: AsyncSession, ctx: Caller, job_id: uuid.UUID) -> ExportJob:
    statement = scoped.in_workspace(ExportJob, ctx).where(ExportJob.id == job_id, *_own(ctx))
    return await scoped.one(session, statement, missing="No export with that id.")


async def list_exports(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None
) -> tuple[list[ExportJob], str | None]:
    """The caller's own exports (an admin's: everyone's), newest first."""
    statement = scoped.in_workspace(ExportJob, ctx).where(*_own(ctx))
    keys = [SortKey(ExportJob.id, descending=True)]
    return await keyset_page(session, statement, keys, list_name="exports", limit=limit, cursor=cursor)


MEDIA_TYPES = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@dataclass(frozen=True)
class Download:
    media_type: str
    filename: str
    content: AsyncIterator[bytes]


async def download(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], ctx: Caller, job_id: uuid.UUID
) -> Download:
    """The finished file, read from the database a chunk at a time as the client takes it."""
    job = await get(session, ctx, job_id)
    if job.status != "done":
        raise Conflict(f"The export is {job.status}; download it once it is done.")
    if job.file_id is None:
        raise Gone("The export's file is past its retention; export again.")
    return Download(
        media_type=MEDIA_TYPES[job.file_format],
        filename=f"customers-{job.id}.{job.file_format}",
        content=stored_files.content(sessions, job.workspace_id, job.file_id),
    )


def present(job: ExportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "resource": job.resource,
        "format": job.file_format,
        "status": job.status,
        "rows": job.rows,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "download": f"/api/v1/exports/{job.id}/download" if job.status == "done" else None,
    }


async def claim_next(session: AsyncSession) -> ExportJob | None:
    job = await session.scalar(
        select(ExportJob)
        .where(ExportJob.status == "queued")
        .order_by(ExportJob.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if job is not None:
        job.status = "running"
        job.started_at = clock.now()
    return job


# A running export holds a transaction advisory lock on its key for its whole run (`process`), so
# one whose lock is free lost its worker (killed, its round ended by a lost database). Exports only
# read, so such a job is queued again and written afresh. The grace covers the moment between the
# claim's commit and the lock.
ORPHAN_GRACE = timedelta(minutes=1)
_LOCK = "pg_advisory_xact_lock(hashtextextended('export-job:' || CAST(:id AS text), 0))"
REQUEUE_SQL = text(
    """
UPDATE export_jobs SET status = 'queued', started_at = NULL
WHERE status = 'running' AND started_at < CAST(:now AS timestamptz) - CAST(:grace AS interval)
  AND pg_try_advisory_xact_lock(hashtextextended('export-job:' || CAST(id AS text), 0))
RETURNING workspace_id, id
"""
)


async def requeue_orphans(session: AsyncSession) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Running exports no worker holds any more, queued again (an idle worker is woken for them);
    returns them."""
    rows = [(row[0], row[1]) for row in await session.execute(REQUEUE_SQL, {"now": clock.now(), "grace": ORPHAN_GRACE})]
    if rows:
        await outbox.wake_workers(session)
    return rows


# What the file shows, plus the id for the keyset. Arrays come back as the driver's lists: SQLAlchemy's
# per-item array processing cost more than the query.
_ARRAYS = frozenset(column.key for column in Customer.__table__.columns if isinstance(column.type, ARRAY))
EXPORT_COLUMNS = (
    Customer.id,
    *(
        type_coerce(getattr(Customer, column), NullType()).label(column)
        if column in _ARRAYS
        else getattr(Customer, column)
        for column in imports.FIELD_COLUMNS.values()
    ),
    Customer.custom_fields,
    Customer.created_at,
)


async def process(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, workspace_id: uuid.UUID) -> ExportJob:
    """Write the file in batches (keyset over id), masked for the caller, with formula cells escaped."""
    async with sessions() as session:
        # Held by this transaction until its commit, or until its connection is gone.
        await session.execute(text(f"SELECT {_LOCK}"), {"id": str(job_id)})
        job = await session.get(ExportJob, (workspace_id, job_id))
        assert job is not None
        ctx = _caller_from(job.caller)
        stmt = select(*EXPORT_COLUMNS).where(Customer.workspace_id == ctx.workspace_id)
        if job.filter is not None:
            compiled = await compile_filter(session, ctx, job.filter, loc=["filter"])
            stmt = stmt.where(Customer.id.in_(segments.customers_matching(ctx, compiled, for_caller=True)))
        else:
            stmt = stmt.where(*visible_customer_clauses(ctx))
        page = stmt.where(Customer.id > bindparam("after")).order_by(Customer.id).limit(BATCH)
        masked = is_masked(ctx)
        keys = sorted(await custom_fields.definitions(session, ctx))
        path = scratch_dir() / f"export-{job.workspace_id}-{job.id}.{job.file_format}"
        header = [*FIELDS, *(f"custom.{key}" for key in keys), "created_at"]
        writer = await asyncio.to_thread(_Writer, path, job.file_format, header)
        written = 0
        # Core, not the ORM: these are plain rows, and the ORM's row handling doubled the cost.
        connection = await session.connection()
        last = uuid.UUID(int=0)
        try:
            while batch := (await connection.execute(page, {"after": last})).all():
                await asyncio.to_thread(writer.write, [_row(record, keys, masked) for record in batch])
                written += len(batch)
                last = batch[-1].id
            await asyncio.to_thread(writer.close)
            stored = await stored_files.save(
                session,
                job.workspace_id,
                purpose="export",
                name=f"customers-{job.id}.{job.file_format}",
                content_type=MEDIA_TYPES[job.file_format],
                content=stored_files.read_local(path),
                keep_for=timedelta(days=get_settings().file_retention_days),
            )
        finally:
            await asyncio.to_thread(writer.close)
            await asyncio.to_thread(path.unlink, missing_ok=True)
        job.rows, job.file_id, job.status, job.finished_at = written, stored.id, "done", clock.now()
        await session.commit()
        return job


def _row(record: Row[*tuple[Any, ...]], keys: list[str], masked: bool) -> list[str]:
    """A customer's cells in the import's form (lists joined as it splits them), masked by the
    rule every answer to a caller without PII follows."""
    row = dict(record._mapping)
    if masked:
        row = mask_personal(row)
    values = [row[column] for column in imports.FIELD_COLUMNS.values()]
    values += [row["custom_fields"].get(key) for key in keys]
    values.append(row["created_at"])
    return [safe_cell(_text(value)) for value in values]


def _text(value: object) -> str:
    """A value as the import reads it back: lists joined, booleans as true/false, dates in ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, list):
        return join_list(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class _Writer:
    """Rows to a file a batch at a time, so an export of millions never sits in memory."""

    def __init__(self, path: Path, file_format: str, header: list[str]) -> None:
        self.path, self.file_format, self.closed = path, file_format, False
        if file_format == "csv":
            self.file = path.open("w", encoding="utf-8-sig", newline="")
            self.csv = csv.writer(self.file)
            self.csv.writerow(header)
        else:
            self.book = openpyxl.Workbook(write_only=True)
            self.sheet = self.book.create_sheet("customers")
            self.sheet.append(header)

    def write(self, rows: list[list[str]]) -> None:
        if self.file_format == "csv":
            self.csv.writerows(rows)
        else:
            for row in rows:
                self.sheet.append(row)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.file_format == "csv":
            self.file.close()
        else:
            self.book.save(self.path)
