"""Conversion of values to what JSONB columns hold: ids, dates and decimals as strings."""

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeEngine


def to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def timestamp_sql(expression: str) -> str:
    """SQL for a timestamptz in the JSON form `to_jsonable` gives a datetime: RFC 3339 in UTC."""
    return f"((to_jsonb(({expression}) AT TIME ZONE 'UTC') #>> '{{}}') || '+00:00')"


def jsonable_sql(expression: str, column_type: TypeEngine[Any]) -> str:
    """SQL for a column's value in the JSON form `to_jsonable` gives it (a jsonb value): times as
    `timestamp_sql`, the rest as PostgreSQL's own JSON of them (ids, dates and text as strings)."""
    if isinstance(column_type, DateTime):
        return f"to_jsonb({timestamp_sql(expression)})"
    return f"to_jsonb({expression})"
