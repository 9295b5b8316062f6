"""Customer lists: filters, keyset pagination, and search by name, code, phone or email."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app.access import Caller
from app.errors import ValidationFailed
from app.models import Customer
from app.pagination import decode_cursor, encode_cursor
from app.services import custom_fields
from app.services.customer_output import CUSTOMER_COLUMNS
from app.services.visibility import visible_customer_clauses

SortKey = Literal["created_at", "-created_at", "updated_at", "-updated_at", "name", "-name", "code", "-code"]
SORT_COLUMNS: dict[str, Any] = {
    "created_at": Customer.created_at,
    "updated_at": Customer.updated_at,
    "name": Customer.name,
    "code": Customer.code,
}
# Below this many characters a query has no trigram to use: it matches name prefixes instead.
MIN_TRIGRAM_QUERY = 3


@dataclass
class CustomerQuery:
    limit: int = 20
    cursor: str | None = None
    sort: SortKey = "-created_at"
    q: str | None = None
    tags: list[str] = field(default_factory=list)
    owner_id: uuid.UUID | None = None
    city: str | None = None
    source: str | None = None
    kind: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    deleted: Literal["exclude", "only"] = "exclude"
    custom: dict[str, str] = field(default_factory=dict)


async def list_customers(session: AsyncSession, ctx: Caller, query: CustomerQuery) -> tuple[list[Row[Any]], str | None]:
    stmt = select(*CUSTOMER_COLUMNS).where(
        *visible_customer_clauses(ctx, include_deleted=query.deleted == "only"),
        *await _filters(session, ctx, query),
    )
    if query.q:
        return await _search_page(session, stmt, query)
    return await _keyset_page(session, stmt, query)


async def _keyset_page(
    session: AsyncSession, stmt: Select[Any], query: CustomerQuery
) -> tuple[list[Row[Any]], str | None]:
    descending = query.sort.startswith("-")
    name = query.sort.lstrip("-")
    column = SORT_COLUMNS[name]
    key = tuple_(column, Customer.id)
    if query.cursor:
        value, last_id = decode_cursor(query.cursor, expected_length=2)
        after = (_parse_sort_value(name, value), _parse_uuid(last_id))
        stmt = stmt.where(key < tuple_(*after) if descending else key > tuple_(*after))
    order = (column.desc(), Customer.id.desc()) if descending else (column.asc(), Customer.id.asc())
    rows = list((await session.execute(stmt.order_by(*order).limit(query.limit + 1))).all())
    next_cursor = None
    if len(rows) > query.limit:
        last = rows[query.limit - 1]
        sort_value = getattr(last, name)
        next_cursor = encode_cursor(
            [sort_value.isoformat() if isinstance(sort_value, datetime) else sort_value, str(last.id)]
        )
    return rows[: query.limit], next_cursor


async def _search_page(
    session: AsyncSession, stmt: Select[Any], query: CustomerQuery
) -> tuple[list[Row[Any]], str | None]:
    """Relevance order (substring hits first, then trigram word similarity), paged by offset."""
    assert query.q is not None
    text = query.q.strip().lower()
    offset = 0
    if query.cursor:
        (offset,) = decode_cursor(query.cursor, expected_length=1)
        if not isinstance(offset, int) or not 0 <= offset <= 10_000:
            raise ValidationFailed("The cursor is not valid for this list.", loc=["query", "cursor"])
    pattern = _escape_like(text)
    if len(text) >= MIN_TRIGRAM_QUERY:
        contains = Customer.search_text.like(f"%{pattern}%")
        # `%>` is word similarity (pg_trgm), served by the same trigram index: typos still match.
        similar = Customer.search_text.op("%>")(text)
        stmt = stmt.where(or_(contains, similar)).order_by(
            contains.desc(), func.word_similarity(text, Customer.search_text).desc(), Customer.id
        )
    else:
        stmt = stmt.where(func.lower(Customer.name).like(f"{pattern}%")).order_by(Customer.name, Customer.id)
    rows = list((await session.execute(stmt.offset(offset).limit(query.limit + 1))).all())
    next_cursor = encode_cursor([offset + query.limit]) if len(rows) > query.limit else None
    return rows[: query.limit], next_cursor


async def _filters(session: AsyncSession, ctx: Caller, query: CustomerQuery) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if query.tags:
        clauses.append(Customer.tags.contains(query.tags))
    if query.owner_id:
        clauses.append(Customer.owner_id == query.owner_id)
    if query.city:
        clauses.append(Customer.city == query.city)
    if query.source:
        clauses.append(Customer.source == query.source)
    if query.kind:
        clauses.append(Customer.kind == query.kind)
    if query.created_after:
        clauses.append(Customer.created_at >= query.created_after)
    if query.created_before:
        clauses.append(Customer.created_at < query.created_before)
    if query.custom:
        defs = await custom_fields.definitions(session, ctx)
        for key, raw in query.custom.items():
            clauses.append(Customer.custom_fields.contains({key: _custom_filter_value(defs, key, raw)}))
    return clauses


def _custom_filter_value(defs: custom_fields.Definitions, key: str, raw: str) -> Any:
    loc: list[str | int] = ["query", f"custom.{key}"]
    definition = defs.get(key)
    if definition is None:
        raise ValidationFailed(f"Unknown custom field '{key}'.", loc=loc, error_type="unknown_field")
    value: Any = raw
    try:
        if definition.type == "integer":
            value = int(raw)
        elif definition.type == "number":
            value = float(raw)
        elif definition.type == "boolean":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            value = raw == "true"
    except ValueError as exc:
        raise ValidationFailed(f"custom.{key}: not a valid {definition.type}", loc=loc) from exc
    if definition.type == "multiselect":
        return [custom_fields.coerce_value(definition, [value], loc)[0]]
    return custom_fields.coerce_value(definition, value, loc)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _parse_uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise ValidationFailed("The cursor is not valid for this list.", loc=["query", "cursor"]) from exc


def _parse_sort_value(name: str, value: Any) -> Any:
    bad = ValidationFailed("The cursor is not valid for this list.", loc=["query", "cursor"])
    if name in ("created_at", "updated_at"):
        if not isinstance(value, str):
            raise bad
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise bad from exc
    if not isinstance(value, str):
        raise bad
    return value
