"""Messages to customers: the dispatch reaction (with a sweep) hands due messages to jobs, and the
SEND entrypoint sends a job's messages. Like webhook dispatch it is a reaction, so a message
committed now starts within moments, with a short sweep for retries and quiet hours that come due
with no commit to announce them."""

import asyncio
from collections.abc import Callable
from datetime import datetime

import aiohttp
import orjson
from pgqueuer import Queries
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.secret_box import box
from app.core.settings import Settings
from app.services.outreach import providers, sending
from app.workers.registry import Registry, Resources

SEND = "messages.send_batch"


def register(registry: Registry, r: Resources) -> None:
    jobs = asyncio.Semaphore(sending.jobs_at_once(r.settings))
    # Kept for the connected round; a connection the server closed meanwhile is opened again.
    connections = sending.Connections()
    http = providers.http_session(
        r.settings.outreach_concurrency, allow_private=r.settings.webhook_allow_private_targets
    )

    async def send_job(payload: bytes | None) -> None:
        async with jobs:
            await send(r.sessions, http, payload, now=r.now, settings=r.settings, connections=connections)

    async def dispatch_pass() -> bool:
        await dispatch(r.sessions, r.queries, now=r.now())
        return False

    registry.entrypoint(SEND, send_job)
    registry.on_close(connections.close)
    registry.on_close(http.close)
    registry.react("message dispatch", dispatch_pass, sweep_seconds=r.dispatch_sweep_seconds)


async def dispatch(sessions: async_sessionmaker[AsyncSession], queries: Queries, *, now: datetime) -> int:
    """Leases run out to `unknown`, then due messages go to jobs, batch after batch. Returns how many."""
    async with sessions() as session:
        await sending.expire_leases(session, now=now)
        await session.commit()
    queued = 0
    while True:
        async with sessions() as session:
            jobs = await sending.dispatch_due(session, now=now)
            await session.commit()
        if jobs:
            await queries.enqueue(
                [SEND] * len(jobs),
                [orjson.dumps(sending.encode(job)) for job in jobs],
                [0] * len(jobs),
                dedupe_key=[job.key for job in jobs],
                on_conflict="skip",
            )
        count = sum(len(job.messages) for job in jobs)
        queued += count
        if count < sending.DISPATCH_BATCH:
            return queued


async def send(
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    payload: bytes | None,
    *,
    now: Callable[[], datetime],
    settings: Settings,
    connections: sending.Connections | None = None,
) -> None:
    """Claim (committed before any send), send, record; `now` is the worker's clock."""
    pairs = sending.decode(orjson.loads(payload or b"[]"))
    async with sessions() as session:
        claimed, channels = await sending.claim(session, pairs, now=now(), lease=sending.lease(settings))
        await session.commit()
    if not claimed:
        return
    outcomes = await sending.send_all(
        claimed,
        channels,
        http=http,
        secret_box=box(settings),
        time_limit=settings.outreach_send_timeout_seconds,
        connections=connections,
    )
    async with sessions() as session:
        await sending.record(session, outcomes, now=now())
        await session.commit()
