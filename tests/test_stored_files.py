"""Files in PostgreSQL: stored as they stream in, read back a chunk at a time by any process,
refused past their limit with nothing left behind, removed after their retention."""

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import StoredFile, StoredFileChunk
from app.services.files import stored_files
from tests.factories import Tenant

READ_IN_ANOTHER_PROCESS = """
import asyncio, hashlib, sys, uuid
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.services.files import stored_files

async def main() -> None:
    engine = create_engine(sys.argv[1], get_settings())
    digest = hashlib.sha256()
    workspace_id, file_id = uuid.UUID(sys.argv[2]), uuid.UUID(sys.argv[3])
    async for chunk in stored_files.content(create_sessionmaker(engine), workspace_id, file_id):
        digest.update(chunk)
    await engine.dispose()
    print(digest.hexdigest())

asyncio.run(main())
"""


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_file_stored_by_one_process_is_read_whole_by_another(
    app: FastAPI, database_url: str, live_tenant: Tenant
) -> None:
    data = os.urandom(2 * stored_files.CHUNK_BYTES + 12_345)
    async with app.state.sessions() as session:
        stored = await stored_files.save(
            session,
            live_tenant.id,
            purpose="import",
            name="customers.csv",
            content_type="text/csv",
            content=_pieces(data, 65_536),
            keep_for=timedelta(days=1),
        )
        await session.commit()
    assert (stored.size, stored.chunks) == (len(data), 3)
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-c", READ_IN_ANOTHER_PROCESS, database_url, str(live_tenant.id), str(stored.id),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(reader.communicate(), timeout=60)
    assert reader.returncode == 0
    assert stdout.decode().strip() == hashlib.sha256(data).hexdigest()


async def test_an_empty_file_reads_back_empty(db: AsyncSession, app: FastAPI, tenant: Tenant) -> None:
    stored = await stored_files.save(
        db, tenant.id, purpose="export", name="e.csv", content_type="text/csv", content=_pieces(b"", 1),
        keep_for=timedelta(hours=1),
    )  # fmt: skip
    assert (stored.size, stored.chunks) == (0, 1)
    chunks = await db.scalars(select(StoredFileChunk.data).where(StoredFileChunk.file_id == stored.id))
    assert chunks.all() == [b""]


async def test_a_file_over_its_limit_is_refused_and_leaves_nothing(db: AsyncSession, tenant: Tenant) -> None:
    before = await db.scalar(select(func.count()).select_from(StoredFileChunk))
    with pytest.raises(stored_files.FileTooLarge):
        async with db.begin_nested():
            await stored_files.save(
                db, tenant.id, purpose="import", name="big.csv", content_type="text/csv",
                content=_pieces(os.urandom(3 * stored_files.CHUNK_BYTES), 500_000),
                keep_for=timedelta(days=1), max_bytes=2 * stored_files.CHUNK_BYTES,
            )  # fmt: skip
    assert await db.scalar(select(func.count()).select_from(StoredFileChunk)) == before
    assert (
        await db.scalar(select(func.count()).select_from(StoredFile).where(StoredFile.workspace_id == tenant.id)) == 0
    )


async def test_files_past_their_retention_are_purged_with_their_chunks(db: AsyncSession, tenant: Tenant) -> None:
    kept = await stored_files.save(
        db, tenant.id, purpose="export", name="kept.csv", content_type="text/csv", content=_pieces(b"a,b\n", 2),
        keep_for=timedelta(days=7),
    )  # fmt: skip
    old = await stored_files.save(
        db, tenant.id, purpose="export", name="old.csv", content_type="text/csv", content=_pieces(b"c,d\n", 2),
        keep_for=timedelta(days=1),
    )  # fmt: skip
    assert await stored_files.purge_expired(db, now=clock.now() + timedelta(days=2)) >= 1
    remaining = set(
        (await db.scalars(select(StoredFileChunk.file_id).where(StoredFileChunk.workspace_id == tenant.id))).all()
    )
    assert remaining == {kept.id} and old.id not in remaining
