"""interaction visits: where a contact took place and a visit's check-in and check-out times

Revision ID: 3f7a2c9e5d18
Revises: 7b3d9e1f2a64
Create Date: 2026-12-08 04:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3f7a2c9e5d18"
down_revision: str | None = "7b3d9e1f2a64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("interactions", sa.Column("location", postgresql.JSONB(), nullable=True))
    op.add_column("interactions", sa.Column("checked_in_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("interactions", sa.Column("checked_out_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_interactions_visit_times_on_visits"),
        "interactions",
        "(checked_in_at IS NULL AND checked_out_at IS NULL) OR channel = 'visit'",
    )
    op.create_check_constraint(
        op.f("ck_interactions_check_out_after_check_in"),
        "interactions",
        "checked_out_at IS NULL OR (checked_in_at IS NOT NULL AND checked_out_at >= checked_in_at)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_interactions_check_out_after_check_in"), "interactions", type_="check")
    op.drop_constraint(op.f("ck_interactions_visit_times_on_visits"), "interactions", type_="check")
    op.drop_column("interactions", "checked_out_at")
    op.drop_column("interactions", "checked_in_at")
    op.drop_column("interactions", "location")
