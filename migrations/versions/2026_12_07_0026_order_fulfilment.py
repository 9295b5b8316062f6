"""orders' fulfilment status, tracking reference and history; the workspace's order list index

Revision ID: 7d41c9e2a5b3
Revises: 9d2f6b7c4e13
Create Date: 2026-12-07 22:00:00

Existing orders get the fulfilment status their financial status implies (paid and partially
refunded: `paid`; refunded: `returned`; cancelled: `cancelled`), as of their last change, and that
status as the first row of their history (actor: the system).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7d41c9e2a5b3"
down_revision: str | None = "9d2f6b7c4e13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "orders",
        sa.Column("fulfilment_status", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False),
    )
    op.add_column("orders", sa.Column("tracking_reference", sa.String(length=128), nullable=True))
    op.add_column(
        "orders",
        sa.Column("fulfilment_updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.execute(
        """
        UPDATE orders SET fulfilment_updated_at = updated_at,
            fulfilment_status = CASE status WHEN 'refunded' THEN 'returned' WHEN 'cancelled' THEN 'cancelled'
                                            ELSE 'paid' END
        """
    )
    op.create_table(
        "order_fulfilment_history",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("tracking_reference", sa.String(length=128), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("actor", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "order_id"],
            ["orders.workspace_id", "orders.id"],
            name=op.f("fk_order_fulfilment_history_workspace_id_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_order_fulfilment_history")),
    )
    op.create_index(
        "ix_order_fulfilment_history_workspace_id_order_id_at_id",
        "order_fulfilment_history",
        ["workspace_id", "order_id", "at", "id"],
    )
    op.execute(
        """
        INSERT INTO order_fulfilment_history (workspace_id, id, order_id, from_status, to_status, actor, at)
        SELECT workspace_id, guanxi_uuid7(), id, NULL, fulfilment_status, '{"type": "system", "id": null}'::jsonb,
               fulfilment_updated_at
        FROM orders
        """
    )
    op.create_index("ix_orders_workspace_id_ordered_at_id", "orders", ["workspace_id", "ordered_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_orders_workspace_id_ordered_at_id", table_name="orders")
    op.drop_index("ix_order_fulfilment_history_workspace_id_order_id_at_id", table_name="order_fulfilment_history")
    op.drop_table("order_fulfilment_history")
    op.drop_column("orders", "fulfilment_updated_at")
    op.drop_column("orders", "tracking_reference")
    op.drop_column("orders", "fulfilment_status")
