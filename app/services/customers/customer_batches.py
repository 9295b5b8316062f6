"""Batch create and update of up to 100 customers, with a result per item (app/core/batches)."""

from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.core.batches import Done, InvalidPart, apply_each
from app.schemas.customer import BatchUpdateItem, CustomerCreate, CustomerPatch
from app.services.customers import customers


async def create_many(session: AsyncSession, ctx: Caller, items: list[dict[str, Any]]) -> dict[str, Any]:
    async def create(data: CustomerCreate) -> Done:
        customer = await customers.create(session, ctx, data)
        return Done(201, customer.id, customer.version)

    return await apply_each(session, items, lambda _, raw: CustomerCreate.model_validate(raw), create)


def _update_item(_index: int, raw: Any) -> tuple[BatchUpdateItem, CustomerPatch]:
    item = BatchUpdateItem.model_validate(raw)
    try:
        return item, CustomerPatch.model_validate(item.patch)
    except ValidationError as exc:
        raise InvalidPart("patch", exc) from exc


async def update_many(session: AsyncSession, ctx: Caller, items: list[dict[str, Any]]) -> dict[str, Any]:
    async def update(item: tuple[BatchUpdateItem, CustomerPatch]) -> Done:
        target, patch = item
        customer = await customers.update(session, ctx, target.id, patch, expected_version=target.version)
        return Done(200, customer.id, customer.version)

    return await apply_each(session, items, _update_item, update)
