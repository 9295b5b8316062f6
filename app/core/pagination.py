"""Opaque cursors for keyset pagination: base64url of a small JSON list, checked on the way in."""

import base64
import binascii
from typing import Any

import orjson

from app.core.errors import ValidationFailed

MAX_CURSOR_LENGTH = 512


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, *, expected_length: int) -> list[Any]:
    def bad() -> ValidationFailed:
        return ValidationFailed("The cursor is not valid for this list.", loc=["query", "cursor"])

    if len(cursor) > MAX_CURSOR_LENGTH:
        raise bad()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise bad() from exc
    if not isinstance(values, list) or len(values) != expected_length:
        raise bad()
    return values
