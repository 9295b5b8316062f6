"""Compile a JSON filter — nested and/or/not groups of {field, op, value} — to one SQL condition.

Values are always bound parameters. A bad node is a 422 whose `loc` is the path to it."""

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, Date, Numeric, Text, and_, cast, extract, func, not_, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.models import Customer, CustomFieldDefinition, SegmentMember
from app.services.customers import custom_fields, relations
from app.services.filters.catalogue import (
    CUSTOM_PREFIX,
    FIELDS,
    OPERATORS,
    RELATION_FIELDS,
    SEGMENT_FIELD,
    Field,
    FieldType,
    RelationField,
    Source,
)

MAX_DEPTH = 6
MAX_CONDITIONS = 50
MAX_LIST = 500
MAX_DAYS = 36_500
_CUSTOM_TYPES: dict[str, FieldType] = {
    "text": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "date": "date",
    "select": "enum",
    "multiselect": "tags",
}


@dataclass
class Compiled:
    where: ColumnElement[bool]
    sources: set[Source] = field(default_factory=set)


async def compile_filter(
    session: AsyncSession, ctx: Caller, node: Any, *, loc: list[str | int] | None = None
) -> Compiled:
    definitions = await custom_fields.definitions(session, ctx)
    compiler = _Compiler(ctx, definitions, clock.now(), loc if loc is not None else ["body", "filter"])
    return Compiled(compiler.node(node, [], 0), compiler.sources)


class _Compiler:
    def __init__(
        self, ctx: Caller, definitions: dict[str, CustomFieldDefinition], now: datetime, loc: list[str | int]
    ) -> None:
        self.ctx = ctx
        self.definitions = definitions
        self.now = now
        self.loc = loc
        self.sources: set[Source] = set()
        self.conditions = 0

    def fail(self, path: list[str | int], message: str) -> ValidationFailed:
        return ValidationFailed(message, loc=[*self.loc, *path], error_type="invalid_filter")

    def node(self, node: Any, path: list[str | int], depth: int) -> ColumnElement[bool]:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"Filters nest at most {MAX_DEPTH} levels.")
        if not isinstance(node, dict):
            raise self.fail(path, "Expected an object: {and|or: [...]}, {not: ...} or {field, op, value}.")
        keys = set(node)
        if keys in ({"and"}, {"or"}):
            (name,) = keys
            children = node[name]
            if not isinstance(children, list) or not children:
                raise self.fail([*path, name], f"'{name}' takes a non-empty list.")
            parts = [self.node(child, [*path, name, i], depth + 1) for i, child in enumerate(children)]
            return and_(*parts) if name == "and" else or_(*parts)
        if keys == {"not"}:
            return not_(self.node(node["not"], [*path, "not"], depth + 1))
        if "field" in keys and keys <= {"field", "op", "value"}:
            self.conditions += 1
            if self.conditions > MAX_CONDITIONS:
                raise self.fail(path, f"A filter has at most {MAX_CONDITIONS} conditions.")
            return self.condition(node, path)
        raise self.fail(path, "Expected {and: [...]}, {or: [...]}, {not: ...} or {field, op, value}.")

    def condition(self, node: dict[str, Any], path: list[str | int]) -> ColumnElement[bool]:
        name, op = node.get("field"), node.get("op")
        if not isinstance(name, str):
            raise self.fail([*path, "field"], "field must be a string.")
        if not isinstance(op, str):
            raise self.fail([*path, "op"], "op must be a string.")
        value = node.get("value")
        if name == SEGMENT_FIELD:
            return self.segment(op, value, path)
        if name in RELATION_FIELDS:
            return self.relation(RELATION_FIELDS[name], op, value, path)
        spec = self.field(name, [*path, "field"])
        if op not in OPERATORS[spec.type]:
            raise self.fail([*path, "op"], f"{name} ({spec.type}) takes: {', '.join(OPERATORS[spec.type])}.")
        if spec.source != "customer":
            self.sources.add(spec.source)
        return self.expression(spec, op, value, [*path, "value"])

    def field(self, name: str, path: list[str | int]) -> Field:
        if name.startswith(CUSTOM_PREFIX):
            key = name[len(CUSTOM_PREFIX) :]
            definition = self.definitions.get(key)
            if definition is None:
                raise self.fail(path, f"Unknown custom field '{key}'.")
            type_ = _CUSTOM_TYPES[definition.type]
            raw = Customer.custom_fields[key]
            column: Any = {
                "string": raw.astext,
                "enum": raw.astext,
                "integer": raw.as_integer(),
                "number": raw.as_float(),
                "boolean": raw.as_boolean(),
                "date": cast(raw.astext, Date),
                "tags": raw,
            }[type_]
            options = tuple(definition.rules.get("options") or ())
            return Field(name, type_, definition.label, "custom", "customer", column, options)
        spec = FIELDS.get(name)
        if spec is None:
            raise self.fail(path, f"Unknown field '{name}'; see GET /api/v1/segments/fields.")
        return spec

    def segment(self, op: str, value: Any, path: list[str | int]) -> ColumnElement[bool]:
        if op not in ("in", "not_in"):
            raise self.fail([*path, "op"], "segment takes: in, not_in.")
        ids = [self.scalar("id", item, [*path, "value", i]) for i, item in enumerate(self.items(value, path))]
        members = select(SegmentMember.customer_id).where(
            SegmentMember.workspace_id == self.ctx.workspace_id, SegmentMember.segment_id.in_(ids)
        )
        inside = Customer.id.in_(members)
        return inside if op == "in" else not_(inside)

    def relation(self, spec: RelationField, op: str, value: Any, path: list[str | int]) -> ColumnElement[bool]:
        """EXISTS over the customer's live relations of the field's kind (see `RelationField`)."""
        if op not in OPERATORS["id"]:
            raise self.fail([*path, "op"], f"{spec.name} (id) takes: {', '.join(OPERATORS['id'])}.")
        if op in ("is_null", "is_not_null"):
            if value is not None:
                raise self.fail([*path, "value"], f"{op} takes no value.")
            related = relations.related(self.ctx, spec.kind, spec.direction, None)
            return related if op == "is_not_null" else not_(related)
        if op in ("eq", "neq"):
            ids = [self.scalar("id", value, [*path, "value"])]
        else:
            ids = [self.scalar("id", item, [*path, "value", i]) for i, item in enumerate(self.items(value, path))]
        related = relations.related(self.ctx, spec.kind, spec.direction, ids)
        return related if op in ("eq", "in") else not_(related)

    def items(self, value: Any, path: list[str | int]) -> list[Any]:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
            raise self.fail([*path, "value"], f"Expected a list of 1 to {MAX_LIST} values.")
        return value

    def scalar(self, type_: FieldType, value: Any, path: list[str | int], options: tuple[str, ...] = ()) -> Any:
        try:
            return _coerce(type_, value, options)
        except (ValueError, TypeError, InvalidOperation) as exc:
            raise self.fail(path, f"Not a valid {type_} value: {exc}") from exc

    def days(self, value: Any, path: list[str | int]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
            raise self.fail(path, f"Expected a whole number of days, 0 to {MAX_DAYS}.")
        return value

    def expression(self, spec: Field, op: str, value: Any, path: list[str | int]) -> ColumnElement[bool]:
        column: ColumnElement[Any] = spec.column
        if op in ("is_null", "is_not_null"):
            if value is not None:
                raise self.fail(path, f"{op} takes no value.")
            if spec.type == "tags":
                empty = func.cardinality(column) == 0 if spec.source == "customer" and spec.name == "tags" else None
                null = column.is_(None) if empty is None else or_(column.is_(None), empty)
                return null if op == "is_null" else not_(null)
            return column.is_(None) if op == "is_null" else column.is_not(None)
        if spec.type == "tags":
            return self.tags(spec, op, value, path)
        if op in ("in", "not_in"):
            items = [
                self.scalar(spec.type, item, [*path, i], spec.options)
                for i, item in enumerate(self.items(value, path[:-1]))
            ]
            inside = column.in_(items)
            return inside if op == "in" else not_(inside)
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(path, "between takes [low, high].")
            low, high = (self.scalar(spec.type, v, [*path, i]) for i, v in enumerate(value))
            return column.between(low, high)
        if op in ("in_last_days", "more_than_days_ago", "birthday_within_days", "in_current_month"):
            return self.relative(spec, op, value, path)
        operand = self.scalar(spec.type, value, path, spec.options)
        if op == "contains":
            return column.contains(operand, autoescape=True)
        if op == "starts_with":
            return column.startswith(operand, autoescape=True)
        comparisons: dict[str, ColumnElement[bool]] = {
            "eq": column == operand,
            "neq": column != operand,
            "gt": column > operand,
            "gte": column >= operand,
            "lt": column < operand,
            "lte": column <= operand,
        }
        return comparisons[op]

    def tags(self, spec: Field, op: str, value: Any, path: list[str | int]) -> ColumnElement[bool]:
        column: ColumnElement[Any] = spec.column
        is_json = spec.name.startswith(CUSTOM_PREFIX)
        if op == "contains":
            tag = self.scalar("string", value, path)
            return column.contains([tag]) if is_json else column.contains(cast([tag], ARRAY(Text)))
        items = [self.scalar("string", item, [*path, i]) for i, item in enumerate(self.items(value, path[:-1]))]
        if is_json:
            any_of = or_(*(column.contains([item]) for item in items))
        else:
            any_of = column.overlap(cast(items, ARRAY(Text)))
        return any_of if op == "in" else or_(not_(any_of), column.is_(None))

    def relative(self, spec: Field, op: str, value: Any, path: list[str | int]) -> ColumnElement[bool]:
        column: ColumnElement[Any] = spec.column
        today = self.now.date()
        if op == "in_current_month":
            if value is not None:
                raise self.fail(path, "in_current_month takes no value.")
            same_month = extract("month", column) == today.month
            # A birthday recurs every year; other dates are of this month of this year.
            return same_month if spec.name == "birthday" else and_(same_month, extract("year", column) == today.year)
        days = self.days(value, path)
        if op == "birthday_within_days":
            if days >= 365:
                return column.is_not(None)
            start, end = today.strftime("%m%d"), (today + timedelta(days=days)).strftime("%m%d")
            month_day = func.to_char(column, "MMDD")
            return month_day.between(start, end) if start <= end else or_(month_day >= start, month_day <= end)
        moment: Any = self.now - timedelta(days=days)
        if spec.type == "date":
            moment = moment.date()
        after: ColumnElement[bool] = column >= moment
        return after if op == "in_last_days" else not_(after)


def _coerce(type_: FieldType, value: Any, options: tuple[str, ...]) -> Any:
    if value is None:
        raise ValueError("a value is required")
    match type_:
        case "string" | "enum":
            if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
                raise ValueError("expected a string of at most 200 characters")
            if type_ == "enum" and options and value not in options:
                raise ValueError(f"one of {list(options)}")
            return value
        case "integer":
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**63 - 1:
                raise ValueError("expected a 64-bit integer")
            return value
        case "number":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("expected a number")
            number = Decimal(str(value))
            if not number.is_finite() or abs(number) > Decimal("1e15"):
                raise ValueError("out of range")
            return cast(number, Numeric)
        case "date":
            if not isinstance(value, str):
                raise ValueError("expected YYYY-MM-DD")
            return date.fromisoformat(value)
        case "datetime":
            if not isinstance(value, str):
                raise ValueError("expected an RFC 3339 time")
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("the time needs a UTC offset")
            return moment
        case "boolean":
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        case "id":
            return uuid.UUID(str(value))
    raise ValueError(f"unsupported type {type_}")
