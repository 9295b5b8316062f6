"""Customer value: lifetime-value predictions, and the full recompute of RFM scores, tiers and the
lifetime-value model per workspace, followed by the lifecycle rules that read them.

Both run as a reaction, since an order's commit marks its customer's prediction due and a person
who asks for a recompute is waiting, and on a schedule, which finds the workspaces whose last
recompute is a day old and anything no notification announced. Long set-based work runs apart from
webhook dispatch, so it never holds deliveries back."""

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.access import system_caller
from app.services.value import customer_values
from app.workers import segments
from app.workers.registry import Registry, Resources

logger = logging.getLogger(__name__)

RECOMPUTES = "scheduler.value_recomputes"
RECOMPUTES_CRON = "* * * * *"


def register(registry: Registry, r: Resources) -> None:
    async def run() -> bool:
        await predict_due(r.sessions)
        await recompute_due(r.sessions, now=r.now())
        return False

    registry.react("customer value", run)
    registry.schedule(RECOMPUTES, RECOMPUTES_CRON, run)


async def predict_due(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Lifetime-value predictions of the rows order writes marked, batch by batch, each batch
    committed on its own. Returns how many rows were taken."""
    predicted = 0
    async with sessions() as session:
        workspaces = await customer_values.due_predictions(session)
    for workspace_id in workspaces:
        while True:
            async with sessions() as session:
                taken = await customer_values.predict_due(session, workspace_id)
                await session.commit()
            predicted += taken
            if taken < customer_values.PREDICTION_BATCH:
                break
    return predicted


async def recompute_due(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> int:
    """Each workspace asked to recompute, or not recomputed for a day: figures, scores and tiers in
    one transaction, the lifetime-value refit in another, then the lifecycle rules chunk by chunk.
    A workspace another worker is recomputing is left to it. Returns how many were recomputed."""
    async with sessions() as session:
        due = await customer_values.due_recomputes(session, now=now)
    recomputed = 0
    for workspace_id in due:
        ctx = system_caller(workspace_id)
        async with sessions() as session:
            seconds = await customer_values.recompute_workspace(session, ctx)
            await session.commit()
        if seconds is None:
            continue
        async with sessions() as session:
            await customer_values.refit_lifetime_value(session, ctx)
            await session.commit()
        moved = await segments.apply_lifecycle_rules(sessions, workspace_id)
        recomputed += 1
        logger.info(
            "value recompute", extra={"workspace_id": str(workspace_id), "seconds": seconds, "stage_moves": moved}
        )
    return recomputed
