"""Automation rules: event rules on committed events, schedule rules at their cron firings, date rules
(and the care rules kept through /care-rules) for each day's occasions.

Event rules are a reaction: every commit that writes events notifies the workers, and the one that
takes a workspace's cursor (the others skip it) reads the events committed since, runs the rules
and moves the cursor in one transaction; a sweep every SWEEP_SECONDS reads what an older
transaction still running kept back at the notification. Schedule and date rules are pgqueuer schedules, each tick
in one worker; a date rule runs at every tick, and its run records make a repeat create nothing."""

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.services.automation import triggers
from app.workers.registry import Registry, Resources

logger = logging.getLogger(__name__)

SCHEDULES = "automation.schedules"
SCHEDULES_CRON = "* * * * *"
DATES = "automation.dates"
DATES_CRON = "*/10 * * * *"
RETRY_SECONDS = 2.0
# Events are read below the oldest transaction still running on the server: one committed while an
# older transaction ran is not readable when its notification comes, and no later commit may come
# to announce it. The sweep reads it then.
SWEEP_SECONDS = 5.0


def register(registry: Registry, r: Resources) -> None:
    async def events() -> bool:
        return await run_events(r.sessions, now=r.now())

    registry.react("automation events", events, sweep_seconds=SWEEP_SECONDS, retry_seconds=RETRY_SECONDS)
    registry.schedule(SCHEDULES, SCHEDULES_CRON, lambda: run_schedules(r.sessions, now=r.now()))
    registry.schedule(DATES, DATES_CRON, lambda: run_dates(r.sessions, now=r.now()))


async def run_events(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> bool:
    """One batch of events for each workspace with event rules, each in its own transaction.
    Returns True while a workspace had a full batch (the reaction runs again at once)."""
    async with sessions() as session:
        listening = await triggers.listening_workspaces(session)
    more = False
    for workspace_id in listening:
        async with sessions() as session:
            recorded, full = await triggers.take_events(session, workspace_id, now=now)
            await session.commit()
        more = more or full
        if recorded:
            logger.info("automation event runs", extra={"workspace_id": str(workspace_id), "runs": recorded})
    return more


async def run_schedules(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime, parallel: int = triggers.PARALLEL_CHUNKS
) -> int:
    """Every schedule rule that is due, fired for its due time, then set to its next firing.
    Returns how many fired."""
    async with sessions() as session:
        due = await triggers.due_schedules(session, now=now)
    for workspace_id, rule_id, fired_at in due:
        recorded = await _in_ranges(
            sessions,
            workspace_id,
            rule_id,
            functools.partial(_fire, fired_at=fired_at, now=now),
            parallel,
        )
        async with sessions() as session:
            rule = await triggers.live_rule(session, workspace_id, rule_id)
            if rule is not None:
                await triggers.advance_schedule(session, rule, fired_at=fired_at, now=now)
            await session.commit()
        if recorded:
            logger.info("automation schedule runs", extra={"rule_id": str(rule_id), "runs": recorded})
    return len(due)


async def run_dates(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime, parallel: int = triggers.PARALLEL_CHUNKS
) -> int:
    """Every active date rule for today's occasions in its workspace's time zone. Returns how many
    runs were recorded."""
    async with sessions() as session:
        every = [(rule.workspace_id, rule.id) for rule in await triggers.date_rules(session)]
    recorded = 0
    for workspace_id, rule_id in every:
        recorded += await _in_ranges(
            sessions,
            workspace_id,
            rule_id,
            lambda s, rule, ids: triggers.run_date_rule(s, rule, now=now, ids=ids),
            parallel,
        )
    if recorded:
        logger.info("automation date runs", extra={"runs": recorded})
    return recorded


async def _fire(session: AsyncSession, rule: Any, ids: triggers.IdRange, *, fired_at: datetime, now: datetime) -> int:
    return await triggers.fire_schedule(session, rule, fired_at=fired_at, now=now, ids=ids)


async def _in_ranges(
    sessions: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    rule_id: uuid.UUID,
    run: Callable[[AsyncSession, Any, triggers.IdRange], Awaitable[int]],
    parallel: int,
) -> int:
    """`run` over the workspace's customers range by range, each range committed on its own,
    `parallel` at a time; a range finds the rule still active or runs nothing. A worker that
    stops midway leaves the rest to the next tick, whose runs skip the customers already run."""
    async with sessions() as session:
        pending = iter(await triggers.id_ranges(session, workspace_id))
    recorded = 0

    async def drain() -> None:
        nonlocal recorded
        for ids in pending:  # shared: each range goes to whichever runner asks first
            async with sessions() as session:
                rule = await triggers.live_rule(session, workspace_id, rule_id)
                if rule is None:
                    return
                in_range = await run(session, rule, ids)
                await session.commit()
            recorded += in_range  # after the await: the other runner adds to it meanwhile

    async with asyncio.TaskGroup() as runners:
        for _ in range(parallel):
            runners.create_task(drain())
    return recorded
