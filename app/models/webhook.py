"""Webhook endpoints, one delivery per (endpoint, event), and the log of every attempt."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKeyConstraint, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class WebhookEndpoint(TenantKey, Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    # Exact types, `family.*` wildcards, or `*`.
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # Workers have deliveries of this endpoint to move, a batch at a time: pending ones to `held`
    # after it was disabled, held ones back to pending once it is enabled again.
    settling: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # The signing key must be readable to sign with; it is shown to the owner once, never listed.
    secret: Mapped[str] = mapped_column(String(100))
    # Secrets replaced by rotations, each signing beside the current one until its own overlap ends:
    # [{"secret": "whsec_…", "expires_at": "<RFC 3339>"}].
    previous_secrets: Mapped[list[dict[str, str]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The first failed attempt since the last success (or since the endpoint was enabled): every
    # attempt has failed since then. Null while the latest attempt succeeded.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class WebhookDelivery(TenantKey, Base):
    """One event to one endpoint. `state` moves pending → sending → succeeded | pending | failed; a
    disabled endpoint's waiting deliveries are `held` (never sent) until it is enabled again."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "endpoint_id"],
            ["webhook_endpoints.workspace_id", "webhook_endpoints.id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["workspace_id", "event_id"], ["outbox_events.workspace_id", "outbox_events.id"], ondelete="CASCADE"
        ),
        Index("uq_webhook_deliveries_endpoint_event", "workspace_id", "endpoint_id", "event_id", unique=True),
        Index("ix_webhook_deliveries_endpoint_created", "workspace_id", "endpoint_id", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('pending', 'sending')"),
        ),
        Index("ix_webhook_deliveries_held", "workspace_id", "endpoint_id", postgresql_where=text("state = 'held'")),
    )

    endpoint_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    # Attempts made before the current retry schedule began: a redelivery or the release of a held
    # delivery starts the schedule afresh.
    schedule_offset: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    next_attempt_at: Mapped[datetime]
    # While `sending`, the claim is valid until this time; a worker that died leaves it to expire.
    locked_until: Mapped[datetime | None]
    # The dedupe key of the queued job that carries the next attempt (several deliveries share one
    # job); the sweep queues a due delivery again only when no job of that key is waiting or running.
    job_key: Mapped[str | None] = mapped_column(Text)
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    succeeded_at: Mapped[datetime | None]


class WebhookAttempt(TenantKey, Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "delivery_id"],
            ["webhook_deliveries.workspace_id", "webhook_deliveries.id"],
            ondelete="CASCADE",
        ),
        # One row per attempt number: two workers can never both record (and so send) the same attempt.
        Index("uq_webhook_attempts_delivery_attempt", "workspace_id", "delivery_id", "attempt", unique=True),
    )

    delivery_id: Mapped[uuid.UUID]
    attempt: Mapped[int] = mapped_column(SmallInteger)
    started_at: Mapped[datetime]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(String(500))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    request_headers: Mapped[dict[str, Any]]
