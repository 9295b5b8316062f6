"""Joining and leaving the loyalty program by request (the workspace's `explicit` enrolment, or a
customer who asks in either mode)."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import NotFound
from app.models import LoyaltyAccount, LoyaltyDeparture
from app.services.customers.visibility import require_visible
from app.services.events import audit
from app.services.loyalty import members, points


async def enrol(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> dict[str, Any]:
    """The customer's account, made when the customer is not a member yet (audited): concurrent
    calls make one. A customer who left comes back with nothing."""
    await require_visible(session, ctx, customer_id)
    now = clock.now()
    made = (
        await session.execute(
            insert(LoyaltyAccount)
            .values(workspace_id=ctx.workspace_id, customer_id=customer_id, balance=0, enrolled_at=now, updated_at=now)
            .on_conflict_do_nothing()
            .returning(LoyaltyAccount.customer_id)
        )
    ).first() is not None
    if made:
        await session.execute(
            delete(LoyaltyDeparture).where(
                LoyaltyDeparture.workspace_id == ctx.workspace_id, LoyaltyDeparture.customer_id == customer_id
            )
        )
        audit.record(
            session,
            ctx,
            entity_type="loyalty_account",
            entity_id=customer_id,
            action="enrolled",
            changes={"member": {"before": False, "after": True}},
        )
    return await members.account(session, ctx, customer_id)


async def leave(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> dict[str, Any]:
    """The member's points are forfeited and its account, ledger, lots and redemptions removed; the
    customer stays out of automatic enrolment until enrolled again. 404 when not a member."""
    await require_visible(session, ctx, customer_id)
    account = await points.locked_account(session, ctx, customer_id)
    if account is None:
        raise NotFound("The customer is not a loyalty member.")
    forfeited = await points.close(session, ctx, account)
    now: datetime = clock.now()
    await session.execute(
        insert(LoyaltyDeparture)
        .values(workspace_id=ctx.workspace_id, customer_id=customer_id, forfeited=forfeited, left_at=now)
        .on_conflict_do_update(
            index_elements=[LoyaltyDeparture.workspace_id, LoyaltyDeparture.customer_id],
            set_={"forfeited": forfeited, "left_at": now},
        )
    )
    audit.record(
        session,
        ctx,
        entity_type="loyalty_account",
        entity_id=customer_id,
        action="left",
        changes={"member": {"before": True, "after": False}, "balance": {"before": forfeited, "after": 0}},
    )
    return {"customer_id": customer_id, "forfeited": forfeited, "left_at": now}
