"""orders, customer values, tiers

Revision ID: e9d389a11f26
Revises: f08da523fc3f
Create Date: 2026-11-22 14:51:39.153456
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e9d389a11f26"
down_revision: str | None = "f08da523fc3f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Time-ordered ids for rows written set-based in SQL (tier changes, their events), like the
# app's own UUIDv7: a 48-bit millisecond timestamp over a random UUID, version bits set to 7.
UUID7_FUNCTION = """
CREATE FUNCTION guanxi_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(
            set_bit(
                overlay(
                    uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6
                ),
                52, 1
            ),
            53, 1
        ),
        'hex'
    )::uuid
$$
"""


def upgrade() -> None:
    op.execute(UUID7_FUNCTION)
    op.create_table(
        "value_models",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("tier_window_days", sa.Integer(), server_default=sa.text("365"), nullable=False),
        sa.Column("recency_edges", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("frequency_edges", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("monetary_edges", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("bgnbd", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("gamma_gamma", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("recompute_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recomputed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recompute_seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_value_models_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_value_models")),
    )
    op.create_table(
        "value_tiers",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.Column("min_spend", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("min_orders", sa.Integer(), nullable=True),
        sa.Column("max_recency_days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_value_tiers_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_value_tiers")),
    )
    op.create_index("uq_value_tiers_workspace_id_code", "value_tiers", ["workspace_id", "code"], unique=True)
    op.create_index("uq_value_tiers_workspace_id_rank", "value_tiers", ["workspace_id", "rank"], unique=True)
    op.create_table(
        "customer_values",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("first_purchase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_purchase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_count", sa.Integer(), nullable=False),
        sa.Column("total_spend", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("avg_order_value", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("window_spend", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("window_orders", sa.Integer(), nullable=False),
        sa.Column("favourite_categories", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("avg_interval_days", sa.Float(), nullable=True),
        sa.Column("predicted_next_purchase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recency_score", sa.SmallInteger(), nullable=True),
        sa.Column("frequency_score", sa.SmallInteger(), nullable=True),
        sa.Column("monetary_score", sa.SmallInteger(), nullable=True),
        sa.Column("rfm_segment", sa.String(length=32), nullable=True),
        sa.Column("expected_purchases_365", sa.Float(), nullable=True),
        sa.Column("ltv_predicted", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("tier_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_customer_values_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "customer_id", name=op.f("pk_customer_values")),
    )
    op.create_index(
        "ix_customer_values_workspace_id_rfm_segment", "customer_values", ["workspace_id", "rfm_segment"], unique=False
    )
    op.create_index("ix_customer_values_workspace_id_tier", "customer_values", ["workspace_id", "tier"], unique=False)
    op.create_index(
        "ix_customer_values_workspace_id_total_spend", "customer_values", ["workspace_id", "total_spend"], unique=False
    )
    op.create_table(
        "orders",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("ordered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("refunded_amount", sa.Numeric(precision=18, scale=4), server_default=sa.text("0"), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("store", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_orders_workspace_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_orders_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_orders")),
    )
    op.create_index(
        "ix_orders_workspace_id_customer_id_ordered_at",
        "orders",
        ["workspace_id", "customer_id", "ordered_at"],
        unique=False,
    )
    op.create_index(
        "uq_orders_workspace_id_source_external_id", "orders", ["workspace_id", "source", "external_id"], unique=True
    )
    op.create_table(
        "tier_changes",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("from_tier", sa.String(length=16), nullable=True),
        sa.Column("to_tier", sa.String(length=16), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_tier_changes_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_tier_changes")),
    )
    op.create_index(
        "ix_tier_changes_workspace_id_changed_at", "tier_changes", ["workspace_id", "changed_at"], unique=False
    )
    op.create_index(
        "ix_tier_changes_workspace_id_customer_id",
        "tier_changes",
        ["workspace_id", "customer_id", "changed_at"],
        unique=False,
    )
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("line_no", sa.SmallInteger(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("product_name", sa.String(length=300), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "order_id"],
            ["orders.workspace_id", "orders.id"],
            name=op.f("fk_order_lines_workspace_id_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_order_lines")),
    )
    op.create_index("ix_order_lines_workspace_id_order_id", "order_lines", ["workspace_id", "order_id"], unique=False)
    op.add_column("workspaces", sa.Column("currency", sa.String(length=3), server_default="CNY", nullable=False))


def downgrade() -> None:
    op.drop_column("workspaces", "currency")
    op.drop_index("ix_order_lines_workspace_id_order_id", table_name="order_lines")
    op.drop_table("order_lines")
    op.drop_index("ix_tier_changes_workspace_id_customer_id", table_name="tier_changes")
    op.drop_index("ix_tier_changes_workspace_id_changed_at", table_name="tier_changes")
    op.drop_table("tier_changes")
    op.drop_index("uq_orders_workspace_id_source_external_id", table_name="orders")
    op.drop_index("ix_orders_workspace_id_customer_id_ordered_at", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_customer_values_workspace_id_total_spend", table_name="customer_values")
    op.drop_index("ix_customer_values_workspace_id_tier", table_name="customer_values")
    op.drop_index("ix_customer_values_workspace_id_rfm_segment", table_name="customer_values")
    op.drop_table("customer_values")
    op.drop_index("uq_value_tiers_workspace_id_rank", table_name="value_tiers")
    op.drop_index("uq_value_tiers_workspace_id_code", table_name="value_tiers")
    op.drop_table("value_tiers")
    op.drop_table("value_models")
    op.execute("DROP FUNCTION guanxi_uuid7()")
