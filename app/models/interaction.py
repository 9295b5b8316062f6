"""Interactions with customers, and the tasks and follow-up plans around them (care rules are
automation rules: app/models/automation.py)."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKeyConstraint, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class Interaction(TenantKey, Base):
    """One contact with a customer: a call, visit, email, chat..."""

    __tablename__ = "interactions"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"]),
        ForeignKeyConstraint(["workspace_id", "user_id"], ["users.workspace_id", "users.id"]),
        Index("ix_interactions_workspace_id_customer_id_occurred_at", "workspace_id", "customer_id", "occurred_at"),
        Index("ix_interactions_workspace_id_user_id_occurred_at", "workspace_id", "user_id", "occurred_at"),
        # Partner systems push their logs again and again: their id makes the import idempotent.
        Index(
            "uq_interactions_workspace_id_source_external_id",
            "workspace_id",
            "source",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        # The writer refuses these with a 422; the database holds the same line for any other path.
        CheckConstraint(
            "(checked_in_at IS NULL AND checked_out_at IS NULL) OR channel = 'visit'", name="visit_times_on_visits"
        ),
        CheckConstraint(
            "checked_out_at IS NULL OR (checked_in_at IS NOT NULL AND checked_out_at >= checked_in_at)",
            name="check_out_after_check_in",
        ),
    )

    customer_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID | None]
    channel: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))
    occurred_at: Mapped[datetime]
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    participants: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    subject: Mapped[str | None] = mapped_column(String(300))
    content: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))
    next_step: Mapped[str | None] = mapped_column(String(500))
    attachments: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    source: Mapped[str] = mapped_column(String(64), server_default="api")
    external_id: Mapped[str | None] = mapped_column(String(128))
    # {latitude, longitude, accuracy_m, address}: where a visit (or any contact) took place.
    location: Mapped[dict[str, Any] | None]
    checked_in_at: Mapped[datetime | None]
    checked_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class Task(TenantKey, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"]),
        ForeignKeyConstraint(["workspace_id", "assignee_id"], ["users.workspace_id", "users.id"]),
        ForeignKeyConstraint(["workspace_id", "interaction_id"], ["interactions.workspace_id", "interactions.id"]),
        ForeignKeyConstraint(
            ["workspace_id", "plan_id"], ["follow_up_plans.workspace_id", "follow_up_plans.id"], ondelete="SET NULL"
        ),
        Index("ix_tasks_workspace_id_assignee_id_status_due_at", "workspace_id", "assignee_id", "status", "due_at"),
        Index("ix_tasks_workspace_id_customer_id", "workspace_id", "customer_id"),
        # The foreign key from tasks: deleting interactions checks each one's tasks through it.
        Index(
            "ix_tasks_workspace_id_interaction_id",
            "workspace_id",
            "interaction_id",
            postgresql_where=text("interaction_id IS NOT NULL"),
        ),
        # A plan keeps at most one open task per customer: changing or re-running it adds none.
        Index(
            "uq_tasks_open_plan_task",
            "workspace_id",
            "plan_id",
            "customer_id",
            unique=True,
            postgresql_where=text("status = 'open' AND plan_id IS NOT NULL"),
        ),
        # Care reminders carry the occasion and year: one reminder per occasion, however often run.
        Index(
            "uq_tasks_workspace_id_dedupe_key",
            "workspace_id",
            "dedupe_key",
            unique=True,
            postgresql_where=text("dedupe_key IS NOT NULL"),
        ),
    )

    customer_id: Mapped[uuid.UUID]
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))
    # Never nobody's: the customer's owner, else the workspace's default assignee or first admin.
    assignee_id: Mapped[uuid.UUID]
    due_at: Mapped[datetime]
    priority: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(12))
    origin: Mapped[str] = mapped_column(String(12))
    plan_id: Mapped[uuid.UUID | None]
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    interaction_id: Mapped[uuid.UUID | None]
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class FollowUpPlan(TenantKey, Base):
    """A rule that creates follow-up tasks: every N days, or N days after the first purchase."""

    __tablename__ = "follow_up_plans"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    name: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(32))
    days: Mapped[int] = mapped_column(Integer)
    audience: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    task_title: Mapped[str] = mapped_column(String(300))
    task_kind: Mapped[str] = mapped_column(String(16))
    task_priority: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    last_run_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))
