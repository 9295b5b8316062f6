"""Referrals: a customer brought in with another's referral code, and how far that went
(created, qualified by the referee's first paid order, rewarded; or refused with the reason).

A customer's referral code is not stored: it is `guanxi_referral_code(id)` (migration 0036), the
last eight bytes of the customer's UUIDv7 id (its random part) in hex, unique per workspace by the
expression index below, so every path that writes a customer gives it a code without writing one."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey
from app.models.customer import Customer
from app.models.outbox import OutboxEvent


class Referral(TenantKey, Base):
    """One per referee. `referrer_id` is null only for a refused referral whose code matched no one
    (an import row); `order_id` is the order that qualified it."""

    __tablename__ = "referrals"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "referrer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["workspace_id", "referee_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("uq_referrals_workspace_id_referee_id", "workspace_id", "referee_id", unique=True),
        Index("ix_referrals_workspace_id_referrer_id_id", "workspace_id", "referrer_id", "id"),
        Index("ix_referrals_workspace_id_status_id", "workspace_id", "status", "id"),
    )

    referrer_id: Mapped[uuid.UUID | None]
    referee_id: Mapped[uuid.UUID]
    code: Mapped[str] = mapped_column(String(32))
    # created, qualified, rewarded, refused
    status: Mapped[str] = mapped_column(String(16))
    # refused: self_referral, already_buying, unknown_code, window_passed
    reason: Mapped[str | None] = mapped_column(String(32))
    order_id: Mapped[uuid.UUID | None]
    referrer_points: Mapped[int] = mapped_column(BigInteger)
    referee_points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    qualified_at: Mapped[datetime | None]
    rewarded_at: Mapped[datetime | None]
    refused_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    version: Mapped[int]


# A code names one customer of its workspace; a create reads its referrer through this index.
Index("uq_customers_referral_code", Customer.workspace_id, func.guanxi_referral_code(Customer.id), unique=True)
# The loyalty report's level moves are read from these events.
Index(
    "ix_outbox_events_level_changed",
    OutboxEvent.workspace_id,
    OutboxEvent.occurred_at,
    postgresql_where=text("type = 'loyalty.level_changed'"),
)
