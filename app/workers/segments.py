"""Dynamic segments' refresh, the lifecycle rules (run after each value recompute, whose tiers
and scores they read), and lead scores.

A refresh runs as a reaction, since a person who asks for one is waiting, and on a schedule, which
finds the segments never refreshed or refreshed six hours ago. Lead scores the same way: a reaction
for rules just saved, and a schedule that also finds the workspaces last scored a day ago."""

import logging
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.access import system_caller
from app.core.errors import NotFound
from app.services.segments import lead_scoring, lifecycle, segments
from app.workers.registry import Registry, Resources

logger = logging.getLogger(__name__)

REFRESHES = "scheduler.segment_refreshes"
REFRESHES_CRON = "* * * * *"
LEAD_SCORES = "scheduler.lead_scores"
LEAD_SCORES_CRON = "* * * * *"


def register(registry: Registry, r: Resources) -> None:
    async def refresh() -> bool:
        await refresh_due(r.sessions, now=r.now())
        return False

    registry.react("segment refresh", refresh)
    registry.schedule(REFRESHES, REFRESHES_CRON, refresh)

    async def score() -> bool:
        await score_leads(r.sessions, now=r.now())
        return False

    registry.react("lead scores", score)
    registry.schedule(LEAD_SCORES, LEAD_SCORES_CRON, score)


async def refresh_due(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Every dynamic segment asked to refresh, never refreshed, or stale, each in its own
    transaction under the segment's lock. Returns how many were due."""
    async with sessions() as session:
        stale = await segments.due_refreshes(session, now=now)
    for workspace_id, segment_id in stale:
        async with sessions() as session:
            try:
                segment = await segments.get(session, system_caller(workspace_id), segment_id, lock=True)
            except NotFound:
                continue  # deleted since the list was read
            joined, left = await segments.refresh(session, segment)
            await session.commit()
        logger.info("segment refresh", extra={"segment_id": str(segment_id), "joined": joined, "left": left})
    return len(stale)


async def apply_lifecycle_rules(sessions: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID) -> int:
    """The rules over the whole workspace, chunk by chunk. Returns how many customers moved stage."""
    return await lifecycle.apply_rules_in_chunks(sessions, system_caller(workspace_id))


async def score_leads(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime, parallel: int = lead_scoring.PARALLEL_CHUNKS
) -> int:
    """The lead scores of every workspace whose rules were saved since, or scored a day ago, range
    by range. Returns how many scores changed."""
    changed = await lead_scoring.recompute_due(sessions, now=now, parallel=parallel)
    if changed:
        logger.info("lead scores", extra={"changed": changed})
    return changed
