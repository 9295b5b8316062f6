"""What a member's level gives outside points: the priority and SLA tier of the member's new tickets."""

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller

PRIORITIES = ("low", "normal", "high", "urgent")
# The member's level as the levels document describes it, with the ranks (1 best) of the value tier
# it maps to and of the customer's own tier.
TERMS_SQL = text(
    """
SELECT x ->> 'ticket_priority',
       x ->> 'value_tier',
       (SELECT t.rank FROM value_tiers t WHERE t.workspace_id = :ws AND t.code = x ->> 'value_tier'),
       (SELECT t.rank FROM value_tiers t WHERE t.workspace_id = :ws AND t.code = :tier)
FROM loyalty_accounts a
JOIN loyalty_documents d ON d.workspace_id = :ws AND d.kind = 'levels'
CROSS JOIN LATERAL jsonb_array_elements(d.document -> 'levels') AS x
WHERE a.workspace_id = :ws AND a.customer_id = :customer AND x ->> 'code' = a.level
"""
)


async def ticket_terms(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, priority: str, tier: str | None
) -> tuple[str, str | None]:
    """The priority and SLA tier a new ticket of this customer gets: the member's level raises the
    priority asked to its `ticket_priority`, and the customer's value tier to the level's
    `value_tier` when that ranks better; neither is ever lowered. Non-members keep both."""
    row = (await session.execute(TERMS_SQL, {"ws": ctx.workspace_id, "customer": customer_id, "tier": tier})).first()
    if row is None:
        return priority, tier
    level_priority, level_tier, level_rank, own_rank = row
    if level_priority is not None and PRIORITIES.index(level_priority) > PRIORITIES.index(priority):
        priority = level_priority
    if level_tier is not None and level_rank is not None and (own_rank is None or level_rank < own_rank):
        tier = level_tier
    return priority, tier
