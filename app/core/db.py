"""Engine, sessions and the choice of database (DATABASE_URL or the embedded server)."""

import os
from typing import Any, TypeAlias

import asyncpg
import orjson
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core import embedded_db
from app.core.settings import Settings

# The session as the routers and their dependencies name it: they hand it to services and never
# query through it, so they import no SQLAlchemy (the import contracts in pyproject.toml).
DbSession: TypeAlias = AsyncSession


def asyncpg_dsn(database_url: str) -> str:
    """The DSN asyncpg takes for a SQLAlchemy URL (`postgresql+asyncpg://...`): the same server,
    database, credentials and query options under the plain `postgresql` scheme."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def resolve_database_url(settings: Settings, *, stop_embedded_at_exit: bool = True) -> str:
    """DATABASE_URL when set; otherwise start the embedded server and use its `guanxi` database."""
    if settings.database_url:
        return settings.database_url
    server = embedded_db.start(
        settings.data_dir,
        stop_at_exit=stop_embedded_at_exit,
        shared_buffers_mb=settings.embedded_shared_buffers_mb,
    )
    server.ensure_database(embedded_db.DEFAULT_DATABASE)
    url = server.url()
    # Child processes (uvicorn reloaders, alembic) see the same database.
    os.environ["DATABASE_URL"] = url
    return url


def create_engine(
    url: str, settings: Settings, *, autocommit: bool = False, idle_in_transaction_timeout_ms: int = 0
) -> AsyncEngine:
    """`autocommit` engines serve single-statement reads: no BEGIN/COMMIT round trips.
    `idle_in_transaction_timeout_ms` (the API's engines) has the server end a transaction whose
    client went silent, so a partition cannot leave a lock held (the workspace's customer code
    counter, say) until TCP gives up hours later."""
    server_settings = {"statement_timeout": str(settings.statement_timeout_ms), "application_name": "guanxi"}
    if idle_in_transaction_timeout_ms:
        server_settings["idle_in_transaction_session_timeout"] = str(idle_in_transaction_timeout_ms)
    engine = create_async_engine(
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
            "server_settings": server_settings,
        },
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    event.listen(engine.sync_engine, "handle_error", _mark_lost_connection)
    event.listen(engine.sync_engine, "invalidate", _abort_invalidated_connection)
    return engine


def connection_lost(exc: BaseException) -> bool:
    """The error ends its connection: the server closed the session (terminated backend, shutdown,
    crash), the driver's protocol state is broken, or the server did not answer within its own
    statement time limit plus the client's 2 s (`command_timeout`: the server or the network is
    gone). SQLAlchemy's own check for asyncpg asks `is_closed()`, which turns true only once the
    driver has read the end of the stream, sometimes after the error reached us; such a connection
    went back to the pool and failed the next request that drew it."""
    for error in (exc, exc.__cause__):
        if isinstance(
            error,
            asyncpg.InterfaceError | asyncpg.InternalClientError | asyncpg.PostgresConnectionError | TimeoutError,
        ):
            return True
        if isinstance(error, asyncpg.PostgresError):
            # 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now;
            # 25P03/25P04: the server ended a session left idle in a transaction, or a transaction too long.
            sqlstate = str(getattr(error, "sqlstate", "") or "")
            return sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03", "25P03", "25P04")
    return False


def _mark_lost_connection(context: ExceptionContext) -> None:
    """Errors that end a connection count as disconnects: SQLAlchemy then invalidates the
    connection (and the pool's older ones) and the error says `connection_invalidated`."""
    if context.original_exception is not None and connection_lost(context.original_exception):
        context.is_disconnect = True


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pre-ping without the round trip: asyncpg marks a connection closed as soon as its socket
    ends (a database restart, a terminated backend), so such a connection is replaced at checkout
    (SQLAlchemy reconnects on DisconnectionError) instead of failing the request that drew it."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("the server closed this connection")


def _abort_invalidated_connection(dbapi_connection: Any, _record: Any, _exc: BaseException | None) -> None:
    """A connection being discarded is closed at once. SQLAlchemy's graceful close waits up to 2 s
    for the server's goodbye, which on a silent network adds 2 s to the request that found it."""
    if dbapi_connection is not None:
        dbapi_connection.driver_connection.terminate()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Instead of the reset query; asyncpg still rolls back a transaction left open."""


async def create_asyncpg_pool(
    url: str,
    settings: Settings,
    *,
    size: int,
    reset: bool = True,
    application_name: str = "guanxi-worker",
    connect_timeout: float = 60.0,
    command_timeout: float | None = None,
    custom_plans: bool = False,
) -> asyncpg.Pool:
    """A bare asyncpg pool for the worker (webhook attempts, imports) and the customer read lane,
    with the JSON codecs and statement timeout of the SQLAlchemy engines. `reset=False` for work
    that leaves nothing in the session (single autocommit statements): a connection then goes back
    to the pool without the round trip of asyncpg's reset query (advisory unlocks, CLOSE ALL,
    UNLISTEN, RESET ALL). The API's lane takes the engines' connect and command timeouts; the worker's
    pools keep asyncpg's, since imports raise their statement limit per session. `custom_plans`
    plans every execution for its parameters and the tables' present size: a statement that joins
    a parameter array to a table, first planned while the table was small, would otherwise keep a
    sequential scan of it for the connection's life."""

    async def init(conn: asyncpg.Connection) -> None:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
            )

    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=1,
        max_size=size,
        init=init,
        reset=None if reset else _keep_session,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        server_settings={
            "statement_timeout": str(settings.statement_timeout_ms),
            "application_name": application_name,
            **({"plan_cache_mode": "force_custom_plan"} if custom_plans else {}),
        },
    )
    assert pool is not None
    return pool
