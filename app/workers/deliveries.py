"""Webhook fan-out and delivery.

The dispatch reaction turns committed events into deliveries and queues due attempts as pgqueuer jobs
of up to ATTEMPTS_PER_JOB; the DELIVER entrypoint sends them, as many attempts at once as the
worker's slots allow, whatever the jobs' sizes. Any number of workers can run side by
side: fan-out skips locked rows, and each attempt is claimed once.

Dispatch is a reaction, not a cron schedule: a commit's NOTIFY starts it so that an event leaves
within moments, and between notifications it sweeps every SWEEP_SECONDS, because retries come due on
their own clock (the first one soon after a failure) with no commit to announce them. Cron ticks by
the minute, which would hold every event and retry back by up to a minute, and a tick runs in one
worker where the fan-out is shared by all."""

import uuid
from datetime import datetime

import asyncpg
import httpx
import orjson
from pgqueuer import Queries
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.settings import Settings
from app.services.events import webhook_delivery, webhook_dispatch
from app.services.events.webhook_dispatch import AttemptBatch, DueAttempt
from app.services.events.webhook_slots import Slots
from app.workers.registry import Registry, Resources

# Jobs of several attempts. Workers from before batching take jobs of one attempt under the old
# name and cannot read these; so that they never take one during a rolling upgrade, the name is new,
# and this worker still runs the old one's jobs.
DELIVER = "webhooks.deliver_batch"
DELIVER_ONE = "webhooks.deliver"
SWEEP_SECONDS = 2.0


def job_slots(settings: Settings) -> int:
    """Delivery jobs a worker holds at once. Attempts in flight are counted by its `Slots`, not by
    jobs: as many jobs as attempts let jobs of one attempt (events committed one at a time) reach
    the concurrency, and as many again keep a place on the queue for other endpoints' jobs while
    some wait for a slot of an endpoint that holds its whole share. Jobs of many attempts are held
    back by `Slots.taking_jobs` long before."""
    return 2 * settings.worker_concurrency


def jobs_per_dequeue(settings: Settings) -> int:
    """Few at a time, so that a dequeue of a burst's jobs does not overshoot `Slots.taking_jobs`."""
    return max(1, -(-settings.worker_concurrency // webhook_dispatch.ATTEMPTS_PER_JOB))


def slots(settings: Settings) -> Slots:
    """Attempts one worker has in flight: `worker_concurrency`, of which one endpoint holds at most
    `webhook_endpoint_concurrency` (half, unless set)."""
    per_endpoint = settings.webhook_endpoint_concurrency or -(-settings.worker_concurrency // 2)
    return Slots(settings.worker_concurrency, per_endpoint)


def pool_size(settings: Settings) -> int:
    """Connections for claims and records, which hold one for a statement and never while sending."""
    return max(2, -(-settings.worker_concurrency // webhook_dispatch.ATTEMPTS_PER_JOB))


def http_client(settings: Settings) -> httpx.AsyncClient:
    """One connection for each attempt the worker sends at once."""
    return webhook_delivery.http_client(
        settings.worker_concurrency, allow_private=settings.webhook_allow_private_targets
    )


def register(registry: Registry, r: Resources) -> None:
    in_flight = slots(r.settings)

    async def deliver_job(payload: bytes | None) -> None:
        # Retries are not queued here: the sweep queues them in batches once they are due.
        await webhook_delivery.deliver(
            r.delivery_pool, r.http, decode(payload), now=r.now(), settings=r.settings, slots=in_flight
        )

    async def dispatch_pass() -> bool:
        await dispatch(r.sessions, r.queries, now=r.now())
        return False

    registry.entrypoint(DELIVER, deliver_job, taking=in_flight.taking_jobs)
    registry.entrypoint(DELIVER_ONE, deliver_job, taking=in_flight.taking_jobs)
    registry.react("webhook dispatch", dispatch_pass, sweep_seconds=r.dispatch_sweep_seconds)


async def dispatch(sessions: async_sessionmaker[AsyncSession], queries: Queries, *, now: datetime) -> int:
    """Fan out new events (batch after batch while a backlog lasts), revive abandoned attempts,
    hold or release the deliveries of endpoints disabled or enabled again, and queue everything due
    that no job carries. Returns how many attempts were queued."""
    queued = 0
    while True:
        async with sessions() as session:
            taken, jobs = await webhook_dispatch.fan_out(session, now=now)
            await session.commit()
        queued += await enqueue(queries, jobs)
        if taken < webhook_dispatch.FAN_OUT_BATCH:
            break
    async with sessions() as session:
        await webhook_dispatch.recover_abandoned(session, now=now)
        await session.commit()
    for _ in range(webhook_dispatch.SETTLE_ROUNDS):
        async with sessions() as session:
            moved = await webhook_dispatch.settle(session, now=now)
            await session.commit()
        if moved < webhook_dispatch.SETTLE_BATCH:
            break
    async with sessions() as session:
        jobs = await webhook_dispatch.queue_due(session, now=now)
        await session.commit()
    return queued + await enqueue(queries, jobs)


async def enqueue(queries: Queries, jobs: list[AttemptBatch]) -> int:
    """One DELIVER job per batch, keyed so that a batch already queued is not queued twice."""
    if not jobs:
        return 0
    await queries.enqueue(
        [DELIVER] * len(jobs),
        [encode(job.attempts) for job in jobs],
        [0] * len(jobs),
        dedupe_key=[job.key for job in jobs],
        on_conflict="skip",
    )
    return sum(len(job.attempts) for job in jobs)


async def deliver(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    payload: bytes | None,
    *,
    now: datetime,
    settings: Settings,
) -> list[webhook_delivery.Scheduled | None]:
    """A job's attempts, sent; for each, its retry when one is scheduled."""
    return await webhook_delivery.deliver(pool, http, decode(payload), now=now, settings=settings)


def encode(attempts: list[DueAttempt]) -> bytes:
    return orjson.dumps([[str(a.workspace_id), str(a.delivery_id), a.attempt] for a in attempts])


def decode(payload: bytes | None) -> list[DueAttempt]:
    data = orjson.loads(payload or b"[]")
    if isinstance(data, dict):
        # A job of one attempt (DELIVER_ONE), queued by a worker from before attempts were batched.
        data = [[data["w"], data["d"], data["a"]]]
    return [DueAttempt(uuid.UUID(w), uuid.UUID(d), int(a)) for w, d, a in data]
