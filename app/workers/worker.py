"""The background worker: webhook fan-out and delivery on the PostgreSQL job queue (pgqueuer).

One loop turns committed events into deliveries (woken by NOTIFY at commit, and every few seconds)
and enqueues due attempts; pgqueuer runs the attempts with bounded concurrency. Any number of
workers can run side by side: fan-out skips locked rows, and each attempt is claimed once."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import httpx
import orjson
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries
from pgqueuer.models import Schedule
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.core import clock
from app.core.access import system_caller
from app.core.db import asyncpg_dsn, connection_lost, create_asyncpg_pool, create_engine, create_sessionmaker
from app.core.settings import Settings
from app.models import Workspace
from app.services.bulk import exports, import_jobs
from app.services.engagement import follow_ups
from app.services.events import webhook_delivery, webhook_dispatch
from app.services.events.webhook_dispatch import AttemptBatch, DueAttempt
from app.services.segments import lifecycle, segments
from app.services.service_desk import service_reports, tickets
from app.services.value import customer_values

logger = logging.getLogger(__name__)

# Jobs of several attempts. Workers from before batching take jobs of one attempt under the old
# name and cannot read these; so that they never take one during a rolling upgrade, the name is new,
# and this worker still runs the old one's jobs.
DELIVER = "webhooks.deliver_batch"
DELIVER_ONE = "webhooks.deliver"
FOLLOW_UPS = "scheduler.follow_ups"
SLA_BREACHES = "scheduler.sla_breaches"
TICKET_FIGURES = "scheduler.ticket_figures"
# pgqueuer's scheduler fires each tick in one worker, however many run.
FOLLOW_UPS_CRON = "*/10 * * * *"
OUTBOX_CHANNEL = "guanxi_outbox"
SWEEP_SECONDS = 2.0
# After the database is lost: the pause before connecting again, and the bound on closing what was open.
RECONNECT_SECONDS = 1.0
DISCONNECT_SECONDS = 5.0
VALUE_SWEEP_SECONDS = 30.0
# An import holds one connection for its lock and writes its batches on two others.
IMPORT_CONNECTIONS = 3


class Worker:
    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        now: Callable[[], datetime] = clock.now,
        http_client: httpx.AsyncClient | None = None,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.now = now
        self.sweep_seconds = sweep_seconds
        self.engine = create_engine(database_url, settings)
        self.sessions = create_sessionmaker(self.engine)
        # Attempts run in jobs of up to ATTEMPTS_PER_JOB; the job queue needs room for two at least.
        self.delivery_jobs = max(2, -(-settings.worker_concurrency // webhook_dispatch.ATTEMPTS_PER_JOB))
        self.http = http_client or webhook_delivery.http_client(self.delivery_jobs * webhook_dispatch.ATTEMPTS_PER_JOB)
        self.stop = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.import_pool: asyncpg.Pool | None = None
        # Set once the worker listens for commits: events committed after it are picked up at once.
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_value = asyncio.Event()
        self._wake_imports = asyncio.Event()

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()
        self._wake_value.set()
        self._wake_imports.set()

    def _notified(self, *_: object) -> None:
        self._wake.set()
        self._wake_value.set()
        self._wake_imports.set()

    async def run(self) -> None:
        """Until stopped. A lost database (a restart, a crash, a network cut) ends the connected round:
        its connections, pool and job queue are dropped and a new round starts once the database
        answers again. Nothing is lost meanwhile: events wait in the outbox, attempts in their table."""
        try:
            while not self.stop.is_set():
                try:
                    await self._run_connected()
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, SQLAlchemyError) as exc:
                    logger.warning("database lost; reconnecting", extra={"error": str(exc)[:300]})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=RECONNECT_SECONDS)
        finally:
            await self.http.aclose()
            await self.engine.dispose()

    async def _run_connected(self) -> None:
        dsn = asyncpg_dsn(self.database_url)
        timeout = self.settings.db_connect_timeout_seconds
        connections: list[asyncpg.Connection] = []
        tasks: list[asyncio.Task[None]] = []
        pgq: PgQueuer | None = None
        queue_task: asyncio.Task[None] | None = None
        try:
            for _ in range(3):
                connections.append(await asyncpg.connect(dsn, timeout=timeout))
            queue_conn, enqueue_conn, listen_conn = connections
            queries = Queries(AsyncpgDriver(enqueue_conn))
            # Attempts are autocommit statements (a failure's record is one transaction) and leave
            # nothing in the session; an import holds an advisory lock and sets its statement
            # timeout, which the reset on release undoes.
            self.pool = await create_asyncpg_pool(
                self.database_url, self.settings, size=self.delivery_jobs, reset=False, custom_plans=True
            )
            self.import_pool = await create_asyncpg_pool(self.database_url, self.settings, size=IMPORT_CONNECTIONS)
            pgq = self._job_queue(queue_conn, queries)
            await listen_conn.add_listener(OUTBOX_CHANNEL, self._notified)
            tasks = [asyncio.create_task(self._value_loop()), asyncio.create_task(self._import_loop())]
            queue_task = asyncio.create_task(
                pgq.run(
                    dequeue_timeout=timedelta(seconds=1),
                    # pgqueuer asks for a cap of at least twice the jobs it takes per dequeue.
                    batch_size=self.delivery_jobs // 2,
                    max_concurrent_tasks=self.delivery_jobs,
                )
            )
            self.ready.set()
            # What was committed while the worker was away has no notification coming: sweep at once.
            self._wake.set()
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.sweep_seconds)
                self._wake.clear()
                if self.stop.is_set():
                    break
                if queue_task.done():
                    queue_task.result()
                    raise ConnectionError("the job queue stopped")
                if any(conn.is_closed() for conn in connections):
                    raise ConnectionError("a worker connection closed")
                try:
                    await self.dispatch(queries)
                except (asyncpg.PostgresError, SQLAlchemyError) as exc:
                    # A statement that failed on a live connection (a timeout, a deadlock) is retried
                    # at the next sweep; only a lost connection ends the round.
                    if _connection_gone(exc):
                        raise
                    logger.warning("dispatch failed; retrying at the next sweep", extra={"error": str(exc)})
        finally:
            await self._disconnect(tasks, pgq, queue_task, connections)

    def _job_queue(self, queue_conn: asyncpg.Connection, queries: Queries) -> PgQueuer:
        pgq = PgQueuer(AsyncpgDriver(queue_conn))

        async def deliver(job: Job) -> None:
            assert self.pool is not None
            # Retries are not queued here: the sweep queues them in batches once they are due.
            await webhook_delivery.deliver(
                self.pool, self.http, _decode(job.payload), now=self.now(), settings=self.settings
            )

        pgq.entrypoint(DELIVER)(deliver)
        pgq.entrypoint(DELIVER_ONE)(deliver)

        @pgq.schedule(FOLLOW_UPS, FOLLOW_UPS_CRON)
        async def follow_ups_tick(_schedule: Schedule) -> None:
            await self.run_follow_ups()

        @pgq.schedule(SLA_BREACHES, "* * * * *")
        async def sla_tick(_schedule: Schedule) -> None:
            async with self.sessions() as session:
                breached = await tickets.mark_breaches(session)
                await session.commit()
            if breached:
                logger.info("sla breaches", extra={"tickets": breached})

        @pgq.schedule(TICKET_FIGURES, "* * * * *")
        async def ticket_figures_tick(_schedule: Schedule) -> None:
            # Readers sum appended rows too; folding them keeps the report's reads to about one row per key.
            async with self.sessions() as session:
                await service_reports.compact_daily_figures(session)
                await session.commit()

        return pgq

    async def _disconnect(
        self,
        tasks: list[asyncio.Task[None]],
        pgq: PgQueuer | None,
        queue_task: asyncio.Task[None] | None,
        connections: list[asyncpg.Connection],
    ) -> None:
        """Bounded in time: with the database gone, a graceful close would wait for ever."""
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=DISCONNECT_SECONDS)
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
        for pool in (self.pool, self.import_pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout=DISCONNECT_SECONDS)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    pool.terminate()
        self.pool = self.import_pool = None
        # Sessions of the lost round may hold dead connections.
        try:
            await asyncio.wait_for(self.engine.dispose(), timeout=DISCONNECT_SECONDS)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, SQLAlchemyError):
            logger.warning("closing the lost round's sessions timed out")

    async def _value_loop(self) -> None:
        """Due lifetime-value predictions, customer value recomputes and lifecycle rules (on request,
        and every 24 hours per workspace), and dynamic segment refreshes (on request, and every 6
        hours). Apart from
        webhook dispatch, so long set-based work never holds deliveries back."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_value.wait(), timeout=VALUE_SWEEP_SECONDS)
            self._wake_value.clear()
            try:
                await self.run_predictions()
            except (OSError, asyncpg.PostgresError, TimeoutError, SQLAlchemyError) as exc:
                logger.warning("predictions failed; retrying later", extra={"error": str(exc)})
            try:
                async with self.sessions() as session:
                    due = await customer_values.due_recomputes(session, now=self.now())
                for workspace_id in due:
                    if self.stop.is_set():
                        return
                    ctx = system_caller(workspace_id)
                    async with self.sessions() as session:
                        seconds = await customer_values.recompute_workspace(session, ctx)
                        await session.commit()
                    async with self.sessions() as session:
                        await customer_values.refit_lifetime_value(session, ctx)
                        await session.commit()
                    moved = await lifecycle.apply_rules_in_chunks(self.sessions, ctx)
                    logger.info(
                        "value recompute",
                        extra={"workspace_id": str(workspace_id), "seconds": seconds, "stage_moves": moved},
                    )
                async with self.sessions() as session:
                    stale = await segments.due_refreshes(session, now=self.now())
                for workspace_id, segment_id in stale:
                    if self.stop.is_set():
                        return
                    async with self.sessions() as session:
                        segment = await segments.get(session, system_caller(workspace_id), segment_id, lock=True)
                        joined, left = await segments.refresh(session, segment)
                        await session.commit()
                    logger.info(
                        "segment refresh", extra={"segment_id": str(segment_id), "joined": joined, "left": left}
                    )
            except (OSError, asyncpg.PostgresError, TimeoutError, SQLAlchemyError) as exc:
                logger.warning("set-based work failed; retrying later", extra={"error": str(exc)})

    async def _import_loop(self) -> None:
        """Queued exports and imports, one at a time per worker; each worker claims a different one."""
        while not self.stop.is_set():
            assert self.pool is not None
            try:
                async with self.sessions() as session:
                    for workspace_id, job_id in await exports.requeue_orphans(session):
                        logger.warning(
                            "export interrupted; queued again",
                            extra={"job_id": str(job_id), "workspace_id": str(workspace_id)},
                        )
                    export = await exports.claim_next(session)
                    await session.commit()
                if export is not None:
                    done = await exports.process(self.sessions, export.id, export.workspace_id)
                    logger.info("export", extra={"job_id": str(done.id), "rows": done.rows})
                    continue
                assert self.import_pool is not None
                for workspace_id, job_id in await import_jobs.fail_orphans(self.import_pool):
                    logger.warning(
                        "import interrupted", extra={"job_id": str(job_id), "workspace_id": str(workspace_id)}
                    )
                claimed = await import_jobs.claim_next(self.import_pool)
                if claimed is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake_imports.wait(), timeout=SWEEP_SECONDS)
                    self._wake_imports.clear()
                    continue
                job = await import_jobs.process(self.sessions, self.import_pool, *claimed)
                # Not "created": that key is a LogRecord attribute, and logging refuses to overwrite it.
                logger.info(
                    "import", extra={"job_id": str(job.id), "status": job.status, "customers_created": job.created}
                )
            except (OSError, asyncpg.PostgresError, TimeoutError, SQLAlchemyError) as exc:
                logger.warning("import failed; retrying later", extra={"error": str(exc)})
                await asyncio.sleep(SWEEP_SECONDS)

    async def run_predictions(self) -> int:
        """Lifetime-value predictions of the rows order writes marked, batch by batch, each batch
        committed on its own. Woken by the orders' own commit notifications, so they follow within
        moments."""
        predicted = 0
        async with self.sessions() as session:
            workspaces = await customer_values.due_predictions(session)
        for workspace_id in workspaces:
            while not self.stop.is_set():
                async with self.sessions() as session:
                    taken = await customer_values.predict_due(session, workspace_id)
                    await session.commit()
                predicted += taken
                if taken < customer_values.PREDICTION_BATCH:
                    break
        return predicted

    async def run_follow_ups(self) -> int:
        """Follow-up plans and care reminders of every workspace, each in its own transaction."""
        created = 0
        async with self.sessions() as session:
            workspaces = (await session.execute(select(Workspace.id, Workspace.timezone))).all()
        for workspace_id, timezone in workspaces:
            async with self.sessions() as session:
                ctx = system_caller(workspace_id)
                created += await follow_ups.run_plans(session, ctx)
                created += await follow_ups.run_care(session, ctx, timezone=timezone)
                await session.commit()
        logger.info("follow-ups run", extra={"tasks_created": created})
        return created

    async def dispatch(self, queries: Queries) -> int:
        """Fan out new events (batch after batch while a backlog lasts), revive abandoned attempts,
        and queue everything due that no job carries. Returns how many attempts were queued."""
        now = self.now()
        queued = 0
        while True:
            async with self.sessions() as session:
                taken, jobs = await webhook_dispatch.fan_out(session, now=now)
                await session.commit()
            queued += await self._enqueue(queries, jobs)
            if taken < webhook_dispatch.FAN_OUT_BATCH:
                break
        async with self.sessions() as session:
            await webhook_dispatch.recover_abandoned(session, now=now)
            await session.commit()
        async with self.sessions() as session:
            jobs = await webhook_dispatch.queue_due(session, now=now)
            await session.commit()
        return queued + await self._enqueue(queries, jobs)

    async def _enqueue(self, queries: Queries, jobs: list[AttemptBatch]) -> int:
        if not jobs:
            return 0
        await queries.enqueue(
            [DELIVER] * len(jobs),
            [_encode(job.attempts) for job in jobs],
            [0] * len(jobs),
            dedupe_key=[job.key for job in jobs],
            on_conflict="skip",
        )
        return sum(len(job.attempts) for job in jobs)


def _connection_gone(exc: BaseException) -> bool:
    if isinstance(exc, SQLAlchemyError):
        invalidated = bool(getattr(exc, "connection_invalidated", False))
        orig = getattr(exc, "orig", None)
        return invalidated or (isinstance(orig, BaseException) and connection_lost(orig))
    return connection_lost(exc)


def _encode(attempts: list[DueAttempt]) -> bytes:
    return orjson.dumps([[str(a.workspace_id), str(a.delivery_id), a.attempt] for a in attempts])


def _decode(payload: bytes | None) -> list[DueAttempt]:
    data = orjson.loads(payload or b"[]")
    if isinstance(data, dict):
        # A job of one attempt (DELIVER_ONE), queued by a worker from before attempts were batched.
        data = [[data["w"], data["d"], data["a"]]]
    return [DueAttempt(uuid.UUID(w), uuid.UUID(d), int(a)) for w, d, a in data]
