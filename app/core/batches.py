"""The one loop of the batch endpoints: each item read, then applied in a savepoint of its own, so a
bad item fails alone and leaves nothing behind; a result per item, as a 207 body."""

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import DomainError
from app.core.problems import domain_problem, validation_problem

Item = TypeVar("Item")


@dataclass(frozen=True)
class Done:
    status: int
    id: uuid.UUID
    version: int


class InvalidPart(Exception):
    """A part of an item (a batch update's `patch`) failed validation: its errors are located
    within that part."""

    def __init__(self, part: str, error: ValidationError) -> None:
        super().__init__(str(error))
        self.part = part
        self.errors = error.errors()


async def apply_each(
    session: AsyncSession,
    items: Sequence[Any],
    read: Callable[[int, Any], Item],
    apply: Callable[[Item], Awaitable[Done]],
) -> dict[str, Any]:
    """`read(index, raw)` validates an item (pydantic's ValidationError, InvalidPart or a DomainError
    refuse it), `apply` writes it. The body: `results` in item order, `succeeded`, `failed`."""
    results: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            item = read(index, raw)
            async with session.begin_nested():
                done = await apply(item)
                await session.flush()
        except ValidationError as exc:
            results.append(_invalid(index, exc.errors(), ["items", index]))
        except InvalidPart as exc:
            results.append(_invalid(index, exc.errors, ["items", index, exc.part]))
        except DomainError as exc:
            results.append({"index": index, "status": exc.status, "problem": domain_problem(exc)})
        else:
            results.append({"index": index, "status": done.status, "id": str(done.id), "version": done.version})
    succeeded = sum(1 for result in results if result["status"] < 300)
    return {"results": results, "succeeded": succeeded, "failed": len(results) - succeeded}


def _invalid(index: int, errors: Sequence[Any], prefix: list[str | int]) -> dict[str, Any]:
    located = [{**error, "loc": [*prefix, *error["loc"]]} for error in errors]
    return {"index": index, "status": 422, "problem": validation_problem(located)}
