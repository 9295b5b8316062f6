"""segments and lifecycle

Revision ID: cd5bf1104395
Revises: e9d389a11f26
Create Date: 2026-11-22 15:00:09.707924
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "cd5bf1104395"
down_revision: str | None = "e9d389a11f26"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "lifecycle_stages",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_lifecycle_stages_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "key", name=op.f("pk_lifecycle_stages")),
    )
    op.create_table(
        "segments",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("filter", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("builtin", sa.String(length=64), nullable=True),
        sa.Column("member_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_segments_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_segments")),
    )
    op.create_index("uq_segments_workspace_id_builtin", "segments", ["workspace_id", "builtin"], unique=True)
    op.create_table(
        "segment_sizes",
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("joined", sa.Integer(), nullable=False),
        sa.Column("left", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "segment_id"],
            ["segments.workspace_id", "segments.id"],
            name=op.f("fk_segment_sizes_workspace_id_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_segment_sizes")),
    )
    op.create_index(
        "ix_segment_sizes_workspace_id_segment_id",
        "segment_sizes",
        ["workspace_id", "segment_id", "measured_at"],
        unique=False,
    )
    op.create_table(
        "customer_stages",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_customer_stages_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "customer_id", name=op.f("pk_customer_stages")),
    )
    op.create_index("ix_customer_stages_workspace_id_stage", "customer_stages", ["workspace_id", "stage"], unique=False)
    op.create_table(
        "segment_members",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_segment_members_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "segment_id"],
            ["segments.workspace_id", "segments.id"],
            name=op.f("fk_segment_members_workspace_id_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "segment_id", "customer_id", name=op.f("pk_segment_members")),
    )
    op.create_index(
        "ix_segment_members_workspace_id_customer_id", "segment_members", ["workspace_id", "customer_id"], unique=False
    )
    op.create_table(
        "stage_history",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=True),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("by_user_id", sa.Uuid(), nullable=True),
        sa.Column("by_rule", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_stage_history_workspace_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_stage_history")),
    )
    op.create_index(
        "ix_stage_history_workspace_id_customer_id",
        "stage_history",
        ["workspace_id", "customer_id", "entered_at"],
        unique=False,
    )
    op.create_index(
        "ix_stage_history_workspace_id_stage_entered_at",
        "stage_history",
        ["workspace_id", "stage", "entered_at"],
        unique=False,
    )


def downgrade() -> None:

    op.drop_index("ix_stage_history_workspace_id_stage_entered_at", table_name="stage_history")
    op.drop_index("ix_stage_history_workspace_id_customer_id", table_name="stage_history")
    op.drop_table("stage_history")
    op.drop_index("ix_segment_members_workspace_id_customer_id", table_name="segment_members")
    op.drop_table("segment_members")
    op.drop_index("ix_customer_stages_workspace_id_stage", table_name="customer_stages")
    op.drop_table("customer_stages")
    op.drop_index("ix_segment_sizes_workspace_id_segment_id", table_name="segment_sizes")
    op.drop_table("segment_sizes")
    op.drop_index("uq_segments_workspace_id_builtin", table_name="segments")
    op.drop_table("segments")
    op.drop_table("lifecycle_stages")
