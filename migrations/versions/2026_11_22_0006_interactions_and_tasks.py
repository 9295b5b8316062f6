"""interactions, tasks, follow-up plans, care rules

Revision ID: f8fa636ab04c
Revises: cd5bf1104395
Create Date: 2026-11-22 15:05:39.858242
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f8fa636ab04c"
down_revision: str | None = "cd5bf1104395"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "care_rules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("month", sa.SmallInteger(), nullable=True),
        sa.Column("day", sa.SmallInteger(), nullable=True),
        sa.Column("field_key", sa.String(length=64), nullable=True),
        sa.Column("lead_days", sa.SmallInteger(), nullable=False),
        sa.Column("task_title", sa.String(length=300), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_care_rules_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_care_rules")),
    )
    op.create_table(
        "follow_up_plans",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("audience", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("task_title", sa.String(length=300), nullable=False),
        sa.Column("task_kind", sa.String(length=16), nullable=False),
        sa.Column("task_priority", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_follow_up_plans_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_follow_up_plans")),
    )
    op.create_table(
        "interactions",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=True),
        sa.Column("participants", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("next_step", sa.String(length=500), nullable=True),
        sa.Column("attachments", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("source", sa.String(length=64), server_default="api", nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_interactions_workspace_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "user_id"],
            ["users.workspace_id", "users.id"],
            name=op.f("fk_interactions_workspace_id_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_interactions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_interactions")),
    )
    op.create_index(
        "ix_interactions_workspace_id_customer_id_occurred_at",
        "interactions",
        ["workspace_id", "customer_id", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_interactions_workspace_id_user_id_occurred_at",
        "interactions",
        ["workspace_id", "user_id", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "uq_interactions_workspace_id_source_external_id",
        "interactions",
        ["workspace_id", "source", "external_id"],
        unique=True,
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.create_table(
        "tasks",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", sa.Uuid(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("origin", sa.String(length=12), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("interaction_id", sa.Uuid(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "assignee_id"],
            ["users.workspace_id", "users.id"],
            name=op.f("fk_tasks_workspace_id_assignee_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_tasks_workspace_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "interaction_id"],
            ["interactions.workspace_id", "interactions.id"],
            name=op.f("fk_tasks_workspace_id_interaction_id_interactions"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "plan_id"],
            ["follow_up_plans.workspace_id", "follow_up_plans.id"],
            name=op.f("fk_tasks_workspace_id_plan_id_follow_up_plans"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_tasks_workspace_id_workspaces"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_tasks")),
    )
    op.create_index(
        "ix_tasks_workspace_id_assignee_id_status_due_at",
        "tasks",
        ["workspace_id", "assignee_id", "status", "due_at"],
        unique=False,
    )
    op.create_index("ix_tasks_workspace_id_customer_id", "tasks", ["workspace_id", "customer_id"], unique=False)
    op.create_index(
        "uq_tasks_open_plan_task",
        "tasks",
        ["workspace_id", "plan_id", "customer_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open' AND plan_id IS NOT NULL"),
    )
    op.create_index(
        "uq_tasks_workspace_id_dedupe_key",
        "tasks",
        ["workspace_id", "dedupe_key"],
        unique=True,
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )
    op.add_column(
        "workspaces", sa.Column("timezone", sa.String(length=64), server_default="Asia/Shanghai", nullable=False)
    )
    op.add_column(
        "workspaces",
        sa.Column(
            "interaction_outcomes",
            postgresql.ARRAY(sa.String(length=32)),
            server_default=sa.text(
                "ARRAY['reached', 'no_answer', 'interested', 'not_interested', 'issue_raised', 'order_placed']"
            ),
            nullable=False,
        ),
    )


def downgrade() -> None:

    op.drop_column("workspaces", "interaction_outcomes")
    op.drop_column("workspaces", "timezone")
    op.drop_index(
        "uq_tasks_workspace_id_dedupe_key", table_name="tasks", postgresql_where=sa.text("dedupe_key IS NOT NULL")
    )
    op.drop_index(
        "uq_tasks_open_plan_task",
        table_name="tasks",
        postgresql_where=sa.text("status = 'open' AND plan_id IS NOT NULL"),
    )
    op.drop_index("ix_tasks_workspace_id_customer_id", table_name="tasks")
    op.drop_index("ix_tasks_workspace_id_assignee_id_status_due_at", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index(
        "uq_interactions_workspace_id_source_external_id",
        table_name="interactions",
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.drop_index("ix_interactions_workspace_id_user_id_occurred_at", table_name="interactions")
    op.drop_index("ix_interactions_workspace_id_customer_id_occurred_at", table_name="interactions")
    op.drop_table("interactions")
    op.drop_table("follow_up_plans")
    op.drop_table("care_rules")
