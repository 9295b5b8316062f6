"""The one pager of every list: keyset pages over a statement, with signed opaque cursors.

A cursor is base64url(JSON list of the last row's sort key values) "." base64url(HMAC-SHA256),
the MAC taken over the list's name and the values with a key derived from `GUANXI_JWT_SECRET`.
A cursor the service did not write for that very list (edited, forged, or another list's) fails
the MAC and is a 422; the values are then checked against the key's types all the same, so a
cursor from an older release is refused as precisely rather than reaching SQL."""

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from sqlalchemy import Select, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ValidationFailed
from app.core.settings import get_settings
from app.core.wire import utc_text

MAX_CURSOR_LENGTH = 512
_MAC_BYTES = 16

T = TypeVar("T")
CursorValue = datetime | uuid.UUID | int | str


@lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    # Its own key, not the JWT secret itself: a MAC made for one purpose can never pass for the other.
    return hmac.new(secret.encode(), b"guanxi list cursor", hashlib.sha256).digest()


def _mac(list_name: str, payload: bytes) -> bytes:
    key = _key(get_settings().jwt_secret)
    return hmac.digest(key, list_name.encode() + b"\x00" + payload, "sha256")[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _plain(value: CursorValue) -> str | int:
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def encode_cursor(list_name: str, values: Sequence[CursorValue]) -> str:
    payload = orjson.dumps([_plain(v) for v in values])
    return _b64(payload) + "." + _b64(_mac(list_name, payload))


def invalid_cursor(loc: str = "query") -> ValidationFailed:
    return ValidationFailed("The cursor is not valid for this list.", loc=[loc, "cursor"], error_type="cursor")


def decode_cursor(cursor: str, list_name: str, types: Sequence[type], *, loc: str = "query") -> tuple[Any, ...]:
    """The values `encode_cursor(list_name, ...)` wrote, as `types`; 422 for anything else."""
    if len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
        raise invalid_cursor(loc)
    payload_text, mac_text = cursor.split(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (binascii.Error, ValueError) as exc:
        raise invalid_cursor(loc) from exc
    if not hmac.compare_digest(mac, _mac(list_name, payload)):
        raise invalid_cursor(loc)
    try:
        values = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise invalid_cursor(loc) from exc
    if not isinstance(values, list) or len(values) != len(types):
        raise invalid_cursor(loc)
    return tuple(_typed(value, kind, loc) for value, kind in zip(values, types, strict=True))


def _typed(value: object, kind: type, loc: str) -> Any:
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if kind is str:
            return value
        try:
            if kind is uuid.UUID:
                return uuid.UUID(value)
            if kind is datetime:
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is not None:
                    return moment.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise invalid_cursor(loc) from exc
    raise invalid_cursor(loc)


def next_page(
    rows: list[T], limit: int, list_name: str, key_of: Callable[[T], Sequence[CursorValue]]
) -> tuple[list[T], str | None]:
    """The page of `limit + 1` fetched rows and the cursor past its last row, if more follow."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(list_name, key_of(rows[limit - 1]))


@dataclass(frozen=True)
class SortKey:
    """One column of a list's order; the last is the id, the tie-breaker that makes the order total."""

    column: Any
    descending: bool = False

    @property
    def python_type(self) -> type:
        kind: type = self.column.type.python_type
        return kind


async def keyset_page(
    session: AsyncSession,
    stmt: Select[*tuple[Any, ...]],
    keys: Sequence[SortKey],
    *,
    list_name: str,
    limit: int | None,
    cursor: str | None,
    cursor_loc: str = "query",
) -> tuple[list[Any], str | None]:
    """Run `stmt` ordered by `keys` from past `cursor`: the page and the next page's cursor.

    A statement of one ORM entity gives entities; any other gives rows. `limit=None` reads to the end."""
    if len({key.descending for key in keys}) != 1:
        raise ValueError("the keys of a list share one direction")
    descending = keys[0].descending
    columns = [key.column for key in keys]
    if cursor:
        after = decode_cursor(cursor, list_name, [key.python_type for key in keys], loc=cursor_loc)
        # One row comparison, which an index on the key columns answers as a range.
        stmt = stmt.where(tuple_(*columns) < tuple_(*after) if descending else tuple_(*columns) > tuple_(*after))
    stmt = stmt.order_by(*(column.desc() if descending else column for column in columns))
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    result = await session.execute(stmt)
    descriptions = stmt.column_descriptions
    entity = len(descriptions) == 1 and descriptions[0]["expr"] is descriptions[0]["entity"]
    rows: list[Any] = list(result.scalars()) if entity else list(result)

    def key_of(row: Any) -> list[CursorValue]:
        if isinstance(row, Row):
            return [row._mapping[column] for column in columns]
        return [getattr(row, column.key) for column in columns]

    if limit is None:
        return rows, None
    return next_page(rows, limit, list_name, key_of)
