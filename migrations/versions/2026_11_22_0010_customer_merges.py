"""customer merges

Revision ID: 5682e29ba99a
Revises: 1a2f49d648ad
Create Date: 2026-11-22 15:39:49.581453
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5682e29ba99a"
down_revision: str | None = "1a2f49d648ad"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "customer_merges",
        sa.Column("survivor_id", sa.Uuid(), nullable=False),
        sa.Column("absorbed_ids", postgresql.ARRAY(sa.Uuid()), nullable=False),
        sa.Column("snapshot", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("merged_by", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_customer_merges_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_customer_merges")),
    )
    op.create_index(
        "ix_customer_merges_workspace_id_survivor_id", "customer_merges", ["workspace_id", "survivor_id"], unique=False
    )


def downgrade() -> None:

    op.drop_index("ix_customer_merges_workspace_id_survivor_id", table_name="customer_merges")
    op.drop_table("customer_merges")
