"""lead scoring: the workspace's rules document and the customers' scores

Revision ID: 7b3d9e1f2a64
Revises: 64ae8985d62e
Create Date: 2026-12-08 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7b3d9e1f2a64"
down_revision: str | None = "64ae8985d62e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lead_scoring_rules",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recompute_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_lead_scoring_rules_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_lead_scoring_rules")),
    )
    op.create_table(
        "customer_lead_scores",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_customer_lead_scores_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "customer_id", name=op.f("pk_customer_lead_scores")),
    )
    op.create_index(
        "ix_customer_lead_scores_workspace_id_score",
        "customer_lead_scores",
        ["workspace_id", "score", "customer_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_customer_lead_scores_workspace_id_score", table_name="customer_lead_scores")
    op.drop_table("customer_lead_scores")
    op.drop_table("lead_scoring_rules")
