"""Rewards: what members redeem points for. Versioned (If-Match), soft-deleted, audited; the stock
is taken and given back only by the two conditional statements below, never read then written."""

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.core.wire import money_text
from app.models import LoyaltyReward
from app.schemas.loyalty_rewards import RewardIn, RewardPatch, check_terms
from app.services.events import audit
from app.services.identity import workspaces
from app.services.loyalty import programs

_FIELDS = (
    "name",
    "description",
    "points_cost",
    "kind",
    "value",
    "stock",
    "per_customer_limit",
    "eligible_levels",
    "valid_from",
    "valid_until",
    "voucher_valid_days",
)
_REQUIRED = ("name", "description", "points_cost", "kind", "eligible_levels")

# One unit for one voucher: the row's lock makes concurrent redemptions queue here, and each sees
# the stock the one before left, so exactly one wins each unit. No row: out of stock (or deleted).
TAKE_UNIT_SQL = text(
    """
UPDATE loyalty_rewards SET stock = stock - 1
WHERE workspace_id = :ws AND id = :id AND deleted_at IS NULL AND (stock IS NULL OR stock > 0)
RETURNING stock
"""
)
# A voided voucher's unit back on the shelf (nothing to give back to an unlimited reward).
RETURN_UNIT_SQL = text(
    "UPDATE loyalty_rewards SET stock = stock + 1 WHERE workspace_id = :ws AND id = :id AND stock IS NOT NULL"
)


def value_text(kind: str, value: Decimal | None, currency: str) -> str | None:
    """An amount off in the currency's decimals; a percentage as written; a gift none."""
    if value is None:
        return None
    if kind == "discount_amount":
        return money_text(value, currency)
    return format(Decimal(value).normalize(), "f")


async def _check_levels(session: AsyncSession, ctx: Caller, codes: list[str], *, loc: str) -> None:
    """Every code names a level of the workspace's levels document: 422 naming the first that does not."""
    if not codes:
        return
    known = {level["code"] for level in (await programs.document(session, ctx, programs.LEVELS)).document["levels"]}
    for index, code in enumerate(codes):
        if code not in known:
            raise ValidationFailed(f"No level {code} in the workspace's levels.", loc=["body", loc, index])


async def create(session: AsyncSession, ctx: Caller, data: RewardIn) -> LoyaltyReward:
    await _check_levels(session, ctx, data.eligible_levels, loc="eligible_levels")
    now = clock.now()
    reward = LoyaltyReward(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        **{name: getattr(data, name) for name in _FIELDS},
        currency=await workspaces.currency(session, ctx.workspace_id),
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(reward)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="loyalty_reward",
        entity_id=reward.id,
        action="created",
        changes={name: {"before": None, "after": to_jsonable(getattr(reward, name))} for name in _FIELDS},
    )
    return reward


async def get(session: AsyncSession, ctx: Caller, reward_id: uuid.UUID, *, lock: bool = False) -> LoyaltyReward:
    statement = scoped.in_workspace(LoyaltyReward, ctx).where(
        LoyaltyReward.id == reward_id, LoyaltyReward.deleted_at.is_(None)
    )
    return await scoped.one(session, statement, missing="No reward with that id.", lock=lock)


async def list_rewards(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None
) -> tuple[list[LoyaltyReward], str | None]:
    """Newest first, deleted ones left out."""
    statement = scoped.in_workspace(LoyaltyReward, ctx).where(LoyaltyReward.deleted_at.is_(None))
    keys = [SortKey(LoyaltyReward.id, descending=True)]
    return await keyset_page(session, statement, keys, list_name="loyalty-rewards", limit=limit, cursor=cursor)


async def update(
    session: AsyncSession, ctx: Caller, reward_id: uuid.UUID, patch: RewardPatch, *, expected_version: int
) -> LoyaltyReward:
    """Vouchers already issued keep the terms they were issued with."""
    reward = await get(session, ctx, reward_id, lock=True)
    check_version(reward.version, expected_version, what="reward")
    wanted: dict[str, Any] = {name: getattr(reward, name) for name in _FIELDS}
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if value is None and name in _REQUIRED:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
        wanted[name] = value
    try:
        check_terms(wanted["kind"], wanted["value"])
    except ValueError as failed:
        raise ValidationFailed(str(failed), loc=["body", "value"]) from None
    if len(set(wanted["eligible_levels"])) != len(wanted["eligible_levels"]):
        raise ValidationFailed("eligible_levels must be distinct.", loc=["body", "eligible_levels"])
    if wanted["valid_from"] and wanted["valid_until"] and wanted["valid_until"] <= wanted["valid_from"]:
        raise ValidationFailed("valid_until must be after valid_from.", loc=["body", "valid_until"])
    if "eligible_levels" in patch.model_fields_set:
        await _check_levels(session, ctx, wanted["eligible_levels"], loc="eligible_levels")
    changes: audit.Changes = {}
    for name, value in wanted.items():
        if value != getattr(reward, name):
            changes[name] = {"before": to_jsonable(getattr(reward, name)), "after": to_jsonable(value)}
            setattr(reward, name, value)
    audit.record_update(session, ctx, reward, entity_type="loyalty_reward", changes=changes)
    return reward


async def delete(session: AsyncSession, ctx: Caller, reward_id: uuid.UUID, *, expected_version: int) -> None:
    """Soft: no more vouchers of it; those issued stay good on their own terms."""
    reward = await get(session, ctx, reward_id, lock=True)
    check_version(reward.version, expected_version, what="reward")
    now = clock.now()
    reward.deleted_at = now
    reward.version += 1
    reward.updated_at = now
    audit.record(session, ctx, entity_type="loyalty_reward", entity_id=reward.id, action="deleted", changes={})


async def take_unit(session: AsyncSession, ctx: Caller, reward_id: uuid.UUID) -> bool:
    """One unit of the reward's stock for a voucher; False when none is left."""
    taken = await session.execute(TAKE_UNIT_SQL, {"ws": ctx.workspace_id, "id": reward_id})
    return taken.first() is not None


async def return_unit(session: AsyncSession, ctx: Caller, reward_id: uuid.UUID) -> None:
    await session.execute(RETURN_UNIT_SQL, {"ws": ctx.workspace_id, "id": reward_id})


def present(reward: LoyaltyReward) -> dict[str, Any]:
    return {
        "id": reward.id,
        "name": reward.name,
        "description": reward.description,
        "points_cost": reward.points_cost,
        "kind": reward.kind,
        "value": value_text(reward.kind, reward.value, reward.currency),
        "currency": reward.currency,
        "stock": reward.stock,
        "per_customer_limit": reward.per_customer_limit,
        "eligible_levels": list(reward.eligible_levels),
        "valid_from": reward.valid_from,
        "valid_until": reward.valid_until,
        "voucher_valid_days": reward.voucher_valid_days,
        "created_at": reward.created_at,
        "updated_at": reward.updated_at,
        "version": reward.version,
    }
