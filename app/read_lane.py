"""The read lane: `GET /api/v1/customers/{id}` answered without FastAPI's per-request machinery.

The API's hottest read costs more in FastAPI's request handling (dependency solving, the Request
object, the SQLAlchemy session around the connection) than in the read itself. The lane is an ASGI
layer just inside the request-context and load-shedding middleware that answers the common case
itself: a canonical id, a credential this process verified within the API-key cache period (or a
valid access token), the scope to read customers, and a customer the caller may see. It reads with
the route's own statement on a bare asyncpg pool and answers with the route's own functions, so
the 200 is the same bytes the route sends.

Every other request goes on to the FastAPI route, which answers it as it always has: no credential
or one not cached, a malformed id, a missing scope, a rate limit reached, no such customer (or
another workspace's), a database error. So every answer other than that 200 comes from the one
documented route."""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import asyncpg
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.access import Caller
from app.access import Scope as Permission
from app.db import connection_lost, create_asyncpg_pool
from app.errors import Unauthorized
from app.metrics import READ_LANE_REQUESTS
from app.rate_limits import TooManyRequests
from app.routers.deps import bearer_caller
from app.routers.responses import resource_response
from app.services import api_keys, customers
from app.services.customer_output import present
from app.settings import Settings

PATH_PREFIX = "/api/v1/customers/"
# The form FastAPI's UUID parameter takes and answers alike; any other spelling goes to the route.
_CANONICAL_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)

_ANSWERED = READ_LANE_REQUESTS.labels("answered")
_PASSED = READ_LANE_REQUESTS.labels("passed")


class LaneUnavailable(Exception):
    """The lane has no connection to offer now; the route answers instead."""


class ReadConnections(Protocol):
    """Where the lane's connections come from: its own pool, or in the tests the test's session."""

    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


class ReadPool:
    """A bare asyncpg pool of autocommit connections, opened at first use so the API starts while
    the database is down. After a failed open the lane passes for `retry_after_seconds` before it
    tries again, so a silent network costs one request the connect timeout, not every request."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._failed_at = -float("inf")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool or await self._open()
        try:
            conn = await pool.acquire(timeout=self.settings.db_pool_timeout_seconds)
        except _DATABASE_ERRORS as exc:
            raise LaneUnavailable from exc
        try:
            yield conn
        except BaseException as exc:
            if connection_lost(exc):
                conn.terminate()
            raise
        finally:
            await pool.release(conn)

    async def _open(self) -> asyncpg.Pool:
        if time.monotonic() - self._failed_at < self.settings.retry_after_seconds:
            raise LaneUnavailable
        async with self._opening:
            if self._pool is None:
                try:
                    self._pool = await create_asyncpg_pool(
                        self.url,
                        self.settings,
                        size=self.settings.read_lane_pool_size,
                        reset=False,
                        application_name="guanxi",
                        connect_timeout=self.settings.db_connect_timeout_seconds,
                        command_timeout=self.settings.statement_timeout_ms / 1000 + 2,
                    )
                except _DATABASE_ERRORS as exc:
                    self._failed_at = time.monotonic()
                    raise LaneUnavailable from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class CustomerReadLane:
    """ASGI middleware. Like the route, it takes from `app.state` at each request the rate limiter
    and its connections (`read_connections`; None turns the lane off)."""

    def __init__(self, app: ASGIApp, *, route: BaseRoute) -> None:
        self.app = app
        # The route's own object, so the access metric labels the lane's answers as the route's.
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(PATH_PREFIX):
            response = await self._answer(scope)
            if response is not None:
                _ANSWERED.inc()
                scope["route"] = self.route
                await response(scope, receive, send)
                return
            _PASSED.inc()
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> Response | None:
        state = scope["app"].state
        connections: ReadConnections | None = state.read_connections
        raw_id = scope["path"][len(PATH_PREFIX) :]
        if connections is None or not _CANONICAL_ID.match(raw_id):
            return None
        caller = _caller(scope["headers"])
        if caller is None or Permission.CUSTOMERS_READ not in caller.scopes:
            return None
        try:
            async with connections.connection() as conn:
                row = await customers.find_visible(conn, caller, uuid.UUID(raw_id))
        except (LaneUnavailable, *_DATABASE_ERRORS):
            return None
        if row is None:
            return None
        # Counted once the answer is known to be the lane's: a request passed to the route is
        # counted there, and only a request already over the limit is counted twice.
        try:
            await state.rate_limiter.check(caller)
        except TooManyRequests:
            return None
        return resource_response(present(row, caller))


def _caller(headers: list[tuple[bytes, bytes]]) -> Caller | None:
    """The caller when the credential is one the lane can check without the database: an API key
    in this process's cache or an access token. A request carrying both, or either twice, is the
    route's to refuse."""
    api_key: bytes | None = None
    authorization: bytes | None = None
    for name, value in headers:
        if name == b"x-api-key":
            if api_key is not None:
                return None
            api_key = value
        elif name == b"authorization":
            if authorization is not None:
                return None
            authorization = value
    if api_key is not None:
        return None if authorization is not None else api_keys.cached_caller(api_key.decode("latin-1"))
    if authorization is None:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return bearer_caller(token)
    except (Unauthorized, ValueError):
        return None
