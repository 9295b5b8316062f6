"""The background worker: connects, registers each job family's jobs, runs them until stopped, and
reconnects after a lost database.

The families, one module each: `deliveries` (webhook fan-out and delivery), `outreach` (messages
to customers), `bulk` (imports and
exports), `value` (predictions, RFM, tiers, lifetime value), `segments` (segment refresh, lifecycle
rules), `schedules` (follow-up plans, SLA breaches, ticket figures), `automation` (automation
rules, care reminders among them) and `loyalty` (points expiry, level reviews). `registry` says how they declare
their jobs. Any number of workers can run side by side."""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import httpx
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from sqlalchemy.exc import SQLAlchemyError

from app.core import clock, migrations
from app.core.db import asyncpg_dsn, connection_lost, create_asyncpg_pool, create_engine, create_sessionmaker
from app.core.settings import Settings
from app.services.events import outbox
from app.services.operations import probes
from app.workers import automation, bulk, deliveries, loyalty, outreach, schedules, segments, value
from app.workers.registry import DATABASE_ERRORS, Reaction, Registry, Resources

logger = logging.getLogger(__name__)

FAMILIES = (deliveries, outreach, bulk, value, segments, schedules, automation, loyalty)
# After the database is lost: the pause before connecting again, and the bound on closing what was open.
RECONNECT_SECONDS = 1.0
DISCONNECT_SECONDS = 5.0
# How often the worker looks at its own connections and job queue, which end without an error to tell it.
CHECK_SECONDS = 2.0
# While the schema is behind this release, how often the worker says that it waits.
SCHEMA_WAIT_LOG_SECONDS = 30.0
# An import holds one connection for its lock and writes its batches on two others.
IMPORT_CONNECTIONS = 3


class Worker:
    """`now` is the clock the jobs read (tests move it); `sweep_seconds` is webhook dispatch's sweep."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        now: Callable[[], datetime] = clock.now,
        http_client: httpx.AsyncClient | None = None,
        sweep_seconds: float = deliveries.SWEEP_SECONDS,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.now = now
        self.sweep_seconds = sweep_seconds
        self.engine = create_engine(database_url, settings)
        self.sessions = create_sessionmaker(self.engine)
        self.delivery_jobs = deliveries.job_slots(settings)
        self.http = http_client or deliveries.http_client(settings)
        self.stop = asyncio.Event()
        # Set once the worker listens for commits: work committed after it is taken at once.
        self.ready = asyncio.Event()
        self._wakes: list[asyncio.Event] = []

    def request_stop(self) -> None:
        self.stop.set()

    def _notified(self, *_: object) -> None:
        for wake in self._wakes:
            wake.set()

    async def run(self) -> None:
        """Until stopped. A lost database (a restart, a crash, a network cut) ends the connected round:
        its connections, pools and job queue are dropped and a new round starts once the database
        answers again. Nothing is lost meanwhile: events wait in the outbox, attempts in their table."""
        heartbeat = asyncio.create_task(self._beat()) if self.settings.worker_heartbeat_file else None
        try:
            await self._wait_for_schema()
            while not self.stop.is_set():
                try:
                    await self._run_connected()
                except DATABASE_ERRORS as exc:
                    logger.warning("database lost; reconnecting", extra={"error": str(exc)[:300]})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=RECONNECT_SECONDS)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            await self.http.aclose()
            await self.engine.dispose()

    async def _wait_for_schema(self) -> None:
        """A worker of a new release may start before `guanxi migrate` has run: it waits, saying so
        in one line now and then, rather than failing on tables that are not there yet."""
        expected = migrations.head()
        last_said = -SCHEMA_WAIT_LOG_SECONDS
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            try:
                async with self.sessions() as session:
                    found = await probes.schema_revision(session)
            except DATABASE_ERRORS as exc:
                found, problem = None, f"the database does not answer ({type(exc).__name__})"
            else:
                if found == expected:
                    return
                problem = f"the database schema is at {found or 'nothing'}"
            if loop.time() - last_said >= SCHEMA_WAIT_LOG_SECONDS:
                logger.warning(f"{problem}; this release needs {expected}: waiting (run `guanxi migrate`)")
                last_said = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=RECONNECT_SECONDS)

    async def _beat(self) -> None:
        """Touches the heartbeat file while the worker's event loop turns, through database outages
        too: a worker that is reconnecting is alive, and restarting it would not bring the database
        back. What it proves is that the process is not stuck."""
        path = self.settings.worker_heartbeat_file
        assert path is not None
        try:
            while True:
                await asyncio.to_thread(path.touch)
                await asyncio.sleep(CHECK_SECONDS)
        finally:
            # A stopped worker is not a live one, whatever the file's age.
            path.unlink(missing_ok=True)

    async def _run_connected(self) -> None:
        dsn = asyncpg_dsn(self.database_url)
        timeout = self.settings.db_connect_timeout_seconds
        connections: list[asyncpg.Connection] = []
        pools: list[asyncpg.Pool] = []
        reactions: list[asyncio.Task[None]] = []
        pgq: PgQueuer | None = None
        registry: Registry | None = None
        queue_task: asyncio.Task[None] | None = None
        try:
            for _ in range(3):
                connections.append(await asyncpg.connect(dsn, timeout=timeout))
            queue_conn, enqueue_conn, listen_conn = connections
            # Attempts are autocommit statements (a failure's record is one transaction) and leave
            # nothing in the session; an import holds an advisory lock and sets its statement
            # timeout, which the reset on release undoes.
            pools.append(
                await create_asyncpg_pool(
                    self.database_url,
                    self.settings,
                    size=deliveries.pool_size(self.settings),
                    reset=False,
                    custom_plans=True,
                )
            )
            pools.append(await create_asyncpg_pool(self.database_url, self.settings, size=IMPORT_CONNECTIONS))
            resources = Resources(
                settings=self.settings,
                sessions=self.sessions,
                now=self.now,
                delivery_pool=pools[0],
                import_pool=pools[1],
                http=self.http,
                queries=Queries(AsyncpgDriver(enqueue_conn)),
                dispatch_sweep_seconds=self.sweep_seconds,
            )
            pgq = PgQueuer(AsyncpgDriver(queue_conn))
            registry = Registry(pgq)
            for family in FAMILIES:
                family.register(registry, resources)
            # What was committed while the worker was away has no notification coming: all run at once.
            self._wakes = [asyncio.Event() for _ in registry.reactions]
            for wake in self._wakes:
                wake.set()
            await listen_conn.add_listener(outbox.CHANNEL, self._notified)
            reactions = [
                asyncio.create_task(react(reaction, wake))
                for reaction, wake in zip(registry.reactions, self._wakes, strict=True)
            ]
            queue_task = asyncio.create_task(
                pgq.run(
                    dequeue_timeout=timedelta(seconds=1),
                    # pgqueuer asks for a cap of at least twice the jobs it takes per dequeue.
                    batch_size=deliveries.jobs_per_dequeue(self.settings),
                    max_concurrent_tasks=self.delivery_jobs,
                )
            )
            self.ready.set()
            await self._watch(queue_task, reactions, connections)
        finally:
            await self._disconnect(reactions, pgq, queue_task, connections, pools)
            if registry is not None:
                await _close_kept(registry)

    async def _watch(
        self,
        queue_task: asyncio.Task[None],
        reactions: list[asyncio.Task[None]],
        connections: list[asyncpg.Connection],
    ) -> None:
        """Until stopped; raises when the job queue or a reaction ends, or a connection closes."""
        stopping = asyncio.create_task(self.stop.wait())
        try:
            while not self.stop.is_set():
                done, _ = await asyncio.wait(
                    [stopping, queue_task, *reactions], timeout=CHECK_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if self.stop.is_set():
                    return
                for task in done:
                    task.result()
                    raise ConnectionError("the job queue stopped" if task is queue_task else "a reaction stopped")
                if any(conn.is_closed() for conn in connections):
                    raise ConnectionError("a worker connection closed")
        finally:
            stopping.cancel()

    async def _disconnect(
        self,
        reactions: list[asyncio.Task[None]],
        pgq: PgQueuer | None,
        queue_task: asyncio.Task[None] | None,
        connections: list[asyncpg.Connection],
        pools: list[asyncpg.Pool],
    ) -> None:
        """Bounded in time: with the database gone, a graceful close would wait for ever."""
        for task in reactions:
            task.cancel()
        if reactions:
            await asyncio.wait(reactions, timeout=DISCONNECT_SECONDS)
        if pgq is not None and queue_task is not None:
            pgq.shutdown.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue_task, timeout=DISCONNECT_SECONDS)
            if not queue_task.done():
                queue_task.cancel()
                await asyncio.wait([queue_task], timeout=DISCONNECT_SECONDS)
        for conn in connections:
            try:
                await conn.close(timeout=DISCONNECT_SECONDS)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), timeout=DISCONNECT_SECONDS)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()
        # Sessions of the lost round may hold dead connections.
        try:
            await asyncio.wait_for(self.engine.dispose(), timeout=DISCONNECT_SECONDS)
        except DATABASE_ERRORS:
            logger.warning("closing the lost round's sessions timed out")


async def _close_kept(registry: Registry) -> None:
    """What the families kept open across jobs, closed with a time bound (a peer may be gone too)."""
    for close in registry.closers:
        try:
            await asyncio.wait_for(close(), timeout=DISCONNECT_SECONDS)
        except (OSError, TimeoutError):
            logger.warning("closing a connection kept between jobs failed")


async def react(reaction: Reaction, wake: asyncio.Event) -> None:
    """`reaction` whenever `wake` is set, and at its sweep when it has one, until cancelled. A failed
    run is logged and runs again after its retry pause; a lost connection ends the round."""
    timeout = reaction.sweep_seconds
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=timeout)
        wake.clear()
        timeout = reaction.sweep_seconds
        try:
            while await reaction.run():
                pass
        except DATABASE_ERRORS as exc:
            if _connection_gone(exc):
                raise
            logger.warning("reaction failed; retrying", extra={"job": reaction.name, "error": str(exc)[:300]})
            timeout = _after_failure(reaction)
        except Exception:
            logger.exception("reaction failed; retrying", extra={"job": reaction.name})
            timeout = _after_failure(reaction)


def _after_failure(reaction: Reaction) -> float | None:
    return reaction.sweep_seconds if reaction.retry_seconds is None else reaction.retry_seconds


def _connection_gone(exc: BaseException) -> bool:
    if isinstance(exc, SQLAlchemyError):
        invalidated = bool(getattr(exc, "connection_invalidated", False))
        orig = getattr(exc, "orig", None)
        return invalidated or (isinstance(orig, BaseException) and connection_lost(orig))
    return connection_lost(exc)
