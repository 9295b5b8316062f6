"""Files every process reaches without a shared disk: import uploads and export results, kept in
PostgreSQL as rows of chunks, so they are distributed by workspace with the rest of the data."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKeyConstraint, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantKey


class StoredFile(TenantKey, Base):
    __tablename__ = "stored_files"
    __table_args__ = (
        ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        Index("ix_stored_files_expires_at", "expires_at"),
    )

    purpose: Mapped[str] = mapped_column(String(16))  # import | export
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class StoredFileChunk(Base):
    __tablename__ = "stored_file_chunks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "file_id"], ["stored_files.workspace_id", "stored_files.id"], ondelete="CASCADE"
        ),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    file_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
