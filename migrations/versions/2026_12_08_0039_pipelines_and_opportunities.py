"""pipelines and opportunities: pipelines, their stages (keyed by code within the pipeline),
opportunities and their stage history

Revision ID: 64ae8985d62e
Revises: 7c3f1a9e5d62
Create Date: 2026-12-08 04:33:53.085788
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "64ae8985d62e"
down_revision: str | None = "7c3f1a9e5d62"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_pipelines_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_pipelines")),
    )
    op.create_table(
        "pipeline_stages",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("probability", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("stale_after_days", sa.Integer(), nullable=True),
        sa.Column("lost_reason_required", sa.Boolean(), nullable=False),
        sa.CheckConstraint("kind IN ('open', 'won', 'lost')", name=op.f("ck_pipeline_stages_kind")),
        sa.CheckConstraint(
            "lost_reason_required = false OR kind = 'lost'", name=op.f("ck_pipeline_stages_lost_reason_on_lost")
        ),
        sa.CheckConstraint("probability BETWEEN 0 AND 100", name=op.f("ck_pipeline_stages_probability")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "pipeline_id"],
            ["pipelines.workspace_id", "pipelines.id"],
            name=op.f("fk_pipeline_stages_workspace_id_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "pipeline_id", "code", name=op.f("pk_pipeline_stages")),
    )
    op.create_table(
        "opportunities",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("expected_close_date", sa.Date(), nullable=True),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("stage_entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_opportunities_amount")),
        sa.CheckConstraint("status IN ('open', 'won', 'lost')", name=op.f("ck_opportunities_status")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_opportunities_workspace_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "owner_id"],
            ["users.workspace_id", "users.id"],
            name=op.f("fk_opportunities_workspace_id_owner_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "pipeline_id", "stage"],
            ["pipeline_stages.workspace_id", "pipeline_stages.pipeline_id", "pipeline_stages.code"],
            name=op.f("fk_opportunities_workspace_id_pipeline_id_stage_pipeline_stages"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_opportunities_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_opportunities")),
    )
    op.create_index(
        "ix_opportunities_workspace_id_customer_id", "opportunities", ["workspace_id", "customer_id"], unique=False
    )
    op.create_index(
        "ix_opportunities_workspace_id_pipeline_id_stage",
        "opportunities",
        ["workspace_id", "pipeline_id", "stage"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "opportunity_stage_history",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("from_stage", sa.String(length=64), nullable=True),
        sa.Column("to_stage", sa.String(length=64), nullable=False),
        sa.Column("to_kind", sa.String(length=8), nullable=False),
        sa.Column("lost_reason", sa.String(length=500), nullable=True),
        sa.Column("seconds_in_previous", sa.BigInteger(), nullable=True),
        sa.Column("actor", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "opportunity_id"],
            ["opportunities.workspace_id", "opportunities.id"],
            name=op.f("fk_opportunity_stage_history_workspace_id_opportunity_id_opportunities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_opportunity_stage_history")),
    )
    op.create_index(
        "ix_opportunity_stage_history_workspace_id_opportunity_id_id",
        "opportunity_stage_history",
        ["workspace_id", "opportunity_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_opportunity_stage_history_workspace_id_pipeline_id_at",
        "opportunity_stage_history",
        ["workspace_id", "pipeline_id", "at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_opportunity_stage_history_workspace_id_pipeline_id_at", table_name="opportunity_stage_history")
    op.drop_index("ix_opportunity_stage_history_workspace_id_opportunity_id_id", table_name="opportunity_stage_history")
    op.drop_table("opportunity_stage_history")
    op.drop_index(
        "ix_opportunities_workspace_id_pipeline_id_stage",
        table_name="opportunities",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index("ix_opportunities_workspace_id_customer_id", table_name="opportunities")
    op.drop_table("opportunities")
    op.drop_table("pipeline_stages")
    op.drop_table("pipelines")
