"""Workspace-defined customer fields: type and validation for values kept in `custom_fields`."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKeyConstraint, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class CustomFieldDefinition(TenantKey, Base):
    __tablename__ = "custom_field_definitions"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("uq_custom_field_definitions_workspace_id_key", "workspace_id", "key", unique=True),
    )

    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    required: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Type-specific rules: options for select types, min/max for numbers, max_length for text.
    rules: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    version: Mapped[int] = mapped_column(server_default=text("1"))
