"""tasks by interaction: an index for the foreign key from tasks to interactions, so deleting
interactions does not scan every task of the table for each one

Revision ID: 8b3e1f5a7c20
Revises: 4d909b8cc33b
Create Date: 2026-12-08 02:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8b3e1f5a7c20"
down_revision: str | None = "4d909b8cc33b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tasks_workspace_id_interaction_id",
        "tasks",
        ["workspace_id", "interaction_id"],
        postgresql_where=sa.text("interaction_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_workspace_id_interaction_id", table_name="tasks")
