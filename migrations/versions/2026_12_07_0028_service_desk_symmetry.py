"""service desk settings and records read back and changed: versions, make-up working days, ticket tags

Revision ID: 6b3fdf69cc7c
Revises: 0d6eeeadcc54
Create Date: 2026-12-07 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "6b3fdf69cc7c"
down_revision: str | None = "0d6eeeadcc54"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows that existed before they were versioned start at version 1, changed when they were made.
VERSIONED = ("ticket_categories", "surveys", "intake_forms")


def upgrade() -> None:
    for table in VERSIONED:
        op.add_column(table, sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
        op.add_column(table, sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        op.execute(f"UPDATE {table} SET updated_at = created_at")
        op.alter_column(table, "updated_at", nullable=False)
    op.add_column("surveys", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("intake_forms", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("intake_forms", sa.Column("token_rotated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE intake_forms SET revoked_at = created_at WHERE NOT active")
    op.add_column(
        "business_hours", sa.Column("workdays", postgresql.ARRAY(sa.Date()), server_default="{}", nullable=False)
    )
    op.add_column("business_hours", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.add_column("tickets", sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False))
    op.create_index("ix_tickets_tags", "tickets", ["tags"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_tickets_tags", table_name="tickets", postgresql_using="gin")
    op.drop_column("tickets", "tags")
    op.drop_column("business_hours", "version")
    op.drop_column("business_hours", "workdays")
    op.drop_column("intake_forms", "token_rotated_at")
    op.drop_column("intake_forms", "revoked_at")
    op.drop_column("surveys", "closed_at")
    for table in VERSIONED:
        op.drop_column(table, "updated_at")
        op.drop_column(table, "version")
