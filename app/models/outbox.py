"""The transactional outbox: domain events written in the same transaction as the change."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class OutboxEvent(TenantKey, Base):
    __tablename__ = "outbox_events"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        # Fan-out takes unpublished events in commit order: after a bulk import leaves a million of
        # them, each batch of 500 reads the first 500 of this index instead of sorting them all.
        Index("ix_outbox_events_unpublished_txid_id", "txid", "id", postgresql_where=text("published_at IS NULL")),
        Index("ix_outbox_events_workspace_id_txid_id", "workspace_id", "txid", "id"),
    )

    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    actor: Mapped[dict[str, Any]]
    data: Mapped[dict[str, Any]]
    # Handed to webhook fan-out.
    published_at: Mapped[datetime | None]
    # The writing transaction's id. Readers of the stream only see events of transactions older than
    # every one still running, so an event that commits late can never slip behind a reader's cursor.
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint"))
