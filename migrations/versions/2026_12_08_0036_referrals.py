"""referrals: the referrals table, the customers' referral code (a function of the id, unique per
workspace by an expression index) and an index for the loyalty report's level moves

Revision ID: 5e2c7a9d1b40
Revises: 245c8b56f54b
Create Date: 2026-12-08 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e2c7a9d1b40"
down_revision: str | None = "245c8b56f54b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The random part of a UUIDv7 (its last eight bytes) in hex: a code no one can guess from another.
    op.execute(
        """
CREATE FUNCTION guanxi_referral_code(id uuid) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN upper(encode(substring(uuid_send(id) FROM 9 FOR 8), 'hex'))
"""
    )
    op.execute("CREATE UNIQUE INDEX uq_customers_referral_code ON customers (workspace_id, guanxi_referral_code(id))")
    op.create_index(
        "ix_outbox_events_level_changed",
        "outbox_events",
        ["workspace_id", "occurred_at"],
        postgresql_where=sa.text("type = 'loyalty.level_changed'"),
    )
    op.create_table(
        "referrals",
        sa.Column("referrer_id", sa.Uuid(), nullable=True),
        sa.Column("referee_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False),
        sa.Column("referee_points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("qualified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rewarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "referee_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_referrals_workspace_id_referee_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "referrer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_referrals_workspace_id_referrer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_referrals")),
    )
    op.create_index("uq_referrals_workspace_id_referee_id", "referrals", ["workspace_id", "referee_id"], unique=True)
    op.create_index("ix_referrals_workspace_id_referrer_id_id", "referrals", ["workspace_id", "referrer_id", "id"])
    op.create_index("ix_referrals_workspace_id_status_id", "referrals", ["workspace_id", "status", "id"])


def downgrade() -> None:
    op.drop_table("referrals")
    op.drop_index("ix_outbox_events_level_changed", table_name="outbox_events")
    op.execute("DROP INDEX uq_customers_referral_code")
    op.execute("DROP FUNCTION guanxi_referral_code(uuid)")
