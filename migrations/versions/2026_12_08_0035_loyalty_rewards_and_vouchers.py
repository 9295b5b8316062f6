"""loyalty rewards and vouchers: rewards with stock, per-customer limits and eligible levels; vouchers
kept as the hash of their code, redeemed against an order once

Revision ID: 245c8b56f54b
Revises: 8b3e1f5a7c20
Create Date: 2026-12-08 03:08:30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "245c8b56f54b"
down_revision: str | None = "8b3e1f5a7c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loyalty_rewards",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("points_cost", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("value", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("per_customer_limit", sa.Integer(), nullable=True),
        sa.Column("eligible_levels", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voucher_valid_days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("(kind = 'gift') = (value IS NULL)", name=op.f("ck_loyalty_rewards_value_with_discount")),
        sa.CheckConstraint(
            "per_customer_limit IS NULL OR per_customer_limit >= 1", name=op.f("ck_loyalty_rewards_limit_positive")
        ),
        sa.CheckConstraint("points_cost >= 0", name=op.f("ck_loyalty_rewards_points_cost_not_negative")),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name=op.f("ck_loyalty_rewards_stock_not_negative")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_loyalty_rewards_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_loyalty_rewards")),
    )
    op.create_table(
        "loyalty_vouchers",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("reward_id", sa.Uuid(), nullable=True),
        sa.Column("redemption_id", sa.Uuid(), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("code_prefix", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("value", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "(status = 'redeemed') = (order_id IS NOT NULL)", name=op.f("ck_loyalty_vouchers_order_when_redeemed")
        ),
        sa.CheckConstraint("points >= 0", name=op.f("ck_loyalty_vouchers_points_not_negative")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_loyalty_vouchers_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "order_id"],
            ["orders.workspace_id", "orders.id"],
            name=op.f("fk_loyalty_vouchers_workspace_id_order_id_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "redemption_id"],
            ["loyalty_redemptions.workspace_id", "loyalty_redemptions.id"],
            name=op.f("fk_loyalty_vouchers_workspace_id_redemption_id_loyalty_redemptions"),
            ondelete="SET NULL (redemption_id)",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "reward_id"],
            ["loyalty_rewards.workspace_id", "loyalty_rewards.id"],
            name=op.f("fk_loyalty_vouchers_workspace_id_reward_id_loyalty_rewards"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_loyalty_vouchers")),
    )
    op.create_index(
        "ix_loyalty_vouchers_reward_customer",
        "loyalty_vouchers",
        ["workspace_id", "reward_id", "customer_id"],
        unique=False,
        postgresql_where=sa.text("reward_id IS NOT NULL"),
    )
    op.create_index(
        "ix_loyalty_vouchers_workspace_id_customer_id_id",
        "loyalty_vouchers",
        ["workspace_id", "customer_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_loyalty_vouchers_workspace_id_order_id",
        "loyalty_vouchers",
        ["workspace_id", "order_id"],
        unique=False,
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.create_index(
        "ix_loyalty_vouchers_workspace_id_redemption_id",
        "loyalty_vouchers",
        ["workspace_id", "redemption_id"],
        unique=False,
        postgresql_where=sa.text("redemption_id IS NOT NULL"),
    )
    op.create_index(
        "uq_loyalty_vouchers_workspace_id_code_hash", "loyalty_vouchers", ["workspace_id", "code_hash"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_loyalty_vouchers_workspace_id_code_hash", table_name="loyalty_vouchers")
    op.drop_index(
        "ix_loyalty_vouchers_workspace_id_redemption_id",
        table_name="loyalty_vouchers",
        postgresql_where=sa.text("redemption_id IS NOT NULL"),
    )
    op.drop_index(
        "ix_loyalty_vouchers_workspace_id_order_id",
        table_name="loyalty_vouchers",
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.drop_index("ix_loyalty_vouchers_workspace_id_customer_id_id", table_name="loyalty_vouchers")
    op.drop_index(
        "ix_loyalty_vouchers_reward_customer",
        table_name="loyalty_vouchers",
        postgresql_where=sa.text("reward_id IS NOT NULL"),
    )
    op.drop_table("loyalty_vouchers")
    op.drop_table("loyalty_rewards")
