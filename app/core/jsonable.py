"""Conversion of values to what JSONB columns hold (event payloads, audit changes, stored
responses): ids and decimals as strings, times through the one time serialiser."""

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeEngine

from app.core.wire import utc_text, utc_text_sql


def to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def jsonable_sql(expression: str, column_type: TypeEngine[Any]) -> str:
    """SQL for a column's value in the JSON form `to_jsonable` gives it (a jsonb value): times as
    `app.core.wire.utc_text_sql`, the rest as PostgreSQL's own JSON of them (ids, dates and text as strings)."""
    if isinstance(column_type, DateTime):
        return f"to_jsonb({utc_text_sql(expression)})"
    return f"to_jsonb({expression})"
