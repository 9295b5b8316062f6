"""Sales: pipelines and their ordered stages, opportunities moving through them, and each
opportunity's stage history (what pipeline reports are built on)."""

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKeyConstraint, Index, Numeric, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey

STAGE_KINDS = ("open", "won", "lost")
Money = Numeric(18, 4)


class Pipeline(TenantKey, Base):
    __tablename__ = "pipelines"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))
    deleted_at: Mapped[datetime | None]


class PipelineStage(Base):
    """A stage is known by its code within its pipeline: an opportunity names (pipeline, code), so a
    stage of another pipeline cannot be named, nor a stage in use removed, in the database itself."""

    __tablename__ = "pipeline_stages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "pipeline_id"], ["pipelines.workspace_id", "pipelines.id"], ondelete="CASCADE"
        ),
        CheckConstraint(f"kind IN ({', '.join(repr(k) for k in STAGE_KINDS)})", name="kind"),
        CheckConstraint("probability BETWEEN 0 AND 100", name="probability"),
        CheckConstraint("lost_reason_required = false OR kind = 'lost'", name="lost_reason_on_lost"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    pipeline_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(SmallInteger)
    probability: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[str] = mapped_column(String(8))
    stale_after_days: Mapped[int | None]
    lost_reason_required: Mapped[bool]


class Opportunity(TenantKey, Base):
    __tablename__ = "opportunities"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"]),
        ForeignKeyConstraint(["workspace_id", "owner_id"], ["users.workspace_id", "users.id"]),
        ForeignKeyConstraint(
            ["workspace_id", "pipeline_id", "stage"],
            ["pipeline_stages.workspace_id", "pipeline_stages.pipeline_id", "pipeline_stages.code"],
        ),
        CheckConstraint("amount >= 0", name="amount"),
        CheckConstraint(f"status IN ({', '.join(repr(k) for k in STAGE_KINDS)})", name="status"),
        # The board: live opportunities of a pipeline by stage.
        Index(
            "ix_opportunities_workspace_id_pipeline_id_stage",
            "workspace_id",
            "pipeline_id",
            "stage",
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_opportunities_workspace_id_customer_id", "workspace_id", "customer_id"),
    )

    customer_id: Mapped[uuid.UUID]
    pipeline_id: Mapped[uuid.UUID]
    stage: Mapped[str] = mapped_column(String(64))
    # Its stage's kind (open, won, lost), kept by the writer: a stage in use never changes kind.
    status: Mapped[str] = mapped_column(String(8))
    title: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    expected_close_date: Mapped[date | None]
    owner_id: Mapped[uuid.UUID | None]
    source: Mapped[str | None] = mapped_column(String(64))
    stage_entered_at: Mapped[datetime]
    # Set when the opportunity enters a won or lost stage, cleared when it is reopened.
    closed_at: Mapped[datetime | None]
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    created_by: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))
    deleted_at: Mapped[datetime | None]


class OpportunityStageChange(TenantKey, Base):
    """One row per stage an opportunity entered (its first stage with `from_stage` null), written by
    the opportunity writer only. `seconds_in_previous` is how long it stayed in `from_stage`, so time
    in stage, conversion between stages and cycle length are sums and counts over this table."""

    __tablename__ = "opportunity_stage_history"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "opportunity_id"], ["opportunities.workspace_id", "opportunities.id"], ondelete="CASCADE"
        ),
        Index("ix_opportunity_stage_history_workspace_id_opportunity_id_id", "workspace_id", "opportunity_id", "id"),
        # Reports by pipeline and period: entries into each stage over time.
        Index("ix_opportunity_stage_history_workspace_id_pipeline_id_at", "workspace_id", "pipeline_id", "at"),
    )

    opportunity_id: Mapped[uuid.UUID]
    pipeline_id: Mapped[uuid.UUID]
    from_stage: Mapped[str | None] = mapped_column(String(64))
    to_stage: Mapped[str] = mapped_column(String(64))
    to_kind: Mapped[str] = mapped_column(String(8))
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    seconds_in_previous: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[dict[str, Any]]
    at: Mapped[datetime]
