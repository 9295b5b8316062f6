"""Customer value: per-customer figures, workspace tiers and scoring models, tier history."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKeyConstraint, Index, Integer, Numeric, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey

Money = Numeric(18, 4)


class CustomerValue(Base):
    """Figures of one customer, kept current per order and recomputed in full nightly."""

    __tablename__ = "customer_values"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_customer_values_workspace_id_tier", "workspace_id", "tier"),
        Index("ix_customer_values_workspace_id_rfm_segment", "workspace_id", "rfm_segment"),
        Index("ix_customer_values_workspace_id_total_spend", "workspace_id", "total_spend"),
        Index(
            "ix_customer_values_prediction_due",
            "workspace_id",
            "customer_id",
            postgresql_where=text("prediction_due"),
        ),
        # Room on each page for updates in place (migration 0013).
        {"postgresql_with": {"fillfactor": 80}},
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    first_purchase_at: Mapped[datetime | None]
    last_purchase_at: Mapped[datetime | None]
    order_count: Mapped[int] = mapped_column(Integer)
    total_spend: Mapped[Decimal] = mapped_column(Money)
    avg_order_value: Mapped[Decimal | None] = mapped_column(Money)
    window_spend: Mapped[Decimal] = mapped_column(Money)
    window_orders: Mapped[int] = mapped_column(Integer)
    # [{"category", "spend", "orders"}], best first.
    favourite_categories: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    avg_interval_days: Mapped[float | None] = mapped_column(Float)
    predicted_next_purchase_at: Mapped[datetime | None]
    recency_score: Mapped[int | None] = mapped_column(SmallInteger)
    frequency_score: Mapped[int | None] = mapped_column(SmallInteger)
    monetary_score: Mapped[int | None] = mapped_column(SmallInteger)
    rfm_segment: Mapped[str | None] = mapped_column(String(32))
    expected_purchases_365: Mapped[float | None] = mapped_column(Float)
    ltv_predicted: Mapped[Decimal | None] = mapped_column(Money)
    tier: Mapped[str | None] = mapped_column(String(16))
    tier_since: Mapped[datetime | None]
    # Set by every figures write that changed the row; the worker predicts such rows in batches
    # and clears it (migration 0014).
    prediction_due: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[datetime]


class ValueTier(TenantKey, Base):
    """A workspace-defined tier; a customer gets the best-ranked tier whose every rule holds."""

    __tablename__ = "value_tiers"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("uq_value_tiers_workspace_id_code", "workspace_id", "code", unique=True),
        Index("uq_value_tiers_workspace_id_rank", "workspace_id", "rank", unique=True),
    )

    code: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(SmallInteger)
    min_spend: Mapped[Decimal | None] = mapped_column(Money)
    min_orders: Mapped[int | None] = mapped_column(Integer)
    max_recency_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class TierChange(TenantKey, Base):
    __tablename__ = "tier_changes"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"], ondelete="CASCADE"
        ),
        Index("ix_tier_changes_workspace_id_customer_id", "workspace_id", "customer_id", "changed_at"),
        Index("ix_tier_changes_workspace_id_changed_at", "workspace_id", "changed_at"),
    )

    customer_id: Mapped[uuid.UUID]
    from_tier: Mapped[str | None] = mapped_column(String(16))
    to_tier: Mapped[str | None] = mapped_column(String(16))
    changed_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(32))


class ValueModel(Base):
    """Per workspace: RFM quintile edges, the tier window, and the fitted lifetime-value models."""

    __tablename__ = "value_models"
    __table_args__ = (ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tier_window_days: Mapped[int] = mapped_column(Integer, server_default=text("365"))
    recency_edges: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    frequency_edges: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    monetary_edges: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    bgnbd: Mapped[dict[str, Any] | None]
    gamma_gamma: Mapped[dict[str, Any] | None]
    recompute_requested_at: Mapped[datetime | None]
    recomputed_at: Mapped[datetime | None]
    recompute_seconds: Mapped[float | None] = mapped_column(Float)
