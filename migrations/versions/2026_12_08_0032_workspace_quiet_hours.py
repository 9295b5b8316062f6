"""workspace quiet hours: the default for channels without their own

Revision ID: 5d2b7c4e9a10
Revises: 3f1c2a9d7b10
Create Date: 2026-12-08 01:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d2b7c4e9a10"
down_revision: str | None = "3f1c2a9d7b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workspaces", sa.Column("quiet_start", sa.String(length=5), nullable=True))
    op.add_column("workspaces", sa.Column("quiet_end", sa.String(length=5), nullable=True))


def downgrade() -> None:
    op.drop_column("workspaces", "quiet_end")
    op.drop_column("workspaces", "quiet_start")
