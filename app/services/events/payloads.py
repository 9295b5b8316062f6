"""One serialiser per event payload: each key's value in Python and in SQL, defined side by side.

A path that emits an event for one row builds its `data` with `Payload.data` (for `outbox.emit`); a
set-based path writes the same `data` for many rows with `Payload.sql` inside its statement (for
`outbox.emit_rows_sql`). Both read one list of fields, checked against the event's catalogue model
when the module defining it is imported, so no path can send a key the catalogue does not declare or
leave out one it does."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from app.core.jsonable import to_jsonable
from app.core.wire import money_text, money_text_sql, utc_text_sql

Row = TypeVar("Row")


@dataclass(frozen=True)
class Field(Generic[Row]):
    """One key: `python` reads its value from the row (JSON-ready after `to_jsonable`); `sql` writes
    the same value over a row alias. A field without either is `given` by its caller on each use."""

    key: str
    python: Callable[[Row], Any] | None
    sql: Callable[[str], str] | None


def column(key: str) -> Field[Any]:
    """A column written as it is (text, numbers, uuids, dates, booleans, arrays, JSON)."""
    return Field(key, lambda row: getattr(row, key), lambda alias: f"{alias}.{key}")


def timestamp(key: str) -> Field[Any]:
    """A timestamptz column, as the one time serialiser writes it (`app.core.wire`)."""
    return Field(key, lambda row: getattr(row, key), lambda alias: utc_text_sql(f"{alias}.{key}"))


def money(key: str, *, places: str) -> Field[Any]:
    """An amount, in its currency's decimals as the one money serialiser writes it (`app.core.wire`):
    in Python the row's `currency` says which; in SQL `places` (SQL for the decimals, a parameter
    the statement sets from `currency_places`)."""

    def python(row: Any) -> str | None:
        value = getattr(row, key)
        return None if value is None else money_text(value, row.currency)

    return Field(key, python, lambda alias: money_text_sql(f"{alias}.{key}", places))


def given(key: str, *, sql: Callable[[str], str] | None = None) -> Field[Any]:
    """A value the emitting path supplies: to `data` always, to `sql` unless a default is set here."""
    return Field(key, None, sql)


def nested(key: str, payload: "Payload[Row]") -> Field[Row]:
    """An object built from the same row."""
    return Field(key, payload.data, payload.sql)


class Payload(Generic[Row]):
    """The `data` of one event type (or one object inside it)."""

    def __init__(self, fields: Sequence[Field[Row]], *, model: type[BaseModel] | None = None) -> None:
        self.fields = tuple(fields)
        keys = [field.key for field in self.fields]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a key is defined twice: {keys}")
        if model is not None and set(keys) != set(model.model_fields):
            raise ValueError(
                f"{model.__name__} declares {sorted(set(model.model_fields) - set(keys))} that the payload lacks "
                f"and lacks {sorted(set(keys) - set(model.model_fields))} that it sends"
            )

    def extended(self, *fields: Field[Row], model: type[BaseModel] | None = None) -> "Payload[Row]":
        return Payload((*self.fields, *fields), model=model)

    def data(self, row: Row, **given: Any) -> dict[str, Any]:
        """The payload of one row, JSON-ready; `given` holds the values of the `given` fields."""
        self._check_given(given, lambda field: field.python is None)
        return {
            field.key: to_jsonable(given[field.key] if field.python is None else field.python(row))
            for field in self.fields
        }

    def sql(self, alias: str, **given: str) -> str:
        """SQL for the payloads of the rows named `alias`; `given` holds SQL for the `given` fields
        without a default (or overriding it)."""
        self._check_given(given, lambda field: field.sql is None, optional=lambda field: field.python is None)
        parts = []
        for field in self.fields:
            expression = given.get(field.key) or (field.sql(alias) if field.sql else None)
            assert expression is not None
            parts.append(f"'{field.key}', {expression}")
        return f"jsonb_build_object({', '.join(parts)})"

    def _check_given(
        self,
        given: Mapping[str, Any],
        needed: Callable[[Field[Row]], bool],
        optional: Callable[[Field[Row]], bool] | None = None,
    ) -> None:
        required = {field.key for field in self.fields if needed(field)}
        allowed = required | {field.key for field in self.fields if optional and optional(field)}
        if not required <= set(given) <= allowed:
            raise TypeError(f"the payload needs exactly {sorted(required)} given, got {sorted(given)}")
