"""Files in PostgreSQL: written and read a chunk at a time, so no process holds a whole file in
memory and every API replica and worker reaches every file without a shared disk."""

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.errors import NotFound
from app.core.ids import new_id
from app.models import StoredFile, StoredFileChunk

# Big enough that a file is few rows, small enough that a chunk in flight costs little memory.
CHUNK_BYTES = 1024 * 1024

Purpose = Literal["import", "export"]


async def save(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    purpose: Purpose,
    name: str,
    content_type: str,
    content: AsyncIterable[bytes],
    keep_for: timedelta,
    max_bytes: int | None = None,
) -> StoredFile:
    """Stores `content` as it arrives, in chunks of CHUNK_BYTES, in the caller's transaction. More than
    `max_bytes` raises FileTooLarge, and the transaction's rollback leaves nothing behind."""
    now = clock.now()
    stored = StoredFile(
        workspace_id=workspace_id,
        id=new_id(),
        purpose=purpose,
        name=name[:255],
        content_type=content_type,
        size=0,
        chunks=0,
        created_at=now,
        expires_at=now + keep_for,
    )
    session.add(stored)
    await session.flush()
    pending = bytearray()
    async for piece in content:
        pending += piece
        stored.size += len(piece)
        if max_bytes is not None and stored.size > max_bytes:
            raise FileTooLarge(max_bytes)
        while len(pending) >= CHUNK_BYTES:
            await _write_chunk(session, stored, bytes(pending[:CHUNK_BYTES]))
            del pending[:CHUNK_BYTES]
    if pending or stored.chunks == 0:
        await _write_chunk(session, stored, bytes(pending))
    await session.flush()
    return stored


class FileTooLarge(Exception):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the file is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


async def _write_chunk(session: AsyncSession, stored: StoredFile, data: bytes) -> None:
    await session.execute(
        insert(StoredFileChunk).values(
            workspace_id=stored.workspace_id, file_id=stored.id, seq=stored.chunks, data=data
        )
    )
    stored.chunks += 1


async def read_local(path: Path) -> AsyncIterator[bytes]:
    """A local file's content a chunk at a time, read off the event loop."""
    file: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(file.close)


async def get(session: AsyncSession, workspace_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile:
    stored = await session.get(StoredFile, (workspace_id, file_id))
    if stored is None:
        raise NotFound("No such file.")
    return stored


async def content(
    sessions: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, file_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """The file's bytes a chunk at a time, each chunk read in a short statement of its own: a slow
    reader holds no transaction and no connection between chunks."""
    seq = 0
    while True:
        async with sessions() as session:
            data = await session.scalar(
                select(StoredFileChunk.data).where(
                    StoredFileChunk.workspace_id == workspace_id,
                    StoredFileChunk.file_id == file_id,
                    StoredFileChunk.seq == seq,
                )
            )
        if data is None:
            return
        yield data
        seq += 1


async def copy_to(
    sessions: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, file_id: uuid.UUID, path: Path
) -> None:
    """Writes the file to a local scratch path (a worker reads an import from there)."""
    file: BinaryIO = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in content(sessions, workspace_id, file_id):
            await asyncio.to_thread(file.write, chunk)
    finally:
        await asyncio.to_thread(file.close)


async def remove(session: AsyncSession, workspace_id: uuid.UUID, file_id: uuid.UUID) -> None:
    await session.execute(delete(StoredFile).where(StoredFile.workspace_id == workspace_id, StoredFile.id == file_id))


async def purge_expired(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Removes every file past its retention, with its chunks; returns how many."""
    result = await session.execute(
        delete(StoredFile).where(StoredFile.expires_at <= (now or clock.now())).returning(StoredFile.id)
    )
    return len(result.all())
