"""The read lane: `GET /api/v1/customers/{id}` and plain pages of `GET /api/v1/customers`
answered without FastAPI's per-request machinery.

The API's hottest reads cost more in FastAPI's request handling (dependency solving, parameter
parsing, the Request object, the SQLAlchemy session around the connection) than in the reads
themselves. The lane is an ASGI layer just inside the request-context and load-shedding middleware
that answers the common cases itself: a credential this process verified within the API-key cache
period (or a valid access token) with the scope to read customers, and either the id of a
customer the caller may see or a list page asked for with nothing but `limit` and `cursor`. It
reads with the routes' own statements on a bare asyncpg pool and answers with the routes' own
functions, so the 200 is the same bytes the route sends.

It decides with the routes' own rules, not copies of them: the credential is read by the
dependency's own function (app/http/credentials.py), the query by Starlette's parser, and the
id, limit and cursor by the routes' own parameter types, so every spelling the route takes the
lane takes too. It stays narrower where the route's rule lives in FastAPI's request handling:
only the two parameters a plain page has (the route alone knows which other names are filters),
and only the paths as the server gave them (an app mounted under a root path is the routes' to
answer, which Starlette strips with a helper it does not export).

Every other request goes on to the FastAPI routes, which answer it as they always have: no
credential or one not cached, a malformed id or cursor, a filter, search or sort, a missing scope,
a rate limit reached, no such customer (or another workspace's). So every answer other than those
200s comes from the one documented route, except the 503 of a database that stopped answering: a
read that lost its connection, ran out of time or found no connection is answered 503 here, as the
route would answer it, rather than waiting for the same database a second time in the route."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Protocol
from urllib.parse import parse_qsl

import asyncpg
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.access import Caller
from app.core.access import Scope as Permission
from app.core.db import connection_lost, create_asyncpg_pool
from app.core.errors import Unauthorized, ValidationFailed
from app.core.metrics import READ_LANE_REQUESTS
from app.core.settings import Settings
from app.http import problems
from app.http.credentials import caller_in_process
from app.http.json_response import json_response
from app.http.rate_limits import TooManyRequests
from app.routers import v1
from app.routers.deps import DEFAULT_LIMIT, RATE_COUNTED, Cursor, Limit
from app.routers.responses import resource_response
from app.routers.v1 import customers as customer_routes
from app.services.customers import customers
from app.services.customers.customer_output import present, present_page
from app.services.customers.customer_search import CustomerQuery, keyset_page_on

LIST_PATH = v1.router.prefix + customer_routes.router.prefix
ITEM_PREFIX = LIST_PATH + "/"
# The routes' own parameter types, validated as FastAPI validates them: the lane takes exactly the
# ids, limits and cursors the routes take, in every spelling they take, and reads the same values.
_CUSTOMER_ID: TypeAdapter[uuid.UUID] = TypeAdapter(customer_routes.CustomerId)
_LIMIT: TypeAdapter[int] = TypeAdapter(Limit)
_CURSOR: TypeAdapter[str | None] = TypeAdapter(Cursor)
# A list query the lane runs names nothing else: filters, search and sorting are the route's.
_PAGE_PARAMETERS = frozenset({"limit", "cursor"})
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)

# The server's statement_timeout cut the read.
QUERY_CANCELED = "57014"

logger = logging.getLogger("guanxi.read_lane")
_ANSWERED = READ_LANE_REQUESTS.labels("answered")
_UNAVAILABLE = READ_LANE_REQUESTS.labels("unavailable")
_PASSED = READ_LANE_REQUESTS.labels("passed")

Read = Callable[[asyncpg.Connection, Caller], Awaitable[Response | None]]


class LaneUnavailable(Exception):
    """The lane's pool is not open (the database refused it lately); the route answers instead."""


class DatabaseUnreachable(Exception):
    """No connection within the pool timeout, or none could be made: 503, as the route answers."""


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
        self._turns = asyncio.Semaphore(settings.read_lane_pool_size)
        self._idle: list[asyncpg.Connection] = []
        self._failed_at = -float("inf")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool or await self._open()
        # Waiters take their turn here, first come first served: asyncpg's pool hands a released
        # connection to whoever asks next, so under load a request woken for it could lose it to a
        # newcomer again and again, and the slowest requests waited many times the median
        # (docs/decisions.md, the read lane).
        await self._take_turn()
        try:
            try:
                # A turn is a free connection (as many turns as connections), so this waits at
                # most for a new connection, which the connect timeout bounds.
                conn = await self._checkout(pool)
            except _DATABASE_ERRORS as exc:
                raise DatabaseUnreachable from exc
            try:
                yield conn
            except BaseException as exc:
                if connection_lost(exc):
                    # Unless asyncpg's pool already took it back on seeing the end of the stream.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                # A read that failed or was cancelled mid-statement goes back through the pool's
                # release, which waits out the cancellation; the pool replaces a closed one.
                await pool.release(conn)
                raise
            # A read that completed leaves its autocommit connection as it found it: it stays
            # checked out of asyncpg's pool for the next read (its release costs a task each time).
            self._idle.append(conn)
        finally:
            self._turns.release()

    async def _checkout(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        while self._idle:
            conn = self._idle.pop()
            try:
                if not conn.is_closed():
                    return conn
            except asyncpg.InterfaceError:
                # The server ended it while it waited here (a restart, a terminated backend) and
                # asyncpg's pool took it back when it saw the end: no read fails on it.
                continue
            await pool.release(conn)
        return await pool.acquire()

    async def _take_turn(self) -> None:
        if not self._turns.locked():
            await self._turns.acquire()
            return
        # asyncio.timeout rather than wait_for, which makes a task of every wait.
        try:
            async with asyncio.timeout(self.settings.db_pool_timeout_seconds):
                await self._turns.acquire()
        except TimeoutError as exc:
            raise DatabaseUnreachable from exc

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            # Checked under the lock too: requests that queued behind a failing open pass at once.
            if time.monotonic() - self._failed_at < self.settings.retry_after_seconds:
                raise LaneUnavailable
            if self._pool is None:
                try:
                    self._pool = await create_asyncpg_pool(
                        self.url,
                        self.settings,
                        size=self.settings.read_lane_pool_size,
                        reset=False,
                        application_name="guanxi-read-lane",
                        connect_timeout=self.settings.db_connect_timeout_seconds,
                        command_timeout=self.settings.statement_timeout_ms / 1000 + 2,
                    )
                except _DATABASE_ERRORS as exc:
                    self._failed_at = time.monotonic()
                    raise LaneUnavailable from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            while self._idle:
                await self._pool.release(self._idle.pop())
            await self._pool.close()
            self._pool = None


class CustomerReadLane:
    """ASGI middleware. Like the routes, it takes from `app.state` at each request the rate limiter
    and its connections (`read_connections`; None turns the lane off)."""

    def __init__(self, app: ASGIApp, *, get_route: BaseRoute, list_route: BaseRoute) -> None:
        self.app = app
        # The routes' own objects, so the access metric labels the lane's answers as the routes'.
        self.get_route = get_route
        self.list_route = list_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plan = self._plan(scope)
        if plan is not None:
            route, read = plan
            answer = await self._answer(scope, read)
            if answer is not None:
                (_UNAVAILABLE if answer.status_code == 503 else _ANSWERED).inc()
                scope["route"] = route
                await answer(scope, receive, send)
                return
            _PASSED.inc()
        await self.app(scope, receive, send)

    def _plan(self, scope: Scope) -> tuple[BaseRoute, Read] | None:
        """The route and the read for a request the lane may take, from its path and query alone."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope["app"].state.read_connections is None:
            return None
        path: str = scope["path"]
        if path == LIST_PATH:
            query = _page_query(scope["query_string"])
            return None if query is None else (self.list_route, partial(_list_page, query))
        if not path.startswith(ITEM_PREFIX):
            return None
        # The route's `{customer_id}` is one path segment; a sub-resource is another route's.
        raw_id = path[len(ITEM_PREFIX) :]
        if "/" in raw_id:
            return None
        try:
            customer_id = _CUSTOMER_ID.validate_python(raw_id)
        except ValidationError:
            return None
        return self.get_route, partial(_customer, customer_id)

    async def _answer(self, scope: Scope, read: Read) -> Response | None:
        state = scope["app"].state
        try:
            caller = caller_in_process(scope["headers"])
        except Unauthorized:
            return None
        # A credential this process has not checked lately is the route's to check in the database.
        if not isinstance(caller, Caller) or Permission.CUSTOMERS_READ not in caller.scopes:
            return None
        # Counted here, and marked so that the route does not count a request passed to it again;
        # one over the limit is the route's to refuse (and counted twice, refused either way).
        try:
            await state.rate_limiter.check(caller)
        except TooManyRequests:
            return None
        scope.setdefault("state", {})[RATE_COUNTED] = True
        connections: ReadConnections = state.read_connections
        try:
            async with connections.connection() as conn:
                return await read(conn, caller)
        except LaneUnavailable:
            return None
        except DatabaseUnreachable:
            logger.warning("database unavailable: no read lane connection")
            return problems.unavailable(scope["path"], problems.DATABASE_UNAVAILABLE)
        except _DATABASE_ERRORS as exc:
            return _failed_read(scope, exc)


async def _customer(customer_id: uuid.UUID, conn: asyncpg.Connection, caller: Caller) -> Response | None:
    row = await customers.find_visible(conn, caller, customer_id)
    return None if row is None else resource_response(present(row, caller))


async def _list_page(query: CustomerQuery, conn: asyncpg.Connection, caller: Caller) -> Response | None:
    try:
        rows, next_cursor = await keyset_page_on(conn, caller, query)
    except ValidationFailed:
        return None
    return json_response(present_page(rows, next_cursor, caller))


def _failed_read(scope: Scope, exc: BaseException) -> Response | None:
    """A read that lost its connection or ran out of time is answered 503 here, as the route would
    answer it: passed on, it would wait for the same database a second time (on a silent network,
    the whole command timeout again). Any other error is the route's to answer."""
    if connection_lost(exc):
        logger.warning("database unavailable: %s", type(exc).__name__)
        return problems.unavailable(scope["path"], problems.DATABASE_UNAVAILABLE)
    if getattr(exc, "sqlstate", None) == QUERY_CANCELED:
        return problems.unavailable(scope["path"], problems.STATEMENT_TIMED_OUT)
    return None


def _page_query(query_string: bytes) -> CustomerQuery | None:
    """A list query the lane can run: nothing but `limit` and `cursor`, read as the route reads
    them, with the routes' own validators."""
    if not query_string:
        return CustomerQuery(limit=DEFAULT_LIMIT)
    # What Starlette's QueryParams holds, without the cost of building one: the same parser, and
    # of a repeated name the last value, the one FastAPI validates.
    params = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    if not params.keys() <= _PAGE_PARAMETERS:
        return None
    limit = params.get("limit")
    try:
        return CustomerQuery(
            limit=DEFAULT_LIMIT if limit is None else _LIMIT.validate_python(limit),
            cursor=_CURSOR.validate_python(params.get("cursor")),
        )
    except ValidationError:
        return None
