"""API keys for partner systems: prefixed, stored as a hash, scoped and revocable."""

import uuid
from datetime import datetime

from sqlalchemy import ForeignKeyConstraint, String, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class ApiKey(TenantKey, Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "created_by"], ["users.workspace_id", "users.id"]),
    )

    name: Mapped[str] = mapped_column(String(200))
    # The public part of the key, unique across workspaces: the lookup needs no tenant.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
