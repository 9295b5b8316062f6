"""guanxi_refuse_write(): ends a statement with SQLSTATE GX409, undoing everything it wrote

Revision ID: 6e1a9c3d7b20
Revises: 2b7d4f9e6a15
Create Date: 2026-11-22 23:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "6e1a9c3d7b20"
down_revision: str | None = "2b7d4f9e6a15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A customer create runs as one statement in its own transaction (app/services/customers/customer_insert.py):
    # when one of its inserts meets a key another row holds, the statement calls this to undo itself.
    op.execute(
        """
        CREATE FUNCTION guanxi_refuse_write(reason text) RETURNS boolean
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = 'GX409', MESSAGE = reason;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION guanxi_refuse_write(text)")
