"""A member's account and ledger, adjustments and redemptions: each a use case in one transaction,
visible as the member's customer is."""

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotEnoughPoints
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.core.wire import money_text
from app.models import (
    LoyaltyAccount,
    LoyaltyEntry,
    LoyaltyLot,
    LoyaltyRedemption,
    LoyaltyRedemptionLot,
    LoyaltyVoucher,
)
from app.schemas.loyalty import AdjustmentIn, RedemptionIn
from app.services.customers.visibility import require_visible, through_customer
from app.services.events import audit
from app.services.identity import workspaces
from app.services.loyalty import levels, points, programs, referrals


async def account(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> dict[str, Any]:
    """Available, pending, the next expiry, the level and the way to the next one. A customer who is
    not a member answers with zeros (`member` false), not 404: the customer exists."""
    await require_visible(session, ctx, customer_id)
    row = await session.scalar(
        select(LoyaltyAccount).where(
            LoyaltyAccount.workspace_id == ctx.workspace_id, LoyaltyAccount.customer_id == customer_id
        )
    )
    if row is None:
        return {
            "customer_id": customer_id,
            "member": False,
            "balance": 0,
            "available": 0,
            "pending": 0,
            "expiring_next": None,
            "referral_code": referrals.code_of(customer_id),
            "level": None,
            "level_since": None,
            "progress": None,
            "enrolled_at": None,
        }
    figures = await points.figures(session, ctx, customer_id)
    expiring = None
    if figures.expiring_at is not None:
        expiring = {"points": figures.expiring_points, "at": figures.expiring_at}
    return {
        "customer_id": customer_id,
        "member": True,
        "balance": row.balance,
        "available": figures.available,
        "pending": figures.pending,
        "expiring_next": expiring,
        "referral_code": referrals.code_of(customer_id),
        "level": row.level,
        "level_since": row.level_since,
        "progress": await _progress(session, ctx, row),
        "enrolled_at": row.enrolled_at,
    }


async def _progress(session: AsyncSession, ctx: Caller, row: LoyaltyAccount) -> dict[str, Any] | None:
    """The next level above the member's, and where the member stands on its measure."""
    doc = (await programs.document(session, ctx, programs.LEVELS)).document
    codes = [level["code"] for level in doc["levels"]]
    rank = codes.index(row.level) if row.level in codes else -1
    if rank + 1 >= len(codes):
        return None
    target = doc["levels"][rank + 1]
    measures = await levels.measures(session, ctx, row.customer_id, window_months=doc["window_months"])
    currency = await workspaces.currency(session, ctx.workspace_id)
    current = measures[target["metric"]]
    return {
        "level": target["code"],
        "metric": target["metric"],
        "current": money_text(Decimal(current), currency) if target["metric"] == "spend" else str(int(current)),
        "threshold": programs.threshold_text(target, currency),
    }


async def ledger(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; a credit shows when its points become available and when they expire."""
    await require_visible(session, ctx, customer_id)
    # The id as a column of its own: the pager reads the cursor's key from the row.
    stmt = (
        select(LoyaltyEntry, LoyaltyLot.available_at, LoyaltyLot.expires_at, LoyaltyEntry.id)
        .outerjoin(
            LoyaltyLot,
            (LoyaltyLot.workspace_id == LoyaltyEntry.workspace_id) & (LoyaltyLot.entry_id == LoyaltyEntry.id),
        )
        .where(LoyaltyEntry.workspace_id == ctx.workspace_id, LoyaltyEntry.customer_id == customer_id)
    )
    rows, next_cursor = await keyset_page(
        session,
        stmt,
        [SortKey(LoyaltyEntry.id, descending=True)],
        list_name=f"loyalty-ledger:{customer_id}",
        limit=limit,
        cursor=cursor,
    )
    return [present_entry(entry, available_at, expires_at) for entry, available_at, expires_at, _ in rows], next_cursor


def present_entry(entry: LoyaltyEntry, available_at: Any = None, expires_at: Any = None) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "points": entry.points,
        "order_id": entry.order_id,
        "line_no": entry.line_no,
        "redemption_id": entry.redemption_id,
        "reason": entry.reason,
        "available_at": available_at,
        "expires_at": expires_at,
        "created_at": entry.created_at,
    }


async def adjust(session: AsyncSession, ctx: Caller, data: AdjustmentIn) -> dict[str, Any]:
    """Points added (enrolling the customer if need be) or taken, with the reason, audited."""
    await require_visible(session, ctx, data.customer_id)
    member = await points.locked_account(session, ctx, data.customer_id, enrol=data.points > 0)
    if member is None:
        raise NotEnoughPoints(f"{-data.points} points asked, 0 available: not a member.", available=0)
    if data.points > 0:
        entry = await points.credit(session, ctx, member, data.points, kind="adjust", reason=data.reason)
    else:
        entry, _ = await points.debit(session, ctx, member, -data.points, kind="adjust", reason=data.reason)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="loyalty_account",
        entity_id=data.customer_id,
        action="adjusted",
        changes={
            "balance": {"before": member.balance - data.points, "after": member.balance},
            "reason": {"before": None, "after": data.reason},
        },
    )
    figures = await points.figures(session, ctx, data.customer_id)
    lot = await session.scalar(
        select(LoyaltyLot).where(LoyaltyLot.workspace_id == ctx.workspace_id, LoyaltyLot.entry_id == entry.id)
    )
    return {
        "entry": present_entry(entry, lot.available_at if lot else None, lot.expires_at if lot else None),
        "balance": member.balance,
        "available": figures.available,
    }


async def redeem(session: AsyncSession, ctx: Caller, data: RedemptionIn) -> LoyaltyRedemption:
    """Points for a discount or gift, taken from the available lots oldest first; 409 with the
    available points when there are too few."""
    await require_visible(session, ctx, data.customer_id)
    member = await points.locked_account(session, ctx, data.customer_id)
    if member is None:
        raise NotEnoughPoints(f"{data.points} points asked, 0 available: not a member.", available=0)
    redemption = LoyaltyRedemption(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        customer_id=data.customer_id,
        points=data.points,
        description=data.description,
        status="active",
        created_at=clock.now(),
        version=1,
    )
    _, taken = await points.debit(session, ctx, member, data.points, kind="redeem", redemption_id=redemption.id)
    session.add(redemption)
    await session.flush()
    session.add_all(
        LoyaltyRedemptionLot(workspace_id=ctx.workspace_id, redemption_id=redemption.id, lot_id=lot_id, points=take)
        for lot_id, take in taken
    )
    audit.record(session, ctx, entity_type="loyalty_redemption", entity_id=redemption.id, action="created", changes={})
    return redemption


async def cancel(session: AsyncSession, ctx: Caller, redemption_id: uuid.UUID) -> LoyaltyRedemption:
    """The points go back to the lots they came from, with those lots' expiry: a lot past it is
    written off by the next expiry run, as it would have been unspent. 409 when already cancelled,
    or when the redemption bought a voucher (voiding the voucher gives the points back)."""
    await get(session, ctx, redemption_id)
    return await give_back(session, ctx, redemption_id)


async def redemption_member(session: AsyncSession, ctx: Caller, redemption_id: uuid.UUID) -> uuid.UUID:
    """The member whose points a redemption took: its voucher may have followed a merge to another customer."""
    found = await scoped.get(session, ctx, LoyaltyRedemption, redemption_id, missing="No redemption with that id.")
    return found.customer_id


async def give_back(session: AsyncSession, ctx: Caller, redemption_id: uuid.UUID) -> LoyaltyRedemption:
    """A redemption cancelled, for `cancel` and for a voided voucher (its voucher voided first)."""
    member = await points.locked_account(session, ctx, await redemption_member(session, ctx, redemption_id))
    assert member is not None  # a redemption's account cannot go while the redemption stays
    redemption = await scoped.get(
        session, ctx, LoyaltyRedemption, redemption_id, missing="No redemption with that id.", lock=True
    )
    if redemption.status == "cancelled":
        raise Conflict("The redemption is cancelled already.")
    voucher = await session.scalar(
        select(LoyaltyVoucher.id).where(
            LoyaltyVoucher.workspace_id == ctx.workspace_id,
            LoyaltyVoucher.redemption_id == redemption.id,
            LoyaltyVoucher.status != "voided",
        )
    )
    if voucher is not None:
        raise Conflict(f"The redemption bought voucher {voucher}: void the voucher, which gives the points back.")
    entry = await points.give_back(session, ctx, member, redemption.id, redemption.points)
    redemption.status = "cancelled"
    redemption.cancelled_at = entry.created_at
    redemption.version += 1
    audit.record(
        session,
        ctx,
        entity_type="loyalty_redemption",
        entity_id=redemption.id,
        action="cancelled",
        changes={"status": {"before": "active", "after": "cancelled"}},
    )
    await session.flush()
    return redemption


async def get(session: AsyncSession, ctx: Caller, redemption_id: uuid.UUID) -> LoyaltyRedemption:
    return await scoped.one(
        session,
        through_customer(LoyaltyRedemption, ctx).where(LoyaltyRedemption.id == redemption_id),
        missing="No redemption with that id.",
    )


async def list_redemptions(
    session: AsyncSession, ctx: Caller, *, customer_id: uuid.UUID | None, limit: int, cursor: str | None
) -> tuple[list[LoyaltyRedemption], str | None]:
    """Newest first, of the customers the caller may see."""
    stmt = through_customer(LoyaltyRedemption, ctx)
    if customer_id is not None:
        stmt = stmt.where(LoyaltyRedemption.customer_id == customer_id)
    return await keyset_page(
        session,
        stmt,
        [SortKey(LoyaltyRedemption.id, descending=True)],
        list_name="loyalty-redemptions",
        limit=limit,
        cursor=cursor,
    )


def present_redemption(row: LoyaltyRedemption) -> dict[str, Any]:
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "points": row.points,
        "description": row.description,
        "status": row.status,
        "created_at": row.created_at,
        "cancelled_at": row.cancelled_at,
        "version": row.version,
    }
