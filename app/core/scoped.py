"""The one tenancy scope: statements on a tenant-owned table start from the caller's workspace, and a
row that is not there, or is another workspace's, is the same 404."""

import uuid
from typing import Any, TypeVar

from sqlalchemy import Select, Uuid, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.access import Caller
from app.core.errors import NotFound
from app.models.base import TenantKey

Row = TypeVar("Row", bound=TenantKey)


def ids(values: list[uuid.UUID]) -> Any:
    """One array parameter, however many ids (an IN list would bind one parameter each): compare
    with `column == any_(ids(...))`."""
    return bindparam(None, values, type_=ARRAY(Uuid()))


def in_workspace(model: type[Row], ctx: Caller) -> Select[Row]:
    return select(model).where(model.workspace_id == ctx.workspace_id)


async def one(session: AsyncSession, statement: Select[Row], *, missing: str, lock: bool = False) -> Row:
    """The statement's row, locked for update when asked (only the scoped table's row), or NotFound."""
    if lock:
        statement = statement.with_for_update(of=statement.column_descriptions[0]["entity"])
    found = await session.scalar(statement)
    if found is None:
        raise NotFound(missing)
    return found


async def get(
    session: AsyncSession, ctx: Caller, model: type[Row], row_id: uuid.UUID, *, missing: str, lock: bool = False
) -> Row:
    return await one(session, in_workspace(model, ctx).where(model.id == row_id), missing=missing, lock=lock)


async def all_of(
    session: AsyncSession, ctx: Caller, model: type[Row], *, order_by: InstrumentedAttribute[Any]
) -> list[Row]:
    """Every row of the caller's workspace, for the short configuration lists (plans, rules, categories)."""
    return list((await session.scalars(in_workspace(model, ctx).order_by(order_by, model.id))).all())


async def one_at_a_time(session: AsyncSession, ctx: Caller, what: str) -> None:
    """Serialise, until this transaction ends, the writes of the caller's workspace that replace the
    whole set `what` (delete, then insert): two at once would both delete nothing the other inserted
    and then collide on the set's unique keys. The second waits and replaces the first's set."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"{what}:{ctx.workspace_id}", 0))))
