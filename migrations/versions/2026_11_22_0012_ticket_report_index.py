"""tickets by creation time, for the service report's period

Revision ID: 7c3e9b1d2a40
Revises: 3c1e7a9d52b4
Create Date: 2026-11-22 18:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7c3e9b1d2a40"
down_revision: str | None = "3c1e7a9d52b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tickets_workspace_id_created_at", "tickets", ["workspace_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tickets_workspace_id_created_at", table_name="tickets")
