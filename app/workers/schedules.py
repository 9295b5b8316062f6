"""Clock-driven work of follow-ups and the service desk: follow-up plans, SLA breaches, and the
folding of the service report's daily figures. (Care reminders are automation date rules:
`app/workers/automation.py`.)"""

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.access import system_caller
from app.services.engagement import follow_ups
from app.services.identity import workspaces
from app.services.service_desk import service_reports, tickets
from app.workers.registry import Registry, Resources

logger = logging.getLogger(__name__)

FOLLOW_UPS = "scheduler.follow_ups"
FOLLOW_UPS_CRON = "*/10 * * * *"
SLA_BREACHES = "scheduler.sla_breaches"
SLA_BREACHES_CRON = "* * * * *"
TICKET_FIGURES = "scheduler.ticket_figures"
TICKET_FIGURES_CRON = "* * * * *"


def register(registry: Registry, r: Resources) -> None:
    registry.schedule(FOLLOW_UPS, FOLLOW_UPS_CRON, lambda: run_follow_ups(r.sessions))
    registry.schedule(SLA_BREACHES, SLA_BREACHES_CRON, lambda: mark_sla_breaches(r.sessions))
    registry.schedule(TICKET_FIGURES, TICKET_FIGURES_CRON, lambda: compact_ticket_figures(r.sessions))


async def run_follow_ups(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Follow-up plans of every workspace, each workspace in its own transaction. Returns how many
    tasks were created."""
    created = 0
    async with sessions() as session:
        every = await workspaces.all_ids(session)
    for workspace_id in every:
        async with sessions() as session:
            created += await follow_ups.run_plans(session, system_caller(workspace_id))
            await session.commit()
    logger.info("follow-ups run", extra={"tasks_created": created})
    return created


async def mark_sla_breaches(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Open tickets past a deadline, flagged once with history and events. Returns how many."""
    async with sessions() as session:
        breached = await tickets.mark_breaches(session)
        await session.commit()
    if breached:
        logger.info("sla breaches", extra={"tickets": breached})
    return breached


async def compact_ticket_figures(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Readers sum appended rows too; folding them keeps the report's reads to about one row per key."""
    async with sessions() as session:
        folded = await service_reports.compact_daily_figures(session)
        await session.commit()
    return folded
