"""Lifecycle stages: the workspace's ordered stages, each customer's current one, and history."""

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKeyConstraint, Index, Integer, Numeric, SmallInteger, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class LifecycleStage(Base):
    __tablename__ = "lifecycle_stages"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(SmallInteger)


class CustomerStage(Base):
    """The stage a customer is in now (one row per customer that has one)."""

    __tablename__ = "customer_stages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_customer_stages_workspace_id_stage", "workspace_id", "stage"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(32))
    entered_at: Mapped[datetime]


class StageHistory(TenantKey, Base):
    """Every stay in a stage: entered, left (null while current), and who or which rule moved it."""

    __tablename__ = "stage_history"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_stage_history_workspace_id_customer_id", "workspace_id", "customer_id", "entered_at"),
        Index("ix_stage_history_workspace_id_stage_entered_at", "workspace_id", "stage", "entered_at"),
    )

    customer_id: Mapped[uuid.UUID]
    stage: Mapped[str] = mapped_column(String(32))
    from_stage: Mapped[str | None] = mapped_column(String(32))
    entered_at: Mapped[datetime]
    left_at: Mapped[datetime | None]
    by_user_id: Mapped[uuid.UUID | None]
    by_rule: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(500))


class LifecycleRules(Base):
    """A workspace's thresholds for the stage rules; a workspace without a row uses the defaults."""

    __tablename__ = "lifecycle_rules"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    loyal_orders: Mapped[int] = mapped_column(Integer)
    loyal_spend: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    at_risk_days: Mapped[int] = mapped_column(Integer)
    churned_days: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    version: Mapped[int] = mapped_column(server_default=text("1"))
