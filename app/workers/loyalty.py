"""Clock-driven loyalty work: points past their lot's expiry written off, members' levels reviewed, and
the loyalty report's daily figures folded."""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.access import system_caller
from app.services.loyalty import levels, points, reports
from app.workers.registry import Registry, Resources

logger = logging.getLogger(__name__)

EXPIRY = "scheduler.loyalty_expiry"
EXPIRY_CRON = "7 * * * *"
LEVEL_REVIEWS = "scheduler.loyalty_level_reviews"
LEVEL_REVIEWS_CRON = "37 3 * * *"
FIGURES = "scheduler.loyalty_figures"
FIGURES_CRON = "* * * * *"


def register(registry: Registry, r: Resources) -> None:
    registry.schedule(EXPIRY, EXPIRY_CRON, lambda: expire_points(r.sessions))
    registry.schedule(LEVEL_REVIEWS, LEVEL_REVIEWS_CRON, lambda: review_levels(r.sessions))
    registry.schedule(FIGURES, FIGURES_CRON, lambda: compact_figures(r.sessions))


async def expire_points(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Every workspace's expired lots in one statement; a second run changes nothing. Returns the members."""
    async with sessions() as session:
        members = await points.expire_due(session)
        await session.commit()
    if members:
        logger.info("loyalty points expired", extra={"members": members})
    return members


async def review_levels(sessions: async_sessionmaker[AsyncSession]) -> int:
    """The level review of each workspace with levels, each in its own transaction. Returns the moves."""
    async with sessions() as session:
        every = await levels.workspaces_with_levels(session)
    changed = 0
    for workspace_id in every:
        async with sessions() as session:
            changed += (await levels.review(session, system_caller(workspace_id))).changed
            await session.commit()
    return changed


async def compact_figures(sessions: async_sessionmaker[AsyncSession]) -> int:
    """The report sums appended rows too; folded, it reads about one row per day and kind."""
    async with sessions() as session:
        folded = await reports.compact_daily_figures(session)
        await session.commit()
    return folded
