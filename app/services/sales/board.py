"""The board of a pipeline: per stage, the count, amount and weighted amount of the live
opportunities of the customers the caller may see, in one grouped statement."""

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import scoped
from app.core.access import Caller
from app.core.wire import money_text
from app.models import Customer, Opportunity, Pipeline
from app.services.customers.visibility import visible_customer_clauses
from app.services.identity import workspaces
from app.services.sales import pipelines


async def board(session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID) -> dict[str, Any]:
    """Every stage in order, those without opportunities at zero. The weighted amount is the stage's
    amount × its probability / 100 (the same as the sum over its opportunities, since a stage has
    one probability), written in the workspace currency's decimals."""
    await scoped.one(
        session,
        scoped.in_workspace(Pipeline, ctx).where(Pipeline.id == pipeline_id, Pipeline.deleted_at.is_(None)),
        missing="No pipeline with that id.",
    )
    stages = (await pipelines.stages_of(session, ctx, [pipeline_id]))[pipeline_id]
    figures = {
        row.stage: row
        for row in await session.execute(
            select(Opportunity.stage, func.count().label("count"), func.sum(Opportunity.amount).label("amount"))
            .join(
                Customer,
                (Customer.workspace_id == Opportunity.workspace_id) & (Customer.id == Opportunity.customer_id),
            )
            .where(
                Opportunity.workspace_id == ctx.workspace_id,
                Opportunity.pipeline_id == pipeline_id,
                Opportunity.deleted_at.is_(None),
                *visible_customer_clauses(ctx),
            )
            .group_by(Opportunity.stage)
        )
    }
    currency = await workspaces.currency(session, ctx.workspace_id)
    out = []
    for stage in stages:
        row = figures.get(stage.code)
        amount = Decimal(row.amount) if row is not None else Decimal(0)
        out.append(
            {
                "code": stage.code,
                "name": stage.name,
                "kind": stage.kind,
                "probability": stage.probability,
                "count": row.count if row is not None else 0,
                "amount": money_text(amount, currency),
                "weighted_amount": money_text(amount * stage.probability / 100, currency),
            }
        )
    return {"pipeline_id": pipeline_id, "currency": currency, "stages": out}
