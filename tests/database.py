"""The test database: a fresh `guanxi_test` (or GUANXI_TEST_DATABASE, so several runs can share one
server) on the embedded server, or on the server of DATABASE_URL."""

import asyncio
import os

import asyncpg
from sqlalchemy.engine import make_url

from app.core import embedded_db
from app.core.db import asyncpg_dsn
from app.core.settings import get_settings

TEST_DATABASE = os.environ.get("GUANXI_TEST_DATABASE", "guanxi_test")


async def recreate(server_url: str, database: str) -> str:
    """Drop and create `database` on the server of `server_url`; return its SQLAlchemy URL."""
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def fresh_database(database: str) -> str:
    base = os.environ.get("DATABASE_URL")
    if not base:
        server = embedded_db.start(
            get_settings().data_dir, stop_at_exit=True, shared_buffers_mb=get_settings().embedded_shared_buffers_mb
        )
        base = server.url("postgres")
    return asyncio.run(recreate(base, database))
