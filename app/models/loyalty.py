"""Loyalty: the workspace's program and levels documents, member accounts, the points ledger, its
lots (what each credit has left, when it becomes available and when it expires) and redemptions."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class LoyaltyDocument(Base):
    """One versioned settings document per workspace and kind (`program`, `levels`)."""

    __tablename__ = "loyalty_documents"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    document: Mapped[dict[str, Any]]
    version: Mapped[int]
    updated_at: Mapped[datetime]


class LoyaltyAccount(Base):
    """A member: `balance` is the sum of the member's ledger, written only with a ledger entry and
    under this row's lock."""

    __tablename__ = "loyalty_accounts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        Index("ix_loyalty_accounts_workspace_id_level", "workspace_id", "level"),
        Index("ix_loyalty_accounts_workspace_id_balance", "workspace_id", "balance"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str | None] = mapped_column(String(32))
    level_since: Mapped[datetime | None]
    enrolled_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LoyaltyEntry(TenantKey, Base):
    """One movement of points; `points` signed. An order line earns once: (order, line) is unique
    among `earn` entries."""

    __tablename__ = "loyalty_entries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            ondelete="CASCADE",
        ),
        CheckConstraint("points <> 0", name="points_not_zero"),
        Index("ix_loyalty_entries_workspace_id_customer_id_id", "workspace_id", "customer_id", "id"),
        Index(
            "uq_loyalty_entries_earned_line",
            "workspace_id",
            "order_id",
            "line_no",
            unique=True,
            postgresql_where=text("kind = 'earn'"),
        ),
        Index(
            "ix_loyalty_entries_workspace_id_created_at",
            "workspace_id",
            "created_at",
            postgresql_include=["kind", "points"],
        ),
        Index(
            "ix_loyalty_entries_workspace_id_order_id",
            "workspace_id",
            "order_id",
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )

    customer_id: Mapped[uuid.UUID]
    # earn, reverse, redeem, redeem_cancel, adjust, expire
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[uuid.UUID | None]
    line_no: Mapped[int | None] = mapped_column(Integer)
    redemption_id: Mapped[uuid.UUID | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


DUE_EXPRESSION = "\nCASE\n    WHEN remaining > 0 THEN expires_at\n    ELSE NULL::timestamp with time zone\nEND"


class LoyaltyLot(TenantKey, Base):
    """What one credit has left: spent first in, first out; pending until `available_at`; expired
    (its remainder written off by an `expire` entry) at `expires_at`."""

    __tablename__ = "loyalty_lots"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["workspace_id", "entry_id"], ["loyalty_entries.workspace_id", "loyalty_entries.id"], ondelete="CASCADE"
        ),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_within_points"),
        Index(
            "ix_loyalty_lots_open",
            "workspace_id",
            "customer_id",
            "id",
            postgresql_where=text("remaining > 0"),
        ),
        # Expiry finds due lots by this expression (null once spent), whose statistics count them;
        # written as PostgreSQL prints it, so the model and the migration compare equal.
        Index("ix_loyalty_lots_due", text(DUE_EXPRESSION)),
        Index("ix_loyalty_lots_workspace_id_entry_id", "workspace_id", "entry_id"),
        # A refund finds its order's lots.
        Index(
            "ix_loyalty_lots_workspace_id_order_id",
            "workspace_id",
            "order_id",
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )

    customer_id: Mapped[uuid.UUID]
    entry_id: Mapped[uuid.UUID]
    order_id: Mapped[uuid.UUID | None]
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    available_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class LoyaltyRedemption(TenantKey, Base):
    __tablename__ = "loyalty_redemptions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            ondelete="CASCADE",
        ),
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_loyalty_redemptions_workspace_id_customer_id_id", "workspace_id", "customer_id", "id"),
    )

    customer_id: Mapped[uuid.UUID]
    points: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(500))
    # active, cancelled
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    version: Mapped[int]


class LoyaltyRedemptionLot(Base):
    """How many points a redemption took from each lot: a cancel gives them back to the same lots."""

    __tablename__ = "loyalty_redemption_lots"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "redemption_id"],
            ["loyalty_redemptions.workspace_id", "loyalty_redemptions.id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["workspace_id", "lot_id"], ["loyalty_lots.workspace_id", "loyalty_lots.id"], ondelete="CASCADE"
        ),
        Index("ix_loyalty_redemption_lots_workspace_id_lot_id", "workspace_id", "lot_id"),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    redemption_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lot_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)


# The loyalty report's daily movements, written only by the triggers of migration 0038 (appended
# signed rows, folded by guanxi_compact_loyalty_figures()); no key, so a table, not a mapped class.
loyalty_day_figures = Table(
    "loyalty_day_figures",
    Base.metadata,
    Column("workspace_id", Uuid, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("entries", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("compacted", Boolean, nullable=False, server_default=text("false")),
    Index(
        "ix_loyalty_day_figures_workspace_id_day",
        "workspace_id",
        "day",
        postgresql_include=["kind", "entries", "points"],
    ),
    Index("ix_loyalty_day_figures_appended", "workspace_id", postgresql_where=text("NOT compacted")),
)
