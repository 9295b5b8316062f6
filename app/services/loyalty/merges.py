"""A customer merge's loyalty side: the absorbed customers' points, lots, redemptions and awards go
to the survivor through the points writer, and the survivor keeps the higher level."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.models import LoyaltyAccount
from app.services.events import outbox
from app.services.loyalty import levels, points, programs


@dataclass(frozen=True)
class LevelMove:
    customer_id: uuid.UUID
    from_level: str | None
    to_level: str | None
    at: datetime


async def follow_merge(session: AsyncSession, ctx: Caller, survivor_id: uuid.UUID, absorbed: list[uuid.UUID]) -> int:
    """In the merge's transaction: the survivor becomes a member when an absorbed customer was one,
    every account involved is locked in customer order (as every points writer locks them), and
    each absorbed account's balance moves as a `merge` entry on both sides. Returns the points moved."""
    ids = [survivor_id, *absorbed]
    account_of = (
        select(LoyaltyAccount)
        .where(LoyaltyAccount.workspace_id == ctx.workspace_id, LoyaltyAccount.customer_id.in_(ids))
        .order_by(LoyaltyAccount.customer_id)
    )
    if not any(a.customer_id != survivor_id for a in (await session.scalars(account_of)).all()):
        return 0
    now = clock.now()
    await session.execute(
        insert(LoyaltyAccount)
        .values(workspace_id=ctx.workspace_id, customer_id=survivor_id, balance=0, enrolled_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )
    accounts = {
        a.customer_id: a
        for a in (await session.scalars(account_of.with_for_update().execution_options(populate_existing=True))).all()
    }
    survivor = accounts.pop(survivor_id)
    moved = 0
    for source in accounts.values():
        moved += await points.transfer(session, ctx, source, survivor)
    await _keep_higher_level(session, ctx, survivor, list(accounts.values()), now)
    return moved


async def _keep_higher_level(
    session: AsyncSession, ctx: Caller, survivor: LoyaltyAccount, absorbed: list[LoyaltyAccount], now: datetime
) -> None:
    """The highest level held among them, by the levels' order (with its `level_since`); a level the
    document no longer names ranks below every named one. `loyalty.level_changed` when it moves."""
    codes = [level["code"] for level in (await programs.document(session, ctx, programs.LEVELS)).document["levels"]]

    def rank(account: LoyaltyAccount) -> int:
        return codes.index(account.level) if account.level in codes else -1 if account.level else -2

    best = max([survivor, *absorbed], key=rank)
    if best is survivor or rank(best) <= rank(survivor):
        return
    before = survivor.level
    survivor.level, survivor.level_since, survivor.updated_at = best.level, best.level_since, now
    move = LevelMove(survivor.customer_id, before, best.level, now)
    outbox.emit(session, ctx, "loyalty.level_changed", levels.LEVEL_CHANGED.data(move))
