"""Automation rules: event rules on committed events, schedule rules at their cron firings, date rules
(and the care rules kept through /care-rules) for each day's occasions.

Event rules are a reaction: every commit that writes events notifies the workers, and the one that
takes a workspace's cursor (the others skip it) reads the events committed since, runs the rules
and moves the cursor in one transaction. Schedule and date rules are pgqueuer schedules, each tick
in one worker; a date rule runs at every tick, and its run records make a repeat create nothing."""

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.services.automation import triggers
from app.workers.registry import Registry, Resources

logger = logging.getLogger(__name__)

SCHEDULES = "automation.schedules"
SCHEDULES_CRON = "* * * * *"
DATES = "automation.dates"
DATES_CRON = "*/10 * * * *"
RETRY_SECONDS = 2.0


def register(registry: Registry, r: Resources) -> None:
    async def events() -> bool:
        return await run_events(r.sessions, now=r.now())

    registry.react("automation events", events, retry_seconds=RETRY_SECONDS)
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


async def run_schedules(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Every schedule rule that is due, each in its own transaction. Returns how many fired."""
    fired = 0
    while True:
        async with sessions() as session:
            if not await triggers.fire_due_schedule(session, now=now):
                return fired
            await session.commit()
        fired += 1


async def run_dates(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Every active date rule for today's occasions in its workspace's time zone, each rule in its
    own transaction. Returns how many runs were recorded."""
    async with sessions() as session:
        every = [(rule.workspace_id, rule.id) for rule in await triggers.date_rules(session)]
    recorded = 0
    for workspace_id, rule_id in every:
        async with sessions() as session:
            rule = await triggers.take_date_rule(session, workspace_id, rule_id)
            if rule is None:
                continue  # paused or deleted since, or another worker runs it now
            recorded += await triggers.run_date_rule(session, rule, now=now)
            await session.commit()
    if recorded:
        logger.info("automation date runs", extra={"runs": recorded})
    return recorded
