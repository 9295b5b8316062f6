"""People who sign in, and the teams that scope a manager's view."""

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKeyConstraint, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class Team(TenantKey, Base):
    __tablename__ = "teams"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    version: Mapped[int] = mapped_column(server_default=text("1"))


class User(TenantKey, Base):
    __tablename__ = "users"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "team_id"], ["teams.workspace_id", "teams.id"]),
        # One user per address however it is spelled: `email_key` is its NFKC case-folded form.
        Index("uq_users_workspace_id_email_key", "workspace_id", "email_key", unique=True),
        Index("ix_users_workspace_id_team_id", "workspace_id", "team_id"),
    )

    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[uuid.UUID | None]
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Tokens issued before this (a password change or reset) are refused.
    credentials_changed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    version: Mapped[int] = mapped_column(server_default=text("1"))
