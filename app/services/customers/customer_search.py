"""Customer lists: filters, keyset pagination, and search by name, company, code, phone or email (name,
code and company only for a caller who sees emails and phones masked)."""

import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    null,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller, Visibility
from app.core.errors import ValidationFailed
from app.core.masking import is_masked
from app.core.pagination import decode_cursor, encode_cursor, next_page
from app.core.prepared import PreparedStatement
from app.models import Customer, CustomerIdentity, CustomerValue
from app.schemas.customer import normalise_email, normalise_phone
from app.services.customers import custom_fields
from app.services.customers.customer_output import CUSTOMER_COLUMNS
from app.services.customers.visibility import (
    SCOPE_PARAMS,
    effective_visibility,
    scope_params,
    visible_customer_clauses,
    visible_customer_template,
)
from app.services.filters.catalogue import LEAD_SCORE, LEAD_SCORE_FIELD

SortKey = Literal[
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "name",
    "-name",
    "code",
    "-code",
    "lead_score",
    "-lead_score",
]
SORT_COLUMNS: dict[str, Any] = {
    "created_at": Customer.created_at,
    "updated_at": Customer.updated_at,
    "name": Customer.name,
    "code": Customer.code,
    # Not a column of the customer: selected beside the customer's columns for the page's cursor.
    LEAD_SCORE_FIELD: LEAD_SCORE,
}
_SORT_TYPES: dict[str, type] = {name: column.type.python_type for name, column in SORT_COLUMNS.items()}
# Below this many characters a query has no trigram to use: without a pair of Chinese characters for
# the bigram index, it matches name prefixes instead.
MIN_TRIGRAM_QUERY = 3
# Relevance-ordered results page by offset; past this, refine the query instead.
MAX_SEARCH_OFFSET = 10_000
_SEARCH = "customer-search"


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
    tier: str | None = None
    rfm_segment: str | None = None


async def list_customers(
    session: AsyncSession, ctx: Caller, query: CustomerQuery
) -> tuple[list[Mapping[str, Any]], str | None]:
    if query.q:
        stmt = select(*CUSTOMER_COLUMNS).where(
            *visible_customer_clauses(ctx, include_deleted=query.deleted == "only"),
            *_deleted_filter(query),
            *await _filters(session, ctx, query),
        )
        return await _search_page(session, ctx, stmt, query)
    return await _keyset_page(session, ctx, query)


def _searched_text(ctx: Caller) -> ColumnElement[str]:
    """What `q` matches: the stored search text, or for a caller who sees emails and phones masked,
    the same definition without them, so a search cannot spell out a masked value a digit at a time.
    (That one has no index: such callers search by a scan of the customers they may see.)"""
    if not is_masked(ctx):
        return Customer.search_text.expression
    nothing = cast(null(), ARRAY(Text))
    return func.guanxi_customer_search_text(
        Customer.name, Customer.code, nothing, nothing, Customer.company, type_=Text
    )


def _deleted_filter(query: CustomerQuery) -> list[ColumnElement[bool]]:
    return [Customer.deleted_at.is_not(None)] if query.deleted == "only" else []


@dataclass(frozen=True)
class _ListShape:
    """What a list statement's SQL depends on; the values are bound parameters."""

    visibility: Visibility
    deleted: str
    sort: str
    after: bool
    tags: bool
    owner: bool
    city: bool
    source: bool
    kind: bool
    created_after: bool
    created_before: bool
    custom_fields: int
    tier: bool
    rfm_segment: bool


_LIST_STATEMENTS: dict[_ListShape, PreparedStatement] = {}


def _list_statement(shape: _ListShape) -> PreparedStatement:
    """Compiled once per shape: lists are the second hottest read after get-by-id."""
    prepared = _LIST_STATEMENTS.get(shape)
    if prepared is not None:
        return prepared
    clauses = visible_customer_template(shape.visibility, include_deleted=shape.deleted == "only")
    if shape.deleted == "only":
        clauses.append(Customer.deleted_at.is_not(None))
    optional: list[tuple[bool, ColumnElement[bool]]] = [
        (shape.tags, Customer.tags.contains(bindparam("tags", type_=ARRAY(Text)))),
        (shape.owner, Customer.owner_id == bindparam("owner_id")),
        (shape.city, Customer.city == bindparam("city")),
        (shape.source, Customer.source == bindparam("source")),
        (shape.kind, Customer.kind == bindparam("kind")),
        (shape.created_after, Customer.created_at >= bindparam("created_after", type_=DateTime(timezone=True))),
        (shape.created_before, Customer.created_at < bindparam("created_before", type_=DateTime(timezone=True))),
    ]
    optional += [
        (shape.tier, Customer.id.in_(_values_where(CustomerValue.tier == bindparam("tier")))),
        (shape.rfm_segment, Customer.id.in_(_values_where(CustomerValue.rfm_segment == bindparam("rfm_segment")))),
    ]
    clauses += [clause for wanted, clause in optional if wanted]
    clauses += [
        Customer.custom_fields.contains(bindparam(f"custom_{i}", type_=JSONB)) for i in range(shape.custom_fields)
    ]
    descending = shape.sort.startswith("-")
    column = SORT_COLUMNS[shape.sort.lstrip("-")]
    if shape.after:
        key = tuple_(column, Customer.id)
        after = tuple_(bindparam("after_value", type_=column.type), bindparam("after_id", type_=Customer.id.type))
        clauses.append(key < after if descending else key > after)
    order = (column.desc(), Customer.id.desc()) if descending else (column.asc(), Customer.id.asc())
    selected = [*CUSTOMER_COLUMNS]
    if shape.sort.lstrip("-") == LEAD_SCORE_FIELD:
        selected.append(column.label(LEAD_SCORE_FIELD))
    statement = select(*selected).where(*clauses).order_by(*order).limit(bindparam("limit"))
    prepared = _LIST_STATEMENTS[shape] = PreparedStatement(statement)
    return prepared


def _values_where(condition: ColumnElement[bool]) -> Select[Any]:
    return select(CustomerValue.customer_id).where(
        CustomerValue.workspace_id == SCOPE_PARAMS["workspace_id"], condition
    )


async def _keyset_page(
    session: AsyncSession, ctx: Caller, query: CustomerQuery
) -> tuple[list[Mapping[str, Any]], str | None]:
    custom: dict[str, str] = {}
    if query.custom:
        defs = await custom_fields.definitions(session, ctx)
        for i, (key, raw) in enumerate(sorted(query.custom.items())):
            # Bound as JSON text: the compiled statement skips SQLAlchemy's bind processing.
            custom[f"custom_{i}"] = orjson.dumps({key: _custom_filter_value(defs, key, raw)}).decode()
    statement, params = _keyset_statement(ctx, query, custom)
    return _keyset_result(list(await statement.fetch(session, params)), query)


async def keyset_page_on(
    conn: asyncpg.Connection, ctx: Caller, query: CustomerQuery
) -> tuple[list[Mapping[str, Any]], str | None]:
    """`list_customers` on a bare connection for the read lane: the same statement and page, for a
    query without search and custom-field filters (they need the session)."""
    if query.q or query.custom:
        raise ValueError("search and custom-field filters are the route's")
    statement, params = _keyset_statement(ctx, query, {})
    return _keyset_result(list(await statement.fetch_on(conn, params)), query)


def _keyset_statement(
    ctx: Caller, query: CustomerQuery, custom: dict[str, str]
) -> tuple[PreparedStatement, dict[str, Any]]:
    params: dict[str, Any] = {
        **scope_params(ctx),
        "limit": query.limit + 1,
        "tags": query.tags,
        "owner_id": query.owner_id,
        "city": query.city,
        "source": query.source,
        "kind": query.kind,
        "created_after": query.created_after,
        "created_before": query.created_before,
        "tier": query.tier,
        "rfm_segment": query.rfm_segment,
        **custom,
    }
    if query.cursor:
        params["after_value"], params["after_id"] = decode_cursor(
            query.cursor, _list_name(query), [_SORT_TYPES[query.sort.lstrip("-")], uuid.UUID]
        )
    shape = _ListShape(
        visibility=effective_visibility(ctx),
        deleted=query.deleted,
        sort=query.sort,
        # The same test as for the parameters above: an empty cursor is the first page, as everywhere.
        after=bool(query.cursor),
        tags=bool(query.tags),
        owner=query.owner_id is not None,
        city=query.city is not None,
        source=query.source is not None,
        kind=query.kind is not None,
        created_after=query.created_after is not None,
        created_before=query.created_before is not None,
        custom_fields=len(custom),
        tier=query.tier is not None,
        rfm_segment=query.rfm_segment is not None,
    )
    return _list_statement(shape), params


def _list_name(query: CustomerQuery) -> str:
    # The sort is part of the list: a cursor holds the value of the column it sorts by.
    return f"customers:{query.sort}"


def _keyset_result(rows: list[Mapping[str, Any]], query: CustomerQuery) -> tuple[list[Mapping[str, Any]], str | None]:
    sort = query.sort.lstrip("-")
    return next_page(rows, query.limit, _list_name(query), lambda row: (row[sort], row["id"]))


@dataclass(frozen=True)
class _Terms:
    """What a query matches. `patterns`: substrings, any of which matches (the query as typed, or for
    a phone number its digits as the search text holds them); `exact_*`: the E.164 phone or normalised
    email the whole query is, whose holder comes first."""

    text: str
    patterns: tuple[str, ...]
    exact_phone: str | None
    exact_email: str | None
    # Holds two adjacent Chinese (non-ASCII, non-space) characters: the bigram index can serve it.
    bigrams: bool

    @property
    def phases(self) -> tuple[str, ...]:
        if self.bigrams and len(self.text) == 2:
            # Fuzzy matching has no trigram to use in two characters.
            return ("substring",)
        return ("prefix",) if len(self.text) < MIN_TRIGRAM_QUERY else ("substring", "fuzzy")


# A pair guanxi_bigrams() (migration 0024) takes from the search text: two adjacent characters that
# are neither ASCII nor space.
_BIGRAM = re.compile(r"[^\x00-\x7f\s]{2}")
# How people write phone numbers: digits, spaces, hyphens, dots, brackets and a leading +.
_PHONE_LIKE = re.compile(r"\+?[\d\s().-]+\Z")


def _terms(q: str) -> _Terms:
    text = q.strip().lower()
    patterns = [text]
    exact_phone = exact_email = None
    if _PHONE_LIKE.match(text):
        try:
            exact_phone = normalise_phone(text)
        except ValueError:
            # Part of a number: its digits, without a trunk 0 (021-6234 is part of +86 21 6234...).
            # The text as typed stays, for a code such as 2026-000123.
            patterns.append(re.sub(r"\D", "", text).removeprefix("0"))
        else:
            # The search text holds a phone as its E.164 digits.
            patterns = [exact_phone.removeprefix("+")]
    elif "@" in text:
        with contextlib.suppress(ValueError):
            exact_email = normalise_email(text)
    # Digits too few for a trigram would make the index read every entry of the workspace.
    usable = [p for p in patterns if p == text or len(p) >= MIN_TRIGRAM_QUERY]
    return _Terms(
        text=text,
        patterns=tuple(dict.fromkeys(usable)),
        exact_phone=exact_phone,
        exact_email=exact_email,
        bigrams=_BIGRAM.search(text) is not None,
    )


# Whether pg_trgm takes trigrams from Chinese text in this database: not under the C locale, where
# it sees no letters in it. Asked once per process; the locale is the database's, set when it is made.
CHINESE_TRIGRAMS_SQL = "SELECT cardinality(show_trgm('王小明')) > 0"
_chinese_trigrams: bool | None = None


async def _trigrams_read_chinese(session: AsyncSession) -> bool:
    global _chinese_trigrams
    if _chinese_trigrams is None:
        connection = await session.connection()
        _chinese_trigrams = bool((await connection.exec_driver_sql(CHINESE_TRIGRAMS_SQL)).scalar())
    return _chinese_trigrams


async def _search_page(
    session: AsyncSession, ctx: Caller, stmt: Select[Any], query: CustomerQuery
) -> tuple[list[Mapping[str, Any]], str | None]:
    """Substring matches (an exact phone's or email's holder first, then in id order), or when there
    are none, fuzzy matches (by word similarity); one character, or two without a pair of Chinese
    characters, match name prefixes in name order. The cursor names the phase and offset."""
    assert query.q is not None
    terms = _terms(query.q)
    phase, offset = _search_cursor(query.cursor, terms.phases)
    limit = query.limit
    search = _Search(ctx, terms, await _trigrams_read_chinese(session), deleted=query.deleted == "only")
    rows = await _rows(session, search.statement(stmt, phase, offset, limit))
    if phase == "substring" and not rows and not offset and "fuzzy" in terms.phases:
        # Fuzzy matching is the fallback for a query nothing contains, such as a typo: it is the
        # expensive half of search, and beside real matches it adds only noise.
        phase = "fuzzy"
        rows = await _rows(session, search.statement(stmt, phase, offset, limit))
    return rows[:limit], encode_cursor(_SEARCH, [phase, offset + limit]) if len(rows) > limit else None


def search_statement(ctx: Caller, q: str, *, limit: int, chinese_trigrams: bool) -> Select[Any]:
    """The statement that finds the first page for `q` alone (no other filter, fuzzy fallback aside),
    as the search runs it: for a bench to time the same SQL raw beside the route. `chinese_trigrams`:
    what CHINESE_TRIGRAMS_SQL answers in the database."""
    terms = _terms(q)
    stmt = select(*CUSTOMER_COLUMNS).where(*visible_customer_clauses(ctx, include_deleted=False))
    return _Search(ctx, terms, chinese_trigrams, deleted=False).statement(stmt, terms.phases[0], 0, limit)


@dataclass(frozen=True)
class _Search:
    """A query as the caller searches: which text it matches (masked or not), and which index serves it."""

    ctx: Caller
    terms: _Terms
    chinese_trigrams: bool
    # Among the soft-deleted customers, who hold no contact points in customer_identities.
    deleted: bool

    def statement(self, stmt: Select[Any], phase: str, offset: int, limit: int) -> Select[Any]:
        """`limit + 1` rows of a phase from `offset`: one more tells whether a next page exists."""
        terms, searched = self.terms, _searched_text(self.ctx)
        matches: ColumnElement[bool]
        order: list[Any]
        if phase == "prefix":
            name_key = func.lower(Customer.name).collate("C")
            matches, order = name_key.like(f"{_escape_like(terms.text)}%"), [name_key, Customer.id]
        elif phase == "substring":
            matches, order = self._substring(searched), [*_exact_first(self.ctx, terms), Customer.id]
        else:
            # `%>`: pg_trgm word similarity, through the trigram index.
            matches = searched.op("%>")(terms.text)
            order = [func.word_similarity(terms.text, searched).desc(), Customer.id]
        return stmt.where(matches).order_by(*order).offset(offset).limit(limit + 1)

    def _substring(self, searched: ColumnElement[str]) -> ColumnElement[bool]:
        terms, masked = self.terms, is_masked(self.ctx)
        if terms.exact_phone is not None and not masked and not self.deleted:
            # A whole number is its holder's, found by its key. Its digits as a substring would ask
            # the trigram index for a dozen digit trigrams, each in a large share of the customers.
            return Customer.id.in_(
                select(CustomerIdentity.customer_id).where(
                    CustomerIdentity.workspace_id == self.ctx.workspace_id,
                    CustomerIdentity.kind == "phone",
                    CustomerIdentity.value == terms.exact_phone,
                )
            )
        contains = or_(*(searched.like(f"%{_escape_like(p)}%") for p in terms.patterns))
        if not terms.bigrams or (len(terms.text) > 2 and self.chinese_trigrams):
            # Longer queries take trigrams where pg_trgm reads Chinese: the planner estimates a LIKE
            # from the text's statistics, but a set of pairs as if they were independent, which they
            # are not (星河, 河贸), and would read tens of thousands of rows expecting a few.
            return contains
        # Every pair of the query is a pair of the full search text wherever the query is found, in
        # the masked text too (a pair never spans two fields): the index narrows, LIKE decides. Two
        # characters are one pair, so for the full text the pair alone decides; the planner then
        # counts on the pair's own frequency, not on that and the LIKE's as if independent.
        pairs = Customer.search_bigrams.contains(func.guanxi_bigrams(terms.text, type_=ARRAY(Text)))
        return pairs if len(terms.text) == 2 and not masked else and_(pairs, contains)


def _exact_first(ctx: Caller, terms: _Terms) -> list[ColumnElement[bool]]:
    """The holder of the email the query spells in full, before the other matches (a whole phone
    number finds only its holder). Not for a caller who sees emails masked: the order would tell whose
    it is."""
    if is_masked(ctx) or terms.exact_email is None:
        return []
    return [Customer.emails.contains([terms.exact_email]).desc()]


def _search_cursor(cursor: str | None, phases: tuple[str, ...]) -> tuple[str, int]:
    if not cursor:
        return phases[0], 0
    phase, offset = decode_cursor(cursor, _SEARCH, [str, int])
    if phase not in phases or not isinstance(offset, int) or not 0 <= offset <= MAX_SEARCH_OFFSET:
        raise ValidationFailed("The cursor is not valid for this search.", loc=["query", "cursor"])
    return str(phase), offset


async def _rows(session: AsyncSession, stmt: Select[Any]) -> list[Mapping[str, Any]]:
    # A Core select of columns: run on the connection, past the ORM's result machinery.
    connection = await session.connection()
    return list((await connection.execute(stmt)).mappings().all())


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
    value_filters = [
        CustomerValue.tier == query.tier if query.tier else None,
        CustomerValue.rfm_segment == query.rfm_segment if query.rfm_segment else None,
    ]
    for condition in value_filters:
        if condition is not None:
            clauses.append(
                Customer.id.in_(
                    select(CustomerValue.customer_id).where(CustomerValue.workspace_id == ctx.workspace_id, condition)
                )
            )
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
