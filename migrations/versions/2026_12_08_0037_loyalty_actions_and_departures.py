"""loyalty actions and departures: points awarded once per customer, action and reference; the
customers who left the program; lots due for expiry indexed by an expression whose statistics
count them

Revision ID: 5c7e2a9d4b11
Revises: 5e2c7a9d1b40
Create Date: 2026-12-08 03:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c7e2a9d4b11"
down_revision: str | None = "5e2c7a9d1b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loyalty_action_awards",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["loyalty_accounts.workspace_id", "loyalty_accounts.customer_id"],
            name=op.f("fk_loyalty_action_awards_workspace_id_loyalty_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "entry_id"],
            ["loyalty_entries.workspace_id", "loyalty_entries.id"],
            name=op.f("fk_loyalty_action_awards_workspace_id_loyalty_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "customer_id", "action", "reference", name=op.f("pk_loyalty_action_awards")
        ),
    )
    op.create_table(
        "loyalty_departures",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("forfeited", sa.BigInteger(), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_loyalty_departures_workspace_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "customer_id", name=op.f("pk_loyalty_departures")),
    )
    op.drop_index("ix_loyalty_lots_due", table_name="loyalty_lots", postgresql_where=sa.text("remaining > 0"))
    op.create_index(
        "ix_loyalty_lots_due", "loyalty_lots", [sa.text("(CASE WHEN remaining > 0 THEN expires_at END)")], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_loyalty_lots_due", table_name="loyalty_lots")
    op.create_index(
        "ix_loyalty_lots_due", "loyalty_lots", ["expires_at"], unique=False, postgresql_where=sa.text("remaining > 0")
    )
    op.drop_table("loyalty_departures")
    op.drop_table("loyalty_action_awards")
