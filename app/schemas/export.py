"""Export job models."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ExportOut(BaseModel):
    id: uuid.UUID
    resource: Literal["customers"]
    format: Literal["csv", "xlsx"]
    status: Literal["queued", "running", "done", "failed"] = Field(examples=["done"])
    rows: int
    created_at: datetime
    finished_at: datetime | None
    download: str | None = Field(description="The file's address once the export is done.")


class ExportPage(BaseModel):
    items: list[ExportOut]
    next_cursor: str | None
