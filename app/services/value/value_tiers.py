"""Workspace value tiers: the rule set customers are sorted into, replaced as a whole."""

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.wire import money_text
from app.models import ValueTier
from app.schemas.order import TierSettings
from app.services.events import audit
from app.services.identity import workspaces
from app.services.value import customer_values


async def list_tiers(session: AsyncSession, ctx: Caller) -> tuple[list[dict[str, Any]], int]:
    """The tiers as the API shows them, best first, and the window their spend is measured over."""
    model = await customer_values.model_for(session, ctx.workspace_id)
    tiers = await session.scalars(
        select(ValueTier).where(ValueTier.workspace_id == ctx.workspace_id).order_by(ValueTier.rank)
    )
    currency = await workspaces.currency(session, ctx.workspace_id)
    return [present(t, currency) for t in tiers.all()], model.tier_window_days


def present(tier: ValueTier, currency: str) -> dict[str, Any]:
    return {
        "id": tier.id,
        "code": tier.code,
        "name": tier.name,
        "rank": tier.rank,
        "min_spend": None if tier.min_spend is None else money_text(tier.min_spend, currency),
        "min_orders": tier.min_orders,
        "max_recency_days": tier.max_recency_days,
        "version": tier.version,
    }


async def replace(session: AsyncSession, ctx: Caller, settings: TierSettings) -> tuple[list[dict[str, Any]], int]:
    """New rules apply at the next recompute (requested by this call)."""
    codes = [t.code for t in settings.tiers]
    ranks = [t.rank for t in settings.tiers]
    if len(set(codes)) != len(codes):
        raise ValidationFailed("Tier codes must be unique.", loc=["body", "tiers"])
    if len(set(ranks)) != len(ranks):
        raise ValidationFailed("Tier ranks must be unique.", loc=["body", "tiers"])
    await scoped.one_at_a_time(session, ctx, "value_tiers")
    model = await customer_values.model_for(session, ctx.workspace_id)
    before, _ = await list_tiers(session, ctx)
    await session.execute(delete(ValueTier).where(ValueTier.workspace_id == ctx.workspace_id))
    now = clock.now()
    tiers = [
        ValueTier(
            workspace_id=ctx.workspace_id,
            id=new_id(),
            code=t.code,
            name=t.name,
            rank=t.rank,
            min_spend=t.min_spend,
            min_orders=t.min_orders,
            max_recency_days=t.max_recency_days,
            created_at=now,
            updated_at=now,
            version=1,
        )
        for t in sorted(settings.tiers, key=lambda t: t.rank)
    ]
    session.add_all(tiers)
    model.tier_window_days = settings.window_days
    model.recompute_requested_at = now
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="value_tiers",
        entity_id=ctx.workspace_id,
        action="replaced",
        changes={
            "tiers": {"before": [t["code"] for t in before], "after": codes},
            "window_days": {"before": None, "after": settings.window_days},
        },
    )
    currency = await workspaces.currency(session, ctx.workspace_id)
    return [present(t, currency) for t in tiers], settings.window_days
