"""The audit log: who changed what, when, with before/after values per field."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class AuditEntry(TenantKey, Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("ix_audit_log_workspace_id_entity", "workspace_id", "entity_type", "entity_id", "id"),
        # The workspace-wide search by who acted.
        Index(
            "ix_audit_log_workspace_id_actor",
            "workspace_id",
            "actor_id",
            "id",
            postgresql_where=text("actor_id IS NOT NULL"),
        ),
    )

    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[uuid.UUID]
    action: Mapped[str] = mapped_column(String(40))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    changes: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
