"""The suppression list: addresses never sent to on a medium (`email`, `sms`). Bounces and
complaints block every message; an unsubscribe blocks marketing (a receipt or a code still goes)."""

import uuid
from typing import Any

from sqlalchemy import Text, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.core.ids import new_id
from app.core.masking import is_masked, mask_email, mask_phone
from app.core.pagination import SortKey, keyset_page
from app.models import Suppression
from app.schemas.customer import normalise_email, normalise_phone
from app.schemas.outreach import SuppressionIn
from app.services.events import audit


def normalised(medium: str, address: str, loc: list[str | int]) -> str:
    try:
        return normalise_email(address) if medium == "email" else normalise_phone(address)
    except ValueError as exc:
        raise ValidationFailed(str(exc), loc=loc) from exc


async def add(session: AsyncSession, ctx: Caller, data: SuppressionIn) -> Suppression:
    address = normalised(data.medium, data.address, ["body", "address"])
    row_id = await _insert(session, ctx.workspace_id, data.medium, address, data.reason, data.note)
    if row_id is None:
        existing = await find(session, ctx.workspace_id, data.medium, address)
        assert existing is not None
        raise Conflict("This address is already on the suppression list.", existing_id=str(existing.id))
    audit.record(
        session,
        ctx,
        entity_type="suppression",
        entity_id=row_id,
        action="created",
        changes={"medium": {"before": None, "after": data.medium}, "reason": {"before": None, "after": data.reason}},
    )
    return await scoped.get(session, ctx, Suppression, row_id, missing="No suppression with that id.")


async def record(
    session: AsyncSession, ctx: Caller, *, medium: str, address: str, reason: str, note: str | None = None
) -> None:
    """The address suppressed, unless it already is (callbacks: bounces and unsubscribes)."""
    row_id = await _insert(session, ctx.workspace_id, medium, address, reason, note)
    if row_id is not None:
        audit.record(
            session,
            ctx,
            entity_type="suppression",
            entity_id=row_id,
            action="created",
            changes={"medium": {"before": None, "after": medium}, "reason": {"before": None, "after": reason}},
        )


async def _insert(
    session: AsyncSession, workspace_id: uuid.UUID, medium: str, address: str, reason: str, note: str | None
) -> uuid.UUID | None:
    statement = (
        insert(Suppression)
        .values(
            workspace_id=workspace_id,
            id=new_id(),
            medium=medium,
            address=address,
            reason=reason,
            note=note,
            created_at=clock.now(),
        )
        .on_conflict_do_nothing()
        .returning(Suppression.id)
    )
    return await session.scalar(statement)


async def find(session: AsyncSession, workspace_id: uuid.UUID, medium: str, address: str) -> Suppression | None:
    return await session.scalar(
        select(Suppression).where(
            Suppression.workspace_id == workspace_id, Suppression.medium == medium, Suppression.address == address
        )
    )


async def find_many(
    session: AsyncSession, workspace_id: uuid.UUID, medium: str, addresses: set[str]
) -> dict[str, Suppression]:
    """The suppressions of these addresses, by address, in one statement."""
    if not addresses:
        return {}
    rows = await session.scalars(
        select(Suppression).where(
            Suppression.workspace_id == workspace_id,
            Suppression.medium == medium,
            Suppression.address == any_(bindparam(None, sorted(addresses), type_=ARRAY(Text()))),
        )
    )
    return {row.address: row for row in rows}


async def remove(session: AsyncSession, ctx: Caller, suppression_id: uuid.UUID) -> None:
    row = await scoped.get(session, ctx, Suppression, suppression_id, missing="No suppression with that id.", lock=True)
    await session.delete(row)
    audit.record(
        session,
        ctx,
        entity_type="suppression",
        entity_id=row.id,
        action="deleted",
        changes={"reason": {"before": row.reason, "after": None}},
    )


async def list_page(
    session: AsyncSession,
    ctx: Caller,
    *,
    medium: str | None,
    address: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Suppression], str | None]:
    statement = scoped.in_workspace(Suppression, ctx)
    if medium:
        statement = statement.where(Suppression.medium == medium)
    if address:
        if medium is None:
            raise ValidationFailed("Give `medium` with `address`.", loc=["query", "medium"])
        statement = statement.where(Suppression.address == normalised(medium, address, ["query", "address"]))
    rows, next_cursor = await keyset_page(
        session,
        statement,
        [SortKey(Suppression.id, descending=True)],
        list_name="suppressions",
        limit=limit,
        cursor=cursor,
    )
    return list(rows), next_cursor


def present(row: Suppression, ctx: Caller) -> dict[str, Any]:
    address = row.address
    if is_masked(ctx):
        address = mask_email(address) if row.medium == "email" else mask_phone(address)
    return {
        "id": row.id,
        "medium": row.medium,
        "address": address,
        "reason": row.reason,
        "note": row.note,
        "created_at": row.created_at,
    }


async def get(session: AsyncSession, ctx: Caller, suppression_id: uuid.UUID) -> Suppression:
    return await scoped.get(session, ctx, Suppression, suppression_id, missing="No suppression with that id.")
