"""stored files: import uploads and export results as chunked rows every process reaches, in place of
paths on one process's disk (jobs queued before the upgrade lose their file and must be sent again)

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

    for table in ("import_jobs", "export_jobs"):
        op.add_column(table, sa.Column("file_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(
            op.f(f"fk_{table}_workspace_id_file_id_stored_files"),
            table,
            "stored_files",
            ["workspace_id", "file_id"],
            ["workspace_id", "id"],
            ondelete="SET NULL (file_id)",
        )
        op.drop_column(table, "path")


def downgrade() -> None:
    # The stored files go with their tables: a downgraded job has an empty path and no file.
    op.add_column("import_jobs", sa.Column("path", sa.String(length=500), nullable=False, server_default=""))
    op.alter_column("import_jobs", "path", server_default=None)
    op.add_column("export_jobs", sa.Column("path", sa.String(length=500), nullable=True))
    for table in ("import_jobs", "export_jobs"):
        op.drop_constraint(op.f(f"fk_{table}_workspace_id_file_id_stored_files"), table, type_="foreignkey")
        op.drop_column(table, "file_id")
    op.drop_table("stored_file_chunks")
    op.drop_index("ix_stored_files_expires_at", table_name="stored_files")
    op.drop_table("stored_files")
