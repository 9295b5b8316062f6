"""search indexes per workspace

Revision ID: f08da523fc3f
Revises: e474fa5bb246
Create Date: 2026-11-22 14:43:17.885476
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f08da523fc3f"
down_revision: str | None = "e474fa5bb246"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # btree_gin lets one GIN index lead with workspace_id.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.drop_index(
        op.f("ix_customers_search_text"),
        table_name="customers",
        postgresql_ops={"search_text": "gin_trgm_ops"},
        postgresql_using="gin",
    )
    op.drop_index("ix_customers_workspace_id_name_prefix", table_name="customers")
    op.create_index(
        "ix_customers_workspace_id_name_prefix",
        "customers",
        ["workspace_id", sa.literal_column('(lower(name) COLLATE "C")').label("lower_name"), "id"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_customers_workspace_id_search_text",
        "customers",
        ["workspace_id", "search_text"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    )


def downgrade() -> None:
    op.drop_index(
        "ix_customers_workspace_id_search_text",
        table_name="customers",
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    )
    op.drop_index(
        "ix_customers_workspace_id_name_prefix", table_name="customers", postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.create_index(
        "ix_customers_workspace_id_name_prefix",
        "customers",
        ["workspace_id", sa.literal_column("lower(name) text_pattern_ops")],
        unique=False,
    )
    op.create_index(
        op.f("ix_customers_search_text"),
        "customers",
        ["search_text"],
        unique=False,
        postgresql_ops={"search_text": "gin_trgm_ops"},
        postgresql_using="gin",
    )
    op.execute("DROP EXTENSION IF EXISTS btree_gin")
