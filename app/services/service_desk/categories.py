"""Ticket categories: a small tree of names the workspace files tickets under."""

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.core.ids import new_id
from app.core.versions import check_version
from app.models import Ticket, TicketCategory
from app.schemas.ticket import CategoryIn, CategoryPatch
from app.services.events import audit


async def _check_parent(session: AsyncSession, ctx: Caller, parent_id: uuid.UUID) -> None:
    found = await session.scalar(
        select(TicketCategory.id).where(TicketCategory.workspace_id == ctx.workspace_id, TicketCategory.id == parent_id)
    )
    if found is None:
        raise ValidationFailed("Unknown parent category.", loc=["body", "parent_id"])


async def add_category(session: AsyncSession, ctx: Caller, data: CategoryIn) -> TicketCategory:
    if data.parent_id is not None:
        await _check_parent(session, ctx, data.parent_id)
    now = clock.now()
    category = TicketCategory(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        parent_id=data.parent_id,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(category)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="ticket_category",
        entity_id=category.id,
        action="created",
        changes={"name": {"before": None, "after": data.name}},
    )
    return category


async def categories(session: AsyncSession, ctx: Caller) -> list[TicketCategory]:
    return await scoped.all_of(session, ctx, TicketCategory, order_by=TicketCategory.name)


async def get(session: AsyncSession, ctx: Caller, category_id: uuid.UUID, *, lock: bool = False) -> TicketCategory:
    return await scoped.get(session, ctx, TicketCategory, category_id, missing="No category with that id.", lock=lock)


async def update(
    session: AsyncSession, ctx: Caller, category_id: uuid.UUID, patch: CategoryPatch, *, expected_version: int
) -> TicketCategory:
    """Renames or moves a category; a move under itself or one of its descendants is a 422."""
    category = await get(session, ctx, category_id, lock=True)
    check_version(category.version, expected_version, what="category")
    changes: dict[str, dict[str, Any]] = {}
    if "name" in patch.model_fields_set:
        if patch.name is None:
            raise ValidationFailed("name cannot be null.", loc=["body", "name"])
        if patch.name != category.name:
            changes["name"] = {"before": category.name, "after": patch.name}
            category.name = patch.name
    if "parent_id" in patch.model_fields_set and patch.parent_id != category.parent_id:
        if patch.parent_id is not None:
            await _check_parent(session, ctx, patch.parent_id)
            if patch.parent_id in await _subtree(session, ctx, category.id):
                raise ValidationFailed(
                    "A category cannot move under itself or its own subcategory.", loc=["body", "parent_id"]
                )
        changes["parent_id"] = {
            "before": str(category.parent_id) if category.parent_id else None,
            "after": str(patch.parent_id) if patch.parent_id else None,
        }
        category.parent_id = patch.parent_id
    audit.record_update(session, ctx, category, entity_type="ticket_category", changes=changes)
    return category


async def _subtree(session: AsyncSession, ctx: Caller, root: uuid.UUID) -> set[uuid.UUID]:
    tree = (
        select(TicketCategory.id)
        .where(TicketCategory.workspace_id == ctx.workspace_id, TicketCategory.id == root)
        .cte("tree", recursive=True)
    )
    tree = tree.union_all(
        select(TicketCategory.id).where(
            TicketCategory.workspace_id == ctx.workspace_id, TicketCategory.parent_id == tree.c.id
        )
    )
    return set((await session.scalars(select(tree.c.id))).all())


async def delete(session: AsyncSession, ctx: Caller, category_id: uuid.UUID, *, expected_version: int) -> None:
    """Only an unused leaf goes: tickets filed under a category keep it (the service report counts by
    it), so a category in use, or with subcategories, is a 409 naming how many."""
    category = await get(session, ctx, category_id, lock=True)
    check_version(category.version, expected_version, what="category")
    used = await session.scalar(
        select(func.count()).where(Ticket.workspace_id == ctx.workspace_id, Ticket.category_id == category.id)
    )
    if used:
        raise Conflict(f"{used} tickets are filed under this category; move them first.", tickets=int(used))
    children = await session.scalar(
        select(func.count()).where(
            TicketCategory.workspace_id == ctx.workspace_id, TicketCategory.parent_id == category.id
        )
    )
    if children:
        raise Conflict(
            f"The category has {children} subcategories; move or delete them first.", subcategories=int(children)
        )
    audit.record(
        session,
        ctx,
        entity_type="ticket_category",
        entity_id=category.id,
        action="deleted",
        changes={"name": {"before": category.name, "after": None}},
    )
    await session.delete(category)
    await session.flush()


def present(category: TicketCategory) -> dict[str, Any]:
    return {"id": category.id, "name": category.name, "parent_id": category.parent_id, "version": category.version}
