"""Import jobs: an uploaded file, its column mapping, progress, and the rows it rejected."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKeyConstraint, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class ImportJob(TenantKey, Base):
    __tablename__ = "import_jobs"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        # The upload outlives its job only until its retention; the job's record stays.
        ForeignKeyConstraint(
            ["workspace_id", "file_id"], ["stored_files.workspace_id", "stored_files.id"], ondelete="SET NULL (file_id)"
        ),
        Index("ix_import_jobs_queued", "created_at", postgresql_where=text("status = 'queued'")),
    )

    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(12))  # queued | running | done | failed | cancelled
    mode: Mapped[str] = mapped_column(String(12))  # create_only | upsert
    match_on: Mapped[str | None] = mapped_column(String(8))  # email | phone | code
    mapping: Mapped[dict[str, Any]]
    filename: Mapped[str] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(8))
    file_id: Mapped[uuid.UUID | None]
    encoding: Mapped[str | None] = mapped_column(String(16))
    rows_read: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    updated: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(String(500))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ImportRowError(TenantKey, Base):
    __tablename__ = "import_row_errors"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "job_id"], ["import_jobs.workspace_id", "import_jobs.id"], ondelete="CASCADE"
        ),
        Index("ix_import_row_errors_workspace_id_job_id", "workspace_id", "job_id", "row_number"),
    )

    job_id: Mapped[uuid.UUID]
    row_number: Mapped[int] = mapped_column(Integer)
    column: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class ExportJob(TenantKey, Base):
    """A file of customers matching a filter, written by the worker for the caller to download."""

    __tablename__ = "export_jobs"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(
            ["workspace_id", "file_id"], ["stored_files.workspace_id", "stored_files.id"], ondelete="SET NULL (file_id)"
        ),
        Index("ix_export_jobs_queued", "created_at", postgresql_where=text("status = 'queued'")),
    )

    resource: Mapped[str] = mapped_column(String(16))
    file_format: Mapped[str] = mapped_column(String(8))
    filter: Mapped[dict[str, Any] | None]
    # Who asked, as visibility and PII masking must be theirs: workspace, actor, scopes, team.
    caller: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(12))
    rows: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    file_id: Mapped[uuid.UUID | None]
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
