"""stored files: import uploads and export results as chunked rows every process reaches

Revision ID: ea548bfad438
Revises: 7c2e5a9d4f61
Create Date: 2026-12-07 19:18:17.447452
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ea548bfad438"
down_revision: str | None = "7c2e5a9d4f61"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_files",
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_stored_files_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_stored_files")),
    )
    op.create_index("ix_stored_files_expires_at", "stored_files", ["expires_at"], unique=False)
    op.create_table(
        "stored_file_chunks",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "file_id"],
            ["stored_files.workspace_id", "stored_files.id"],
            name=op.f("fk_stored_file_chunks_workspace_id_file_id_stored_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "file_id", "seq", name=op.f("pk_stored_file_chunks")),
    )


def downgrade() -> None:
    op.drop_table("stored_file_chunks")
    op.drop_index("ix_stored_files_expires_at", table_name="stored_files")
    op.drop_table("stored_files")
