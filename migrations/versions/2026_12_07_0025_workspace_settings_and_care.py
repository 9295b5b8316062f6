"""workspace settings with versions and a default task assignee, every task assigned, lunar care
rules, and the workspace's lifecycle thresholds

Tasks that had no assignee (a customer without an owner, or a create by an API key) go to the
customer's owner, else the workspace's earliest-created active admin, the fallback the services use
(app/services/engagement/assignees.py).

Revision ID: 9d2f6b7c4e13
Revises: 5d1b7e3a9c24
Create Date: 2026-12-07 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d2f6b7c4e13"
down_revision: str | None = "5d1b7e3a9c24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workspaces", sa.Column("default_assignee_id", sa.Uuid(), nullable=True))
    op.add_column(
        "workspaces", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
    )
    op.add_column("workspaces", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.create_foreign_key(
        "fk_workspaces_default_assignee_id_users",
        "workspaces",
        "users",
        ["id", "default_assignee_id"],
        ["workspace_id", "id"],
    )
    op.add_column("care_rules", sa.Column("calendar", sa.String(length=9), server_default="gregorian", nullable=False))
    op.create_table(
        "lifecycle_rules",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("loyal_orders", sa.Integer(), nullable=False),
        sa.Column("loyal_spend", sa.Numeric(18, 4), nullable=False),
        sa.Column("at_risk_days", sa.Integer(), nullable=False),
        sa.Column("churned_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_lifecycle_rules_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", name="pk_lifecycle_rules"),
    )
    op.execute(
        """
UPDATE tasks t SET assignee_id = coalesce(
    (SELECT c.owner_id FROM customers c WHERE c.workspace_id = t.workspace_id AND c.id = t.customer_id),
    (SELECT u.id FROM users u WHERE u.workspace_id = t.workspace_id AND u.role = 'admin'
     ORDER BY u.is_active DESC, u.created_at, u.id LIMIT 1))
WHERE t.assignee_id IS NULL
"""
    )
    op.alter_column("tasks", "assignee_id", nullable=False)


def downgrade() -> None:
    op.alter_column("tasks", "assignee_id", nullable=True)
    op.drop_table("lifecycle_rules")
    op.drop_column("care_rules", "calendar")
    op.drop_constraint("fk_workspaces_default_assignee_id_users", "workspaces", type_="foreignkey")
    op.drop_column("workspaces", "version")
    op.drop_column("workspaces", "updated_at")
    op.drop_column("workspaces", "default_assignee_id")
