"""when an export started running, to tell one that lost its worker

Revision ID: 2b7d4f9e6a15
Revises: 8a4c2e7f1b93
Create Date: 2026-11-22 22:12:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2b7d4f9e6a15"
down_revision: str | None = "8a4c2e7f1b93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("export_jobs", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("export_jobs", "started_at")
