"""The readiness probe's schema revision and the metrics scrape's queue and delivery counts."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.metrics import QUEUE_JOBS, WEBHOOK_DELIVERIES


async def schema_revision(session: AsyncSession) -> str | None:
    """The Alembic revision the database is at; None for a database that was never migrated."""
    # A database that was never migrated has no alembic_version table at all.
    if not await session.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
        return None
    revision: str | None = await session.scalar(text("SELECT version_num FROM alembic_version"))
    return revision


async def record_queue_depths(session: AsyncSession) -> None:
    """Jobs by entrypoint and status, and webhook deliveries not yet settled, into their gauges."""
    for entrypoint, status, count in await session.execute(
        text("SELECT entrypoint, status::text, count(*) FROM pgqueuer GROUP BY 1, 2")
    ):
        QUEUE_JOBS.labels(entrypoint, status).set(count)
    for state, count in await session.execute(
        text(
            "SELECT state, count(*) FROM webhook_deliveries"
            " WHERE state IN ('pending', 'held', 'sending', 'failed') GROUP BY 1"
        )
    ):
        WEBHOOK_DELIVERIES.labels(state).set(count)
