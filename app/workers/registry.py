"""What the worker gives its job families for one connected round, and how a family declares its jobs.

Three kinds of job, one mechanism each:
- an entrypoint runs the jobs queued under its name on pgqueuer's queue;
- a schedule is pgqueuer's cron: each tick runs the job in one worker, however many run;
- a reaction runs in every worker when a commit notifies the outbox channel (and once at connect),
  for work that a request or a write is waiting on and that a cron tick would take too long to start.
  A reaction has no timer of its own, but for the sweeps of webhook dispatch (see `deliveries.py`) and
  of automation's event rules (`automation.py`); what a
  missed notification would leave is found by a schedule doing the same work (value, segments), or
  by the worker that finishes a job and takes the next (imports and exports)."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import httpx
from pgqueuer import Job, PgQueuer, Queries
from pgqueuer.models import Schedule
from pgqueuer.types import QueueEntrypoint
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.settings import Settings

logger = logging.getLogger(__name__)

# The failures a job meets when the database is slow, busy or gone. A schedule logs them and runs at
# its next tick; a reaction logs them and runs again (see `Reaction`), unless its connection is gone.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, SQLAlchemyError)
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Resources:
    """One connected round's connections, and the worker's settings and clock."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    now: Callable[[], datetime]
    # Webhook attempts: autocommit statements, sized to the delivery jobs that run at once.
    delivery_pool: asyncpg.Pool
    # Imports: one connection for a job's lock and two for its batches.
    import_pool: asyncpg.Pool
    http: httpx.AsyncClient
    # Enqueues jobs on its own connection, beside the one pgqueuer dequeues on.
    queries: Queries
    dispatch_sweep_seconds: float


@dataclass(frozen=True)
class Reaction:
    """`run` returns True while more work may be waiting: it is then called again at once."""

    name: str
    run: Callable[[], Awaitable[bool]]
    # For work that comes due without a commit to announce it; None waits for a notification.
    sweep_seconds: float | None = None
    # After a failed run, the pause before it runs again; None leaves it to the sweep or the next
    # notification (work that a schedule also runs).
    retry_seconds: float | None = None


@dataclass
class Registry:
    pgq: PgQueuer
    reactions: list[Reaction] = field(default_factory=list)
    # Entrypoints whose jobs are taken only while their function says so.
    gates: dict[str, Callable[[], bool]] = field(default_factory=dict)
    # What a family keeps open across its jobs (SMTP connections), closed when the round ends.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def entrypoint(
        self, name: str, run: Callable[[bytes | None], Awaitable[object]], *, taking: Callable[[], bool] | None = None
    ) -> None:
        """Jobs queued under `name`, given their payload. Names outlive releases: during a rolling
        upgrade old and new workers take each other's jobs. With `taking`, this worker dequeues
        them only while it returns True (and they wait for another worker, or for this one)."""

        async def job(queued: Job) -> None:
            await run(queued.payload)

        self.pgq.entrypoint(name)(job)
        if taking is not None:
            if not self.gates:
                # pgqueuer asks this method, before each dequeue, which entrypoints to take jobs for.
                self.pgq.qm.entrypoints_below_capacity_limits = self._entrypoints_taking  # type: ignore[method-assign]
            self.gates[name] = taking

    def _entrypoints_taking(self) -> set[QueueEntrypoint]:
        return {e for e in self.pgq.qm.entrypoint_registry if e not in self.gates or self.gates[e]()}

    def schedule(self, name: str, cron: str, run: Callable[[], Awaitable[object]]) -> None:
        """`run` at each tick of `cron`, in one worker. `name` is the schedule's row in the
        database, so it stays the same across releases."""

        async def tick(_schedule: Schedule) -> None:
            try:
                await run()
            except DATABASE_ERRORS as exc:
                logger.warning(
                    "scheduled job failed; it runs again at its next tick", extra={"job": name, "error": str(exc)[:300]}
                )

        self.pgq.schedule(name, cron)(tick)

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        self.closers.append(close)

    def react(
        self,
        name: str,
        run: Callable[[], Awaitable[bool]],
        *,
        sweep_seconds: float | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        self.reactions.append(Reaction(name, run, sweep_seconds, retry_seconds))
