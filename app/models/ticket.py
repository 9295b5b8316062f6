"""Feedback and complaint tickets with their SLA clock, comments and history; satisfaction surveys."""

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class TicketCategory(TenantKey, Base):
    __tablename__ = "ticket_categories"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "parent_id"], ["ticket_categories.workspace_id", "ticket_categories.id"]),
    )

    name: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class Ticket(TenantKey, Base):
    __tablename__ = "tickets"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"]),
        ForeignKeyConstraint(
            ["workspace_id", "category_id"], ["ticket_categories.workspace_id", "ticket_categories.id"]
        ),
        ForeignKeyConstraint(["workspace_id", "assignee_id"], ["users.workspace_id", "users.id"]),
        ForeignKeyConstraint(["workspace_id", "team_id"], ["teams.workspace_id", "teams.id"]),
        Index("uq_tickets_workspace_id_number", "workspace_id", "number", unique=True),
        Index("ix_tickets_workspace_id_customer_id", "workspace_id", "customer_id", "created_at"),
        Index("ix_tickets_workspace_id_status_created_at", "workspace_id", "status", "created_at"),
        # The service report's period: tickets created in a window, whatever their status.
        Index("ix_tickets_workspace_id_created_at", "workspace_id", "created_at"),
        # The service report's CSAT by tier and by segment, from the index alone.
        Index(
            "ix_tickets_rated",
            "workspace_id",
            "created_at",
            postgresql_include=["customer_id", "csat_score", "tier"],
            postgresql_where=text("csat_score IS NOT NULL"),
        ),
        Index(
            "ix_tickets_open_due",
            "workspace_id",
            "resolution_due_at",
            postgresql_where=text("status NOT IN ('resolved', 'closed')"),
        ),
        Index("ix_tickets_tags", "tags", postgresql_using="gin"),
    )

    number: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[uuid.UUID]
    type: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    category_id: Mapped[uuid.UUID | None]
    priority: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(24))
    assignee_id: Mapped[uuid.UUID | None]
    team_id: Mapped[uuid.UUID | None]
    order_id: Mapped[uuid.UUID | None]
    interaction_id: Mapped[uuid.UUID | None]
    # {"items": [{"url", "name", "content_type", "size_bytes"}]}: references to files kept elsewhere.
    attachments: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    escalated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    tier: Mapped[str | None] = mapped_column(String(16))
    first_response_due_at: Mapped[datetime | None]
    resolution_due_at: Mapped[datetime | None]
    # While waiting on the customer the clock stops: what was left is kept in business minutes.
    paused_at: Mapped[datetime | None]
    response_minutes_left: Mapped[int | None] = mapped_column(Integer)
    resolution_minutes_left: Mapped[int | None] = mapped_column(Integer)
    first_responded_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    first_response_breached: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    resolution_breached: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    csat_score: Mapped[int | None] = mapped_column(SmallInteger)
    csat_comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class TicketComment(TenantKey, Base):
    __tablename__ = "ticket_comments"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id", "ticket_id"], ["tickets.workspace_id", "tickets.id"], ondelete="CASCADE"),
        Index("ix_ticket_comments_workspace_id_ticket_id", "workspace_id", "ticket_id", "created_at"),
    )

    ticket_id: Mapped[uuid.UUID]
    public: Mapped[bool] = mapped_column(Boolean)
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class TicketEvent(TenantKey, Base):
    """The ticket's history: status changes, assignment, escalation, comments, SLA breaches."""

    __tablename__ = "ticket_events"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id", "ticket_id"], ["tickets.workspace_id", "tickets.id"], ondelete="CASCADE"),
        Index("ix_ticket_events_workspace_id_ticket_id", "workspace_id", "ticket_id", "at"),
    )

    ticket_id: Mapped[uuid.UUID]
    action: Mapped[str] = mapped_column(String(32))
    from_value: Mapped[str | None] = mapped_column(String(100))
    to_value: Mapped[str | None] = mapped_column(String(100))
    actor: Mapped[dict[str, Any]]
    at: Mapped[datetime]


class SlaPolicy(TenantKey, Base):
    __tablename__ = "sla_policies"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index(
            "uq_sla_policies_workspace_id_priority_tier",
            "workspace_id",
            "priority",
            "tier",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
    )

    priority: Mapped[str] = mapped_column(String(8))
    tier: Mapped[str | None] = mapped_column(String(16))
    first_response_minutes: Mapped[int] = mapped_column(Integer)
    resolution_minutes: Mapped[int] = mapped_column(Integer)


class BusinessHours(Base):
    __tablename__ = "business_hours"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64))
    # {"0": [["09:00", "18:00"]], ...}: Monday is 0; a missing day is closed.
    weekly: Mapped[dict[str, Any]]
    holidays: Mapped[list[date]] = mapped_column(ARRAY(Date), server_default="{}")
    # Make-up working days (调休): dates open on their weekday's hours of a working day though the week
    # has them closed.
    workdays: Mapped[list[date]] = mapped_column(ARRAY(Date), server_default="{}")
    version: Mapped[int] = mapped_column(server_default=text("1"))


class CsatRequest(Base):
    __tablename__ = "csat_requests"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id", "ticket_id"], ["tickets.workspace_id", "tickets.id"], ondelete="CASCADE"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[uuid.UUID]
    ticket_id: Mapped[uuid.UUID]
    expires_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]


class Survey(TenantKey, Base):
    """An NPS survey: one 0-10 answer per customer."""

    __tablename__ = "surveys"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    name: Mapped[str] = mapped_column(String(200))
    question: Mapped[str] = mapped_column(String(500))
    segment_id: Mapped[uuid.UUID | None]
    channel: Mapped[str] = mapped_column(String(16))
    opens_at: Mapped[datetime]
    closes_at: Mapped[datetime | None]
    # Closed by hand (POST /surveys/{id}/close), as against a `closes_at` reached.
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class SurveyResponse(Base):
    __tablename__ = "survey_responses"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id", "survey_id"], ["surveys.workspace_id", "surveys.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    survey_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    score: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime]


class IntakeForm(TenantKey, Base):
    """A public web form or partner feed that opens tickets, authenticated by its own token."""

    __tablename__ = "intake_forms"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("uq_intake_forms_token_hash", "token_hash", unique=True),
    )

    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    revoked_at: Mapped[datetime | None]
    token_rotated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


# The service report's daily figures, written only by the triggers of migration 0017 (appended signed
# rows, folded by guanxi_compact_ticket_stats()); no key, so they are tables, not mapped classes.
ticket_day_counts = Table(
    "ticket_day_counts",
    Base.metadata,
    Column("workspace_id", Uuid, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("type", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("category_id", Uuid),
    Column("tickets", Integer, nullable=False),
    Column("sla_judged", Integer, nullable=False),
    Column("sla_met", Integer, nullable=False),
    Column("csat_sum", Integer, nullable=False),
    Column("csat_count", Integer, nullable=False),
    Column("compacted", Boolean, nullable=False, server_default=text("false")),
    Index("ix_ticket_day_counts_workspace_id_day", "workspace_id", "day"),
    Index("ix_ticket_day_counts_appended", "workspace_id", postgresql_where=text("NOT compacted")),
)

ticket_day_latency = Table(
    "ticket_day_latency",
    Base.metadata,
    Column("workspace_id", Uuid, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("metric", String(16), nullable=False),
    Column("bucket", SmallInteger, nullable=False),
    Column("tickets", Integer, nullable=False),
    Column("compacted", Boolean, nullable=False, server_default=text("false")),
    Index("ix_ticket_day_latency_workspace_id_day", "workspace_id", "day"),
    Index("ix_ticket_day_latency_appended", "workspace_id", postgresql_where=text("NOT compacted")),
)
