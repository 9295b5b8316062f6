"""Outreach: the channels messages go out on, the messages, and the addresses never to send to."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class Channel(TenantKey, Base):
    """A provider account: SMTP, Alibaba Cloud SMS, Tencent Cloud SMS, a WeCom robot or a signed URL."""

    __tablename__ = "channels"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        # The public callback routes find their channel by this token alone.
        Index("uq_channels_callback_token", "callback_token", unique=True),
    )

    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    # What is not secret: host, port, sender, sign name, endpoint... (per kind, `schemas.outreach`).
    settings: Mapped[dict[str, Any]]
    # The secrets (password, access keys, robot key, signing secret) as one MultiFernet token.
    sealed_secrets: Mapped[str] = mapped_column(Text)
    callback_token: Mapped[str] = mapped_column(String(64))
    # Local times "HH:MM" in the workspace's zone; marketing created between them waits for the end.
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    # At most `cap_count` marketing messages per customer in `cap_hours` (rolling); null: no cap.
    cap_count: Mapped[int | None] = mapped_column(Integer)
    cap_hours: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class Message(TenantKey, Base):
    """One message to one customer. `status` moves queued → sending → sent → delivered, or to
    failed, or to `unknown` (sent, or maybe sent, with no answer: never sent again by itself)."""

    __tablename__ = "messages"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"]),
        ForeignKeyConstraint(["workspace_id", "channel_id"], ["channels.workspace_id", "channels.id"]),
        Index("uq_messages_dedupe_key", "workspace_id", "dedupe_key", unique=True),
        Index("ix_messages_customer", "workspace_id", "customer_id", "id"),
        # Frequency caps count a customer's recent marketing on a channel.
        Index("ix_messages_cap", "workspace_id", "customer_id", "channel_id", "created_at"),
        Index("ix_messages_due", "send_after", postgresql_where=text("status = 'queued'")),
        Index("ix_messages_sending", "locked_until", postgresql_where=text("status = 'sending'")),
        # Receipts name the provider's id.
        Index("ix_messages_provider_id", "channel_id", "provider_message_id"),
        Index("ix_messages_recipient", "workspace_id", "channel_id", "recipient", "id"),
    )

    customer_id: Mapped[uuid.UUID]
    channel_id: Mapped[uuid.UUID]
    purpose: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str | None] = mapped_column(String(320))
    # What to send, per kind: subject/body, text, or a provider template code and its parameters.
    content: Mapped[dict[str, Any]]
    dedupe_key: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))
    actor: Mapped[dict[str, Any]]
    send_after: Mapped[datetime]
    # Attempts claimed so far; a claim is valid until `locked_until`.
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    locked_until: Mapped[datetime | None]
    # A job of the queue carries it until then; after that the sweep queues it again.
    queued_until: Mapped[datetime | None]
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(String(500))
    interaction_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]


class Suppression(TenantKey, Base):
    """An address never to send to on a channel kind (`email` or `sms`): bounced, unsubscribed,
    complained, or added by hand."""

    __tablename__ = "suppressions"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("uq_suppressions_address", "workspace_id", "medium", "address", unique=True),
    )

    medium: Mapped[str] = mapped_column(String(8))
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
