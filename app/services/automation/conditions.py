"""Conditions on an event's `data`: the filter language's shape (`{field, op, value}` under
`and`/`or`/`not`), with `field` a dotted path into the data. Checked at save against the event
type's data model (unknown fields are a 422 naming where), evaluated in Python on each event: no
code, no SQL, bounded in size like the filter language."""

import types
import typing
from typing import Any

from pydantic import BaseModel

from app.core.errors import ValidationFailed

OPERATORS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "is_null", "is_not_null")
MAX_DEPTH = 6
MAX_CONDITIONS = 50
MAX_LIST = 500


def _fail(loc: list[str | int], message: str) -> ValidationFailed:
    return ValidationFailed(message, loc=loc, error_type="invalid_condition")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, through `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_model_of(arg) for arg in typing.get_args(annotation)]
        models = [model for model in found if model is not None]
        return models[0] if len(models) == 1 else None
    return None


def _check_path(model: type[BaseModel], path: str, loc: list[str | int]) -> None:
    if not path or len(path) > 200:
        raise _fail(loc, "field must be a dotted path into the event's data.")
    current: type[BaseModel] | None = model
    for part in path.split("."):
        if current is None:
            return  # inside a free-form object: any key
        field = current.model_fields.get(part)
        if field is None:
            raise _fail(loc, f"The event's data has no field '{part}' (in '{path}').")
        current = _model_of(field.annotation)


def check(node: Any, model: type[BaseModel], loc: list[str | int]) -> None:
    """A condition tree that can be evaluated on this data model, or a 422 whose `loc` is the node."""
    count = 0

    def visit(item: Any, at: list[str | int], depth: int) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            raise _fail(at, f"Conditions nest at most {MAX_DEPTH} levels.")
        if not isinstance(item, dict):
            raise _fail(at, "Expected {and|or: [...]}, {not: ...} or {field, op, value}.")
        keys = set(item)
        if keys in ({"and"}, {"or"}):
            (name,) = keys
            children = item[name]
            if not isinstance(children, list) or not children:
                raise _fail([*at, name], f"'{name}' takes a non-empty list.")
            for i, child in enumerate(children):
                visit(child, [*at, name, i], depth + 1)
            return
        if keys == {"not"}:
            visit(item["not"], [*at, "not"], depth + 1)
            return
        if "field" not in keys or not keys <= {"field", "op", "value"}:
            raise _fail(at, "Expected {and|or: [...]}, {not: ...} or {field, op, value}.")
        count += 1
        if count > MAX_CONDITIONS:
            raise _fail(at, f"At most {MAX_CONDITIONS} conditions.")
        if not isinstance(item["field"], str):
            raise _fail([*at, "field"], "field must be a string.")
        _check_path(model, item["field"], [*at, "field"])
        op, value = item.get("op"), item.get("value")
        if op not in OPERATORS:
            raise _fail([*at, "op"], f"op is one of: {', '.join(OPERATORS)}.")
        if op in ("is_null", "is_not_null"):
            if value is not None:
                raise _fail([*at, "value"], f"{op} takes no value.")
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
                raise _fail([*at, "value"], f"Expected a list of 1 to {MAX_LIST} values.")
        elif op in ("gt", "gte", "lt", "lte"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise _fail([*at, "value"], "Expected a number, or a string (dates and times compare as text).")
        elif value is None or isinstance(value, dict | list):
            raise _fail([*at, "value"], "Expected a string, number or boolean.")

    visit(node, loc, 0)


def _read(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _compare(found: Any, op: str, value: Any) -> bool:
    try:
        if op == "gt":
            return bool(found > value)
        if op == "gte":
            return bool(found >= value)
        if op == "lt":
            return bool(found < value)
        return bool(found <= value)
    except TypeError:
        return False


def holds(node: dict[str, Any], data: dict[str, Any]) -> bool:
    """Whether the (checked) conditions hold for this event data."""
    if "and" in node:
        return all(holds(child, data) for child in node["and"])
    if "or" in node:
        return any(holds(child, data) for child in node["or"])
    if "not" in node:
        return not holds(node["not"], data)
    found, op, value = _read(data, node["field"]), node["op"], node.get("value")
    match op:
        case "is_null":
            return found is None
        case "is_not_null":
            return found is not None
        case "eq":
            return bool(found == value)
        case "neq":
            return bool(found != value)
        case "in":
            return found in (value or [])
        case "not_in":
            return found not in (value or [])
        case "contains":
            if isinstance(found, list):
                return value in found
            return isinstance(found, str) and isinstance(value, str) and value in found
    return found is not None and _compare(found, op, value)
