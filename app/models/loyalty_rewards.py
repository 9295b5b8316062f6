"""Loyalty rewards (what points buy, with their stock) and vouchers (what a customer holds: a code
kept only as its hash, redeemed against one order once)."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKeyConstraint, Index, Integer, Numeric, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class LoyaltyReward(TenantKey, Base):
    """A reward: its points cost, what its voucher is worth, and `stock` (null: unlimited), taken
    one unit per voucher by a conditional UPDATE."""

    __tablename__ = "loyalty_rewards"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        CheckConstraint("points_cost >= 0", name="points_cost_not_negative"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock_not_negative"),
        CheckConstraint("per_customer_limit IS NULL OR per_customer_limit >= 1", name="limit_positive"),
        CheckConstraint("(kind = 'gift') = (value IS NULL)", name="value_with_discount"),
    )

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000))
    points_cost: Mapped[int] = mapped_column(BigInteger)
    # gift, discount_amount, discount_percent
    kind: Mapped[str] = mapped_column(String(24))
    value: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int | None] = mapped_column(BigInteger)
    per_customer_limit: Mapped[int | None] = mapped_column(Integer)
    eligible_levels: Mapped[list[str]] = mapped_column(ARRAY(Text))
    valid_from: Mapped[datetime | None]
    valid_until: Mapped[datetime | None]
    voucher_valid_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    version: Mapped[int]


class LoyaltyVoucher(TenantKey, Base):
    """A customer's voucher: its terms copied from the reward when issued (a later change of the
    reward leaves it as it was), the code's SHA-256 and a short prefix to recognise it by."""

    __tablename__ = "loyalty_vouchers"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(["workspace_id", "reward_id"], ["loyalty_rewards.workspace_id", "loyalty_rewards.id"]),
        # A member who leaves the program takes its redemptions with it; the vouchers they paid for
        # stay the customer's, with nothing to give back when voided.
        ForeignKeyConstraint(
            ["workspace_id", "redemption_id"],
            ["loyalty_redemptions.workspace_id", "loyalty_redemptions.id"],
            ondelete="SET NULL (redemption_id)",
        ),
        ForeignKeyConstraint(["workspace_id", "order_id"], ["orders.workspace_id", "orders.id"]),
        CheckConstraint("points >= 0", name="points_not_negative"),
        CheckConstraint("(status = 'redeemed') = (order_id IS NOT NULL)", name="order_when_redeemed"),
        Index("uq_loyalty_vouchers_workspace_id_code_hash", "workspace_id", "code_hash", unique=True),
        Index("ix_loyalty_vouchers_workspace_id_customer_id_id", "workspace_id", "customer_id", "id"),
        # The per-customer limit counts a customer's vouchers of one reward.
        Index(
            "ix_loyalty_vouchers_reward_customer",
            "workspace_id",
            "reward_id",
            "customer_id",
            postgresql_where=text("reward_id IS NOT NULL"),
        ),
        Index(
            "ix_loyalty_vouchers_workspace_id_redemption_id",
            "workspace_id",
            "redemption_id",
            postgresql_where=text("redemption_id IS NOT NULL"),
        ),
        Index(
            "ix_loyalty_vouchers_workspace_id_order_id",
            "workspace_id",
            "order_id",
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )

    customer_id: Mapped[uuid.UUID]
    reward_id: Mapped[uuid.UUID | None]
    redemption_id: Mapped[uuid.UUID | None]
    code_hash: Mapped[str] = mapped_column(String(64))
    code_prefix: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(24))
    value: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    points: Mapped[int] = mapped_column(BigInteger)
    # reward (bought with points by a redemption), admin (issued by hand, with a reason)
    source: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    # issued, redeemed, voided (an issued voucher past `expires_at` reads as expired)
    status: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    order_id: Mapped[uuid.UUID | None]
    redeemed_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    actor: Mapped[dict[str, Any]]
    version: Mapped[int]
