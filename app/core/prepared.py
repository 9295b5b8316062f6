"""Hot-path statements: SQLAlchemy Core selects and text statements, compiled once, run on the
session's asyncpg connection. Skips per-request statement building, cache keying and ORM result
handling, which cost more than the query itself on a primary-key read."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Select, TextClause
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import connection_lost

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

T = TypeVar("T")


class PreparedStatement:
    def __init__(self, statement: Select[Any] | TextClause) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or [])

    def _args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]

    async def fetchrow(self, session: AsyncSession, params: dict[str, Any]) -> asyncpg.Record | None:
        args = self._args(params)
        return await _run(session, self.sql, args, lambda conn: conn.fetchrow(self.sql, *args))

    async def fetch(self, session: AsyncSession, params: dict[str, Any]) -> list[asyncpg.Record]:
        args = self._args(params)
        return list(await _run(session, self.sql, args, lambda conn: conn.fetch(self.sql, *args)))

    async def fetchrow_on(self, conn: asyncpg.Connection, params: dict[str, Any]) -> asyncpg.Record | None:
        """On a bare asyncpg connection (the customer read lane's): its errors are the caller's.
        So are those of `fetch_on`."""
        return await conn.fetchrow(self.sql, *self._args(params))

    async def fetch_on(self, conn: asyncpg.Connection, params: dict[str, Any]) -> list[asyncpg.Record]:
        return list(await conn.fetch(self.sql, *self._args(params)))

    async def execute(self, session: AsyncSession, params: dict[str, Any]) -> None:
        args = self._args(params)
        await _run(session, self.sql, args, lambda conn: conn.execute(self.sql, *args))


async def autocommits(session: AsyncSession) -> bool:
    """Whether each statement on the session's connection is its own transaction (a reader's)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    return bool(adapted.autocommit)


async def _run(
    session: AsyncSession, sql: str, args: list[Any], call: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Runs `call` on the driver connection and does with its failures what SQLAlchemy does with the
    failures of the statements it runs itself: a connection the server closed (a restart, a
    terminated backend) leaves the pool, and the error reaches app.problems as a DBAPIError that
    carries the SQLSTATE, so it answers 503 rather than 500."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    try:
        await _begin(raw.dbapi_connection)
        return await call(driver)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
        lost = connection_lost(exc) or driver.is_closed()
        if lost:
            await connection.invalidate(exc)
        elif isinstance(exc, OSError | TimeoutError):
            raise
        raise sa_exc.DBAPIError(sql, args, exc, connection_invalidated=lost) from exc


async def _begin(adapted: Any) -> None:
    """SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it runs itself; a statement
    run here first must open the session's transaction the same way, or it would commit on its own.
    Reader sessions are autocommit and open none."""
    if adapted._transaction is not None or adapted.autocommit:
        return
    try:
        await adapted._start_transaction()
    except Exception as exc:
        # The adapter raises its own wrapper; the driver's error underneath is what _run handles.
        if isinstance(exc.__cause__, Exception):
            raise exc.__cause__ from None
        raise
