"""Import job models."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

ImportType = Literal["customers", "interactions", "orders"]
ImportStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ImportMode = Literal["create_only", "upsert"]
MatchOn = Literal["email", "phone", "code"]


class ImportProgress(BaseModel):
    rows_read: int
    created: int
    updated: int
    skipped: int
    failed: int = Field(description="Rejected rows: listed at /imports/{id}/errors.")


class ImportJobOut(BaseModel):
    id: uuid.UUID
    type: ImportType
    status: ImportStatus
    mode: ImportMode
    match_on: MatchOn | None = Field(description="Customers' upserts only.")
    filename: str
    file_format: Literal["csv", "xlsx"]
    encoding: Literal["utf-8-sig", "gb18030"] | None = Field(description="A CSV's, as detected; null for XLSX.")
    mapping: dict[str, str] = Field(examples=[{"姓名": "name", "手机": "phone"}])
    progress: ImportProgress
    error: str | None = Field(description="Why a failed job stopped.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
