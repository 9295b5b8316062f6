"""outbox: index unpublished events in commit order

Revision ID: 3c1e7a9d52b4
Revises: 5682e29ba99a
Create Date: 2026-11-22 18:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c1e7a9d52b4"
down_revision: str | None = "5682e29ba99a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Fan-out reads unpublished events ORDER BY txid, id LIMIT 500: with an index on id alone, every
    # batch sorted the whole backlog (a million events after a bulk import: seconds per batch).
    op.create_index(
        "ix_outbox_events_unpublished_txid_id",
        "outbox_events",
        ["txid", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(
        "ix_outbox_events_unpublished", table_name="outbox_events", postgresql_where=sa.text("published_at IS NULL")
    )


def downgrade() -> None:
    op.create_index(
        "ix_outbox_events_unpublished",
        "outbox_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(
        "ix_outbox_events_unpublished_txid_id",
        table_name="outbox_events",
        postgresql_where=sa.text("published_at IS NULL"),
    )
