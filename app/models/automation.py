"""Automation rules, the record of each run (one per rule, trigger and customer), and the event
cursor each workspace's event rules read the committed stream from."""

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKeyConstraint, Index, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class AutomationRule(TenantKey, Base):
    __tablename__ = "automation_rules"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        # The worker's look-ups: the event rules of a workspace by type, the schedules that are due.
        Index(
            "ix_automation_rules_event_type",
            "workspace_id",
            "event_type",
            postgresql_where=text("active AND deleted_at IS NULL AND trigger_kind = 'event'"),
        ),
        Index(
            "ix_automation_rules_next_run_at",
            "next_run_at",
            postgresql_where=text("active AND deleted_at IS NULL AND trigger_kind = 'schedule'"),
        ),
    )

    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    trigger_kind: Mapped[str] = mapped_column(String(16))  # event | schedule | date
    trigger: Mapped[dict[str, Any]]
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # Event rules: the type they listen to, and the first transaction they hear (events committed
    # before the rule was saved or switched on are not its business).
    event_type: Mapped[str | None] = mapped_column(String(64))
    listening_since_txid: Mapped[int | None] = mapped_column(BigInteger)
    # Schedule rules: the next firing, in UTC.
    next_run_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    # `care_rules` for a rule kept through the deprecated /care-rules API (its tasks say `care`).
    managed_by: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class AutomationRun(TenantKey, Base):
    """A rule ran (or was skipped) for a customer on a trigger. The unique key is the exactly-once
    guarantee: the run and its internal actions commit together, and a second runner's insert of
    the same key does nothing."""

    __tablename__ = "automation_runs"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "rule_id"], ["automation_rules.workspace_id", "automation_rules.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index(
            "uq_automation_runs_rule_trigger_customer",
            "workspace_id",
            "rule_id",
            "trigger_key",
            "customer_id",
            unique=True,
        ),
        Index("ix_automation_runs_workspace_id_rule_id_id", "workspace_id", "rule_id", "id"),
    )

    rule_id: Mapped[uuid.UUID]
    trigger_key: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID | None]
    # Date triggers: the customer's occasion the run was for.
    occasion: Mapped[date | None]
    depth: Mapped[int] = mapped_column(SmallInteger)
    outcome: Mapped[str] = mapped_column(String(8))  # ok | failed | skipped
    reason: Mapped[str | None] = mapped_column(String(500))
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    ran_at: Mapped[datetime]


class AutomationEventCursor(Base):
    """How far a workspace's event rules have read the committed event stream."""

    __tablename__ = "automation_event_cursors"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    txid: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[uuid.UUID]
    updated_at: Mapped[datetime]
