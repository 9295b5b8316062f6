"""Batch create and update of up to 100 customers, with a result per item.

Each item runs in its own savepoint: a bad item fails alone and leaves nothing behind."""

from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.core.errors import DomainError
from app.core.problems import domain_problem, validation_problem
from app.schemas.customer import BatchResult, BatchUpdateItem, CustomerCreate, CustomerPatch
from app.services.customers import customers


def _invalid(index: int, exc: ValidationError, prefix: list[str | int]) -> BatchResult:
    errors = [{**e, "loc": [*prefix, *e["loc"]]} for e in exc.errors()]
    return BatchResult(index=index, status=422, problem=validation_problem(errors))


async def create_many(session: AsyncSession, ctx: Caller, items: list[dict[str, Any]]) -> list[BatchResult]:
    results = []
    for index, raw in enumerate(items):
        try:
            data = CustomerCreate.model_validate(raw)
        except ValidationError as exc:
            results.append(_invalid(index, exc, ["items", index]))
            continue
        try:
            async with session.begin_nested():
                customer = await customers.create(session, ctx, data)
                await session.flush()
        except DomainError as exc:
            results.append(BatchResult(index=index, status=exc.status, problem=domain_problem(exc)))
            continue
        results.append(BatchResult(index=index, status=201, id=customer.id, version=customer.version))
    return results


async def update_many(session: AsyncSession, ctx: Caller, items: list[dict[str, Any]]) -> list[BatchResult]:
    results = []
    for index, raw in enumerate(items):
        try:
            item = BatchUpdateItem.model_validate(raw)
        except ValidationError as exc:
            results.append(_invalid(index, exc, ["items", index]))
            continue
        try:
            patch = CustomerPatch.model_validate(item.patch)
        except ValidationError as exc:
            results.append(_invalid(index, exc, ["items", index, "patch"]))
            continue
        try:
            async with session.begin_nested():
                customer = await customers.update(session, ctx, item.id, patch, expected_version=item.version)
                await session.flush()
        except DomainError as exc:
            results.append(BatchResult(index=index, status=exc.status, problem=domain_problem(exc)))
            continue
        results.append(BatchResult(index=index, status=200, id=customer.id, version=customer.version))
    return results
