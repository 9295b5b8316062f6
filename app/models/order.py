"""Orders pushed by shops, ERPs and partners, with their lines."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Numeric, SmallInteger, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey

Money = Numeric(18, 4)


class Order(TenantKey, Base):
    __tablename__ = "orders"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["workspace_id", "customer_id"], ["customers.workspace_id", "customers.id"]),
        # Partners push the same order again and again: (source, external id) is the upsert key.
        Index("uq_orders_workspace_id_source_external_id", "workspace_id", "source", "external_id", unique=True),
        Index("ix_orders_workspace_id_customer_id_ordered_at", "workspace_id", "customer_id", "ordered_at"),
        # The workspace's order list, newest (or oldest) first.
        Index("ix_orders_workspace_id_ordered_at_id", "workspace_id", "ordered_at", "id"),
    )

    customer_id: Mapped[uuid.UUID]
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    ordered_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    total_amount: Mapped[Decimal] = mapped_column(Money)
    refunded_amount: Mapped[Decimal] = mapped_column(Money, server_default=text("0"))
    channel: Mapped[str | None] = mapped_column(String(64))
    store: Mapped[str | None] = mapped_column(String(128))
    # Where the goods are, apart from `status` (the money): written only by app/services/value/fulfilment.py.
    fulfilment_status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    tracking_reference: Mapped[str | None] = mapped_column(String(128))
    fulfilment_updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))


class OrderLine(TenantKey, Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id", "order_id"], ["orders.workspace_id", "orders.id"], ondelete="CASCADE"),
        Index("ix_order_lines_workspace_id_order_id", "workspace_id", "order_id"),
    )

    order_id: Mapped[uuid.UUID]
    line_no: Mapped[int] = mapped_column(SmallInteger)
    sku: Mapped[str] = mapped_column(String(64))
    product_name: Mapped[str] = mapped_column(String(300))
    category: Mapped[str | None] = mapped_column(String(100))
    quantity: Mapped[Decimal] = mapped_column(Money)
    unit_price: Mapped[Decimal] = mapped_column(Money)


class OrderFulfilmentChange(TenantKey, Base):
    """An order's fulfilment history: its first status (`from_status` null) and every change since."""

    __tablename__ = "order_fulfilment_history"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id", "order_id"], ["orders.workspace_id", "orders.id"], ondelete="CASCADE"),
        Index("ix_order_fulfilment_history_workspace_id_order_id_at_id", "workspace_id", "order_id", "at", "id"),
    )

    order_id: Mapped[uuid.UUID]
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    tracking_reference: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[dict[str, Any]]
    at: Mapped[datetime]
