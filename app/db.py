"""Engine, sessions and the choice of database (DATABASE_URL or the embedded server)."""

import os

import asyncpg
import orjson
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app import embedded_db
from app.settings import Settings


def resolve_database_url(settings: Settings, *, stop_embedded_at_exit: bool = True) -> str:
    """DATABASE_URL when set; otherwise start the embedded server and use its `guanxi` database."""
    if settings.database_url:
        return settings.database_url
    server = embedded_db.start(settings.data_dir, stop_at_exit=stop_embedded_at_exit)
    server.ensure_database(embedded_db.DEFAULT_DATABASE)
    url = server.url()
    # Child processes (uvicorn reloaders, alembic) see the same database.
    os.environ["DATABASE_URL"] = url
    return url


def create_engine(url: str, settings: Settings, *, autocommit: bool = False) -> AsyncEngine:
    """`autocommit` engines serve single-statement reads: no BEGIN/COMMIT round trips."""
    return create_async_engine(
        url,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        json_serializer=lambda value: orjson.dumps(value).decode(),
        json_deserializer=orjson.loads,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=settings.db_pre_ping,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            # A statement that outlives the server-side timeout is also cut client-side.
            "command_timeout": settings.statement_timeout_ms / 1000 + 2,
            "server_settings": {
                "statement_timeout": str(settings.statement_timeout_ms),
                "application_name": "guanxi",
            },
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def create_asyncpg_pool(url: str, settings: Settings, *, size: int) -> asyncpg.Pool:
    """A bare asyncpg pool for the worker's hot loop (webhook attempts), with the JSON codecs and
    statement timeout of the SQLAlchemy engines."""

    async def init(conn: asyncpg.Connection) -> None:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
            )

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=init,
        server_settings={"statement_timeout": str(settings.statement_timeout_ms), "application_name": "guanxi-worker"},
    )
    assert pool is not None
    return pool
