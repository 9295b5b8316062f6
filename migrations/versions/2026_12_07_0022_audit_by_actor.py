"""audit log searched by actor across the workspace

Revision ID: 5c3e8a1f0b62
Revises: b81d4e0c9a27
Create Date: 2026-12-07 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c3e8a1f0b62"
down_revision: str | None = "b81d4e0c9a27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_log_workspace_id_actor",
        "audit_log",
        ["workspace_id", "actor_id", "id"],
        postgresql_where=sa.text("actor_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_workspace_id_actor", table_name="audit_log")
