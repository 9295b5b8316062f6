"""Segments: dynamic (rule-based), static lists and snapshots, with materialised members."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class Segment(TenantKey, Base):
    __tablename__ = "segments"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("uq_segments_workspace_id_builtin", "workspace_id", "builtin", unique=True),
    )

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(1000))
    kind: Mapped[str] = mapped_column(String(16))  # dynamic | static | snapshot
    filter: Mapped[dict[str, Any] | None]
    builtin: Mapped[str | None] = mapped_column(String(64))
    member_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    refreshed_at: Mapped[datetime | None]
    refresh_requested_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class SegmentMember(Base):
    __tablename__ = "segment_members"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "segment_id"], ["segments.workspace_id", "segments.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_segment_members_workspace_id_customer_id", "workspace_id", "customer_id"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    segment_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    added_at: Mapped[datetime]


class SegmentSize(TenantKey, Base):
    """One row per refresh: size, and how many joined and left."""

    __tablename__ = "segment_sizes"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "segment_id"], ["segments.workspace_id", "segments.id"], ondelete="CASCADE"
        ),
        Index("ix_segment_sizes_workspace_id_segment_id", "workspace_id", "segment_id", "measured_at"),
    )

    segment_id: Mapped[uuid.UUID]
    measured_at: Mapped[datetime]
    members: Mapped[int] = mapped_column(Integer)
    joined: Mapped[int] = mapped_column(Integer)
    left: Mapped[int] = mapped_column(Integer)
