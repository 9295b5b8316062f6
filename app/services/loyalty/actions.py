"""Points for the actions a workspace names in its program (`actions: {code: points}`): awarded
once per customer, action and reference, through the points writer."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.models import LoyaltyActionAward, LoyaltyDeparture, LoyaltyLot
from app.schemas.loyalty import ActionIn
from app.services.customers.visibility import require_visible
from app.services.loyalty import members, points, programs


async def award(session: AsyncSession, ctx: Caller, data: ActionIn) -> dict[str, Any]:
    """The action's points as a lot available at once (`action` entry, `loyalty.points_earned`).
    422 for an action the program does not name; 409 when the program is off, when the customer is
    not a member of an `explicit` program (or left it), and when this customer, action and reference
    were awarded already (with that entry's id)."""
    await require_visible(session, ctx, data.customer_id)
    program = (await programs.document(session, ctx, programs.PROGRAM)).document
    worth = program.get("actions", {}).get(data.action)
    if worth is None:
        raise ValidationFailed(f"The loyalty program names no action {data.action!r}.", loc=["body", "action"])
    if not program["enabled"]:
        raise Conflict("The loyalty program is off.")
    departed = await session.scalar(
        select(LoyaltyDeparture.left_at).where(
            LoyaltyDeparture.workspace_id == ctx.workspace_id, LoyaltyDeparture.customer_id == data.customer_id
        )
    )
    enrol = program["enrolment"] == "automatic" and departed is None
    # The account's lock queues awards of one member, so the check below sees a concurrent winner's row.
    member = await points.locked_account(session, ctx, data.customer_id, enrol=enrol)
    if member is None:
        raise Conflict("The customer is not a loyalty member.")
    awarded = await session.scalar(
        select(LoyaltyActionAward.entry_id).where(
            LoyaltyActionAward.workspace_id == ctx.workspace_id,
            LoyaltyActionAward.customer_id == data.customer_id,
            LoyaltyActionAward.action == data.action,
            LoyaltyActionAward.reference == data.reference,
        )
    )
    if awarded is not None:
        raise Conflict("This action was awarded for this reference already.", existing_id=str(awarded))
    entry = await points.credit(
        session, ctx, member, int(worth), kind="action", reason=f"{data.action}: {data.reference}"
    )
    session.add(
        LoyaltyActionAward(
            workspace_id=ctx.workspace_id,
            customer_id=data.customer_id,
            action=data.action,
            reference=data.reference,
            entry_id=entry.id,
            created_at=clock.now(),
        )
    )
    await session.flush()
    lot = await session.scalar(
        select(LoyaltyLot).where(LoyaltyLot.workspace_id == ctx.workspace_id, LoyaltyLot.entry_id == entry.id)
    )
    figures = await points.figures(session, ctx, data.customer_id)
    return {
        "entry": members.present_entry(entry, lot.available_at if lot else None, lot.expires_at if lot else None),
        "balance": member.balance,
        "available": figures.available,
    }
