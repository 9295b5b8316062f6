"""Vouchers: bought with points by redeeming a reward, or issued by hand; spent on one order once;
voided with their points and stock given back. The code is shown once and kept only as its hash.

Locks, in the order every path takes those it needs: a customer's claim on a limited reward
(advisory), the member's account, a voucher's row, the reward's row (its stock). A redemption takes
the account and then the stock; a void the account, the voucher, then the stock it gives back."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import (
    Gone,
    NotEligible,
    NotEnoughPoints,
    OutOfStock,
    ValidationFailed,
    VoucherExpired,
    VoucherSpent,
)
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.models import LoyaltyAccount, LoyaltyVoucher, Order
from app.schemas.loyalty import RedemptionIn
from app.schemas.loyalty_rewards import VoucherIssueIn
from app.services.customers.visibility import require_visible, through_customer
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, timestamp
from app.services.identity import workspaces
from app.services.loyalty import members, points, rewards

# Crockford's base32: no I, L, O or U to misread. 16 characters are 80 random bits.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16
PREFIX_LENGTH = 4


@dataclass(frozen=True)
class Issued:
    """A voucher just issued, with the one copy of its code there will ever be."""

    voucher: LoyaltyVoucher
    code: str


def _value(row: LoyaltyVoucher) -> str | None:
    return rewards.value_text(row.kind, row.value, row.currency)


# Only the per-row path emits voucher events: no SQL side.
VOUCHER_EVENT: Payload[Any] = Payload(
    (
        *(column(key) for key in ("id", "customer_id", "reward_id", "redemption_id", "code_prefix", "name", "kind")),
        Field("value", _value, None),
        *(column(key) for key in ("currency", "points", "source", "status", "order_id")),
        timestamp("expires_at"),
        Field("at", None, None),
    ),
    model=data_model("voucher.issued"),
)


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def _plain(code: str) -> str:
    """The code as hashed: case, spaces and dashes are how it was shown or typed, not part of it."""
    return "".join(code.split()).replace("-", "").upper()


def code_hash(code: str) -> str:
    return hashlib.sha256(_plain(code).encode()).hexdigest()


def _emit(session: AsyncSession, ctx: Caller, event_type: str, voucher: LoyaltyVoucher, at: datetime) -> None:
    outbox.emit(session, ctx, event_type, VOUCHER_EVENT.data(voucher, at=at))


async def _issue(
    session: AsyncSession,
    ctx: Caller,
    *,
    customer_id: uuid.UUID,
    name: str,
    kind: str,
    value: Decimal | None,
    currency: str,
    points_paid: int,
    source: str,
    expires_at: datetime | None,
    reward_id: uuid.UUID | None = None,
    redemption_id: uuid.UUID | None = None,
    reason: str | None = None,
) -> Issued:
    """The one writer of new vouchers: the row, its audit entry and `voucher.issued`."""
    code = new_code()
    now = clock.now()
    voucher = LoyaltyVoucher(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        customer_id=customer_id,
        reward_id=reward_id,
        redemption_id=redemption_id,
        code_hash=code_hash(code),
        code_prefix=code[:PREFIX_LENGTH],
        name=name,
        kind=kind,
        value=value,
        currency=currency,
        points=points_paid,
        source=source,
        reason=reason,
        status="issued",
        issued_at=now,
        expires_at=expires_at,
        actor=ctx.actor,
        version=1,
    )
    session.add(voucher)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="loyalty_voucher",
        entity_id=voucher.id,
        action="issued",
        changes={
            "customer_id": {"before": None, "after": str(customer_id)},
            "source": {"before": None, "after": source},
            **({"reason": {"before": None, "after": reason}} if reason else {}),
        },
    )
    _emit(session, ctx, "voucher.issued", voucher, now)
    return Issued(voucher, code)


async def redeem_reward(session: AsyncSession, ctx: Caller, reward_id: uuid.UUID, customer_id: uuid.UUID) -> Issued:
    """A voucher for a reward: dates, level and per-customer limit checked, the points taken through
    the ledger's writer (a redemption, which a void cancels), one unit of stock taken. Any refusal
    raises before the commit, so it changes nothing."""
    reward = await rewards.get(session, ctx, reward_id)
    await require_visible(session, ctx, customer_id)
    now = clock.now()
    if reward.valid_from is not None and now < reward.valid_from:
        raise NotEligible(f"The reward can be redeemed from {reward.valid_from.isoformat()}.")
    if reward.valid_until is not None and now >= reward.valid_until:
        raise Gone(f"The reward ended at {reward.valid_until.isoformat()}.")
    # Refuses early once the shelf is empty; the unit itself is only ever taken by take_unit below.
    if reward.stock == 0:
        raise OutOfStock("The reward is out of stock.")
    if reward.per_customer_limit is not None:
        # One claim at a time per customer and reward, so two cannot both pass the count.
        lock = func.hashtextextended(f"reward-limit:{ctx.workspace_id}:{reward.id}:{customer_id}", 0)
        await session.execute(select(func.pg_advisory_xact_lock(lock)))
        held = await session.scalar(
            select(func.count())
            .select_from(LoyaltyVoucher)
            .where(
                LoyaltyVoucher.workspace_id == ctx.workspace_id,
                LoyaltyVoucher.reward_id == reward.id,
                LoyaltyVoucher.customer_id == customer_id,
                LoyaltyVoucher.status != "voided",
            )
        )
        if (held or 0) >= reward.per_customer_limit:
            raise NotEligible(f"The customer holds {held} of this reward's vouchers, the most one may.")
    if reward.points_cost > 0:
        member = await points.locked_account(session, ctx, customer_id)
    else:
        member = await session.scalar(
            select(LoyaltyAccount).where(
                LoyaltyAccount.workspace_id == ctx.workspace_id, LoyaltyAccount.customer_id == customer_id
            )
        )
    if reward.eligible_levels and (member is None or member.level not in reward.eligible_levels):
        level = "no level" if member is None or member.level is None else f"level {member.level}"
        raise NotEligible(f"The reward is for levels {', '.join(reward.eligible_levels)}; the customer has {level}.")
    redemption_id = None
    if reward.points_cost > 0:
        if member is None:
            raise NotEnoughPoints(f"{reward.points_cost} points asked, 0 available: not a member.", available=0)
        redemption = await members.redeem(
            session, ctx, RedemptionIn(customer_id=customer_id, points=reward.points_cost, description=reward.name)
        )
        redemption_id = redemption.id
    if not await rewards.take_unit(session, ctx, reward.id):
        raise OutOfStock("The reward is out of stock.")
    days = reward.voucher_valid_days
    return await _issue(
        session,
        ctx,
        customer_id=customer_id,
        name=reward.name,
        kind=reward.kind,
        value=reward.value,
        currency=reward.currency,
        points_paid=reward.points_cost,
        source="reward",
        expires_at=None if days is None else now + timedelta(days=days),
        reward_id=reward.id,
        redemption_id=redemption_id,
    )


async def issue_by_hand(session: AsyncSession, ctx: Caller, data: VoucherIssueIn) -> Issued:
    """A voucher that costs no points and takes no stock; the reason is audited."""
    await require_visible(session, ctx, data.customer_id)
    if data.expires_at is not None and data.expires_at <= clock.now():
        raise ValidationFailed("expires_at must be in the future.", loc=["body", "expires_at"])
    return await _issue(
        session,
        ctx,
        customer_id=data.customer_id,
        name=data.name,
        kind=data.kind,
        value=data.value,
        currency=await workspaces.currency(session, ctx.workspace_id),
        points_paid=0,
        source="admin",
        expires_at=data.expires_at,
        reason=data.reason,
    )


async def get(session: AsyncSession, ctx: Caller, voucher_id: uuid.UUID, *, lock: bool = False) -> LoyaltyVoucher:
    """404 unless the caller may see the voucher's customer."""
    statement = through_customer(LoyaltyVoucher, ctx).where(LoyaltyVoucher.id == voucher_id)
    # Locked, it is read afresh: a row this session read before the lock may have changed meanwhile.
    statement = statement.execution_options(populate_existing=True) if lock else statement
    return await scoped.one(session, statement, missing="No voucher with that id.", lock=lock)


async def list_vouchers(
    session: AsyncSession,
    ctx: Caller,
    *,
    customer_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[LoyaltyVoucher], str | None]:
    """Newest first, of the customers the caller may see."""
    statement = through_customer(LoyaltyVoucher, ctx)
    if customer_id is not None:
        statement = statement.where(LoyaltyVoucher.customer_id == customer_id)
    if status is not None:
        now = clock.now()
        standing = LoyaltyVoucher.expires_at.is_(None) | (LoyaltyVoucher.expires_at > now)
        if status == "issued":
            statement = statement.where(LoyaltyVoucher.status == "issued", standing)
        elif status == "expired":
            statement = statement.where(LoyaltyVoucher.status == "issued", ~standing)
        else:
            statement = statement.where(LoyaltyVoucher.status == status)
    keys = [SortKey(LoyaltyVoucher.id, descending=True)]
    return await keyset_page(session, statement, keys, list_name="loyalty-vouchers", limit=limit, cursor=cursor)


def _refuse_spent(voucher: LoyaltyVoucher) -> None:
    if voucher.status == "redeemed":
        raise VoucherSpent(f"The voucher was used on order {voucher.order_id}.")
    if voucher.status == "voided":
        raise VoucherSpent("The voucher was voided.")


async def redeem_code(session: AsyncSession, ctx: Caller, code: str, order_id: uuid.UUID) -> LoyaltyVoucher:
    """Spend a voucher on an order of its customer, once: 404 for a code the caller cannot see, 409
    used or voided, 410 expired, 422 naming `order_id` for an order that is not its customer's."""
    statement = through_customer(LoyaltyVoucher, ctx).where(LoyaltyVoucher.code_hash == code_hash(code))
    voucher = await scoped.one(session, statement, missing="No voucher with that code.", lock=True)
    _refuse_spent(voucher)
    now = clock.now()
    if voucher.expires_at is not None and voucher.expires_at <= now:
        raise VoucherExpired(f"The voucher expired at {voucher.expires_at.isoformat()}.")
    owner = await session.scalar(
        select(Order.customer_id).where(Order.workspace_id == ctx.workspace_id, Order.id == order_id)
    )
    if owner is None:
        raise ValidationFailed("No order with that id.", loc=["body", "order_id"])
    if owner != voucher.customer_id:
        raise ValidationFailed(
            "The order is another customer's; a voucher is spent by its own.", loc=["body", "order_id"]
        )
    voucher.status, voucher.order_id, voucher.redeemed_at = "redeemed", order_id, now
    voucher.version += 1
    audit.record(
        session,
        ctx,
        entity_type="loyalty_voucher",
        entity_id=voucher.id,
        action="redeemed",
        changes={
            "status": {"before": "issued", "after": "redeemed"},
            "order_id": {"before": None, "after": str(order_id)},
        },
    )
    _emit(session, ctx, "voucher.redeemed", voucher, now)
    await session.flush()
    return voucher


async def void(session: AsyncSession, ctx: Caller, voucher_id: uuid.UUID) -> LoyaltyVoucher:
    """A voucher never used (expired or not) is voided: the points it cost go back to the lots they
    came from (its redemption cancelled), its unit back to the reward's stock. 409 used or voided."""
    found = await get(session, ctx, voucher_id)
    if found.redemption_id is not None:
        # The account before the voucher, as a redemption takes them.
        await points.locked_account(session, ctx, await members.redemption_member(session, ctx, found.redemption_id))
    voucher = await get(session, ctx, voucher_id, lock=True)
    _refuse_spent(voucher)
    now = clock.now()
    voucher.status, voucher.voided_at = "voided", now
    voucher.version += 1
    await session.flush()
    if voucher.redemption_id is not None:
        await members.give_back(session, ctx, voucher.redemption_id)
    if voucher.reward_id is not None:
        await rewards.return_unit(session, ctx, voucher.reward_id)
    audit.record(
        session,
        ctx,
        entity_type="loyalty_voucher",
        entity_id=voucher.id,
        action="voided",
        changes={"status": {"before": "issued", "after": "voided"}},
    )
    _emit(session, ctx, "voucher.voided", voucher, now)
    return voucher


def status_of(voucher: LoyaltyVoucher) -> str:
    if voucher.status == "issued" and voucher.expires_at is not None and voucher.expires_at <= clock.now():
        return "expired"
    return voucher.status


def present(voucher: LoyaltyVoucher, code: str | None = None) -> dict[str, Any]:
    return {
        "id": voucher.id,
        "customer_id": voucher.customer_id,
        "reward_id": voucher.reward_id,
        "redemption_id": voucher.redemption_id,
        "code": code,
        "code_prefix": voucher.code_prefix,
        "name": voucher.name,
        "kind": voucher.kind,
        "value": _value(voucher),
        "currency": voucher.currency,
        "points": voucher.points,
        "source": voucher.source,
        "reason": voucher.reason,
        "status": status_of(voucher),
        "issued_at": voucher.issued_at,
        "expires_at": voucher.expires_at,
        "order_id": voucher.order_id,
        "redeemed_at": voucher.redeemed_at,
        "voided_at": voucher.voided_at,
        "version": voucher.version,
    }
