"""customer_values pages keep room for updates in place

Every order rewrites its buyer's figures row and the nightly pass rewrites the rows whose figures
moved. With full pages each new version lands on another page and adds an entry to every index;
with room left on the page, a change to unindexed columns only (recency, scores, categories) can be
a heap-only update. Pages written before this keep no room until the table is rewritten (VACUUM FULL
customer_values) or their rows move.

Revision ID: 5d2f8a61c9e3
Revises: 7c3e9b1d2a40
Create Date: 2026-11-22 20:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5d2f8a61c9e3"
down_revision: str | None = "7c3e9b1d2a40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE customer_values SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE customer_values RESET (fillfactor)")
