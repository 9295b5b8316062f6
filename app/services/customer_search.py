"""Customer lists: filters, keyset pagination, and search by name, code, phone or email."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, select, tuple_
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
# Relevance-ordered results page by offset; past this, refine the query instead.
MAX_SEARCH_OFFSET = 10_000


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
    rows = await _rows(session, stmt.order_by(*order).limit(query.limit + 1))
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
    """Substring matches first (in id order), then fuzzy-only matches (by word similarity); one or
    two characters match name prefixes in name order. The cursor names the phase and its offset."""
    assert query.q is not None
    text = query.q.strip().lower()
    phase, offset = _search_cursor(query.cursor, short=len(text) < MIN_TRIGRAM_QUERY)
    limit = query.limit
    pattern = _escape_like(text)
    if phase == "prefix":
        name_key = func.lower(Customer.name).collate("C")
        rows = await _rows(
            session,
            stmt.where(name_key.like(f"{pattern}%")).order_by(name_key, Customer.id).offset(offset).limit(limit + 1),
        )
        return rows[:limit], encode_cursor(["prefix", offset + limit]) if len(rows) > limit else None
    contains = Customer.search_text.like(f"%{pattern}%")
    rows = []
    if phase == "substring":
        rows = await _rows(session, stmt.where(contains).order_by(Customer.id).offset(offset).limit(limit + 1))
        if len(rows) > limit:
            return rows[:limit], encode_cursor(["substring", offset + limit])
        phase, offset = "fuzzy", 0
    # `%>` is word similarity (pg_trgm) through the same trigram index: typos still match.
    wanted = limit - len(rows)
    fuzzy = await _rows(
        session,
        stmt.where(Customer.search_text.op("%>")(text), ~contains)
        .order_by(func.word_similarity(text, Customer.search_text).desc(), Customer.id)
        .offset(offset)
        .limit(wanted + 1),
    )
    next_cursor = encode_cursor(["fuzzy", offset + wanted]) if len(fuzzy) > wanted else None
    return rows + fuzzy[:wanted], next_cursor


def _search_cursor(cursor: str | None, *, short: bool) -> tuple[str, int]:
    if cursor is None:
        return ("prefix" if short else "substring"), 0
    phase, offset = decode_cursor(cursor, expected_length=2)
    allowed = {"prefix"} if short else {"substring", "fuzzy"}
    if phase not in allowed or not isinstance(offset, int) or not 0 <= offset <= MAX_SEARCH_OFFSET:
        raise ValidationFailed("The cursor is not valid for this search.", loc=["query", "cursor"])
    return str(phase), offset


async def _rows(session: AsyncSession, stmt: Select[Any]) -> list[Row[Any]]:
    # A Core select of columns: run on the connection, past the ORM's result machinery.
    connection = await session.connection()
    return list((await connection.execute(stmt)).all())


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
