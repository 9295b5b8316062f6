"""the job-queue key of the job that carries a webhook delivery's next attempt

Revision ID: 3f8a1c6e2d47
Revises: 9d4b2e7f1c83
Create Date: 2026-12-02 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f8a1c6e2d47"
down_revision: str | None = "9d4b2e7f1c83"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("job_key", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "job_key")
