"""relations between customers: contact of a company, subsidiary of a parent, referred by, family

Revision ID: 0d6eeeadcc54
Revises: 7d41c9e2a5b3
Create Date: 2026-12-07 21:34:38
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0d6eeeadcc54"
down_revision: str | None = "7d41c9e2a5b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_relations",
        sa.Column("from_customer_id", sa.Uuid(), nullable=False),
        sa.Column("to_customer_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('contact_of', 'subsidiary_of', 'referred_by', 'family_of')",
            name=op.f("ck_customer_relations_kind"),
        ),
        sa.CheckConstraint("from_customer_id <> to_customer_id", name=op.f("ck_customer_relations_not_self")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "from_customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_customer_relations_workspace_id_from_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "to_customer_id"],
            ["customers.workspace_id", "customers.id"],
            name=op.f("fk_customer_relations_workspace_id_to_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_customer_relations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_customer_relations")),
    )
    op.create_index(
        "ix_customer_relations_workspace_id_to_customer_id",
        "customer_relations",
        ["workspace_id", "to_customer_id"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "uq_customer_relations_family_pair",
        "customer_relations",
        [
            "workspace_id",
            sa.literal_column("least(from_customer_id, to_customer_id)"),
            sa.literal_column("greatest(from_customer_id, to_customer_id)"),
        ],
        unique=True,
        postgresql_where=sa.text("kind = 'family_of' AND deleted_at IS NULL"),
    )
    op.create_index(
        "uq_customer_relations_one_referrer",
        "customer_relations",
        ["workspace_id", "from_customer_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'referred_by' AND deleted_at IS NULL"),
    )
    op.create_index(
        "uq_customer_relations_workspace_id_from_to_kind",
        "customer_relations",
        ["workspace_id", "from_customer_id", "to_customer_id", "kind"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    # The indexes go with the table.
    op.drop_table("customer_relations")
