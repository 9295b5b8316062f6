"""loyalty: program and levels documents, accounts, ledger, lots, redemptions

Revision ID: 4d909b8cc33b
Revises: 5d2b7c4e9a10
Create Date: 2026-12-08 01:25:33
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "4d909b8cc33b"
down_revision: str | None = "5d2b7c4e9a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loyalty_documents",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_loyalty_documents_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "kind", name=op.f("pk_loyalty_documents")),
    )
    op.create_table(
        "loyalty_accounts",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=True),
        sa.Column("level_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_loyalty_accounts_balance_not_negative")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_loyalty_accounts_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "customer_id", name=op.f("pk_loyalty_accounts")),
    )
    op.create_index(
        "ix_loyalty_accounts_workspace_id_balance", "loyalty_accounts", ["workspace_id", "balance"], unique=False
    )
    op.create_index(
        "ix_loyalty_accounts_workspace_id_level", "loyalty_accounts", ["workspace_id", "level"], unique=False
    )
    op.create_table(
        "loyalty_entries",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("redemption_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("actor", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("points <> 0", name=op.f("ck_loyalty_entries_points_not_zero")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            name=op.f("fk_loyalty_entries_workspace_id_customer_id_loyalty_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_loyalty_entries")),
    )
    op.create_index(
        "ix_loyalty_entries_workspace_id_customer_id_id",
        "loyalty_entries",
        ["workspace_id", "customer_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_loyalty_entries_workspace_id_order_id",
        "loyalty_entries",
        ["workspace_id", "order_id"],
        unique=False,
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.create_index(
        "uq_loyalty_entries_earned_line",
        "loyalty_entries",
        ["workspace_id", "order_id", "line_no"],
        unique=True,
        postgresql_where=sa.text("kind = 'earn'"),
    )
    op.create_table(
        "loyalty_redemptions",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_loyalty_redemptions_points_positive")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            name=op.f("fk_loyalty_redemptions_workspace_id_customer_id_loyalty_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_loyalty_redemptions")),
    )
    op.create_index(
        "ix_loyalty_redemptions_workspace_id_customer_id_id",
        "loyalty_redemptions",
        ["workspace_id", "customer_id", "id"],
        unique=False,
    )
    op.create_table(
        "loyalty_lots",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= points", name=op.f("ck_loyalty_lots_remaining_within_points")
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            name=op.f("fk_loyalty_lots_workspace_id_customer_id_loyalty_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "entry_id"],
            ["loyalty_entries.workspace_id", "loyalty_entries.id"],
            name=op.f("fk_loyalty_lots_workspace_id_entry_id_loyalty_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_loyalty_lots")),
    )
    op.create_index(
        "ix_loyalty_lots_due", "loyalty_lots", ["expires_at"], unique=False, postgresql_where=sa.text("remaining > 0")
    )
    op.create_index(
        "ix_loyalty_lots_open",
        "loyalty_lots",
        ["workspace_id", "customer_id", "id"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_index("ix_loyalty_lots_workspace_id_entry_id", "loyalty_lots", ["workspace_id", "entry_id"], unique=False)
    op.create_index(
        "ix_loyalty_lots_workspace_id_order_id",
        "loyalty_lots",
        ["workspace_id", "order_id"],
        unique=False,
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.create_table(
        "loyalty_redemption_lots",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("redemption_id", sa.Uuid(), nullable=False),
        sa.Column("lot_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "lot_id"],
            ["loyalty_lots.workspace_id", "loyalty_lots.id"],
            name=op.f("fk_loyalty_redemption_lots_workspace_id_lot_id_loyalty_lots"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "redemption_id"],
            ["loyalty_redemptions.workspace_id", "loyalty_redemptions.id"],
            name=op.f("fk_loyalty_redemption_lots_workspace_id_redemption_id_loyalty_redemptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "redemption_id", "lot_id", name=op.f("pk_loyalty_redemption_lots")),
    )
    op.create_index(
        "ix_loyalty_redemption_lots_workspace_id_lot_id",
        "loyalty_redemption_lots",
        ["workspace_id", "lot_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_loyalty_redemption_lots_workspace_id_lot_id", table_name="loyalty_redemption_lots")
    op.drop_table("loyalty_redemption_lots")
    op.drop_index(
        "ix_loyalty_lots_workspace_id_order_id",
        table_name="loyalty_lots",
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.drop_index("ix_loyalty_lots_workspace_id_entry_id", table_name="loyalty_lots")
    op.drop_index("ix_loyalty_lots_open", table_name="loyalty_lots", postgresql_where=sa.text("remaining > 0"))
    op.drop_index("ix_loyalty_lots_due", table_name="loyalty_lots", postgresql_where=sa.text("remaining > 0"))
    op.drop_table("loyalty_lots")
    op.drop_index("ix_loyalty_redemptions_workspace_id_customer_id_id", table_name="loyalty_redemptions")
    op.drop_table("loyalty_redemptions")
    op.drop_index(
        "uq_loyalty_entries_earned_line", table_name="loyalty_entries", postgresql_where=sa.text("kind = 'earn'")
    )
    op.drop_index(
        "ix_loyalty_entries_workspace_id_order_id",
        table_name="loyalty_entries",
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.drop_index("ix_loyalty_entries_workspace_id_customer_id_id", table_name="loyalty_entries")
    op.drop_table("loyalty_entries")
    op.drop_index("ix_loyalty_accounts_workspace_id_level", table_name="loyalty_accounts")
    op.drop_index("ix_loyalty_accounts_workspace_id_balance", table_name="loyalty_accounts")
    op.drop_table("loyalty_accounts")
    op.drop_table("loyalty_documents")
