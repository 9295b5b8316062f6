"""Hot-path reads: statements written in SQLAlchemy Core, compiled once, run on the session's
asyncpg connection. Skips per-request statement building, cache keying and ORM result handling,
which cost more than the query itself on a primary-key read."""

from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class PreparedSelect:
    def __init__(self, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or [])

    def _args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]

    async def fetchrow(self, session: AsyncSession, params: dict[str, Any]) -> asyncpg.Record | None:
        connection = await driver_connection(session)
        return await connection.fetchrow(self.sql, *self._args(params))

    async def fetch(self, session: AsyncSession, params: dict[str, Any]) -> list[asyncpg.Record]:
        connection = await driver_connection(session)
        return list(await connection.fetch(self.sql, *self._args(params)))


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session: in tests, the one inside the test's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection
