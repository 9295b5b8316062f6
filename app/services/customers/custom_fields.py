"""Custom field definitions, and validation of customer values against them."""

import json
import math
import uuid
from datetime import date
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.core.versions import check_version
from app.models import CustomFieldDefinition
from app.schemas.custom_field import CustomFieldCreate, CustomFieldPatch, CustomFieldRules, check_rules
from app.services.customers.customer_output import customer_json_sql
from app.services.events import audit, outbox

Definitions = dict[str, CustomFieldDefinition]


async def list_all(session: AsyncSession, ctx: Caller) -> list[CustomFieldDefinition]:
    stmt = (
        select(CustomFieldDefinition)
        .where(CustomFieldDefinition.workspace_id == ctx.workspace_id)
        .order_by(CustomFieldDefinition.key)
    )
    return list((await session.scalars(stmt)).all())


async def definitions(session: AsyncSession, ctx: Caller) -> Definitions:
    return {d.key: d for d in await list_all(session, ctx)}


async def get(session: AsyncSession, ctx: Caller, field_id: uuid.UUID, *, lock: bool = False) -> CustomFieldDefinition:
    return await scoped.get(
        session, ctx, CustomFieldDefinition, field_id, missing="No custom field with that id.", lock=lock
    )


async def create(session: AsyncSession, ctx: Caller, data: CustomFieldCreate) -> CustomFieldDefinition:
    now = clock.now()
    definition = CustomFieldDefinition(
        workspace_id=ctx.workspace_id,
        key=data.key,
        label=data.label,
        type=data.type,
        required=data.required,
        rules=data.rules.model_dump(exclude_none=True),
        created_at=now,
        updated_at=now,
        version=1,
    )
    try:
        # Added inside the savepoint: a duplicate rolls the savepoint back and drops the object.
        async with session.begin_nested():
            session.add(definition)
            await session.flush()
    except IntegrityError as exc:
        existing = await session.scalar(
            select(CustomFieldDefinition.id).where(
                CustomFieldDefinition.workspace_id == ctx.workspace_id, CustomFieldDefinition.key == data.key
            )
        )
        raise Conflict(f"A custom field with key '{data.key}' exists.", existing_id=str(existing)) from exc
    audit.record(
        session,
        ctx,
        entity_type="custom_field",
        entity_id=definition.id,
        action="created",
        changes={"key": {"before": None, "after": data.key}, "type": {"before": None, "after": data.type}},
    )
    return definition


async def update(
    session: AsyncSession, ctx: Caller, field_id: uuid.UUID, patch: CustomFieldPatch, *, expected_version: int
) -> CustomFieldDefinition:
    definition = await get(session, ctx, field_id, lock=True)
    check_version(definition.version, expected_version, what="custom field")
    changes: dict[str, dict[str, Any]] = {}
    if patch.rules is not None:
        try:
            check_rules(definition.type, patch.rules)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValidationFailed(str(exc), loc=["body", "rules"]) from exc
        new_rules = patch.rules.model_dump(exclude_none=True)
        changes["rules"] = {"before": definition.rules, "after": new_rules}
        definition.rules = new_rules
    for name in ("label", "required"):
        value = getattr(patch, name)
        if name in patch.model_fields_set and value is not None and value != getattr(definition, name):
            changes[name] = {"before": getattr(definition, name), "after": value}
            setattr(definition, name, value)
    audit.record_update(session, ctx, definition, entity_type="custom_field", changes=changes)
    return definition


# A deleted definition's values leave every customer with what a PATCH removing them writes: the
# version, the audit entry and `customer.updated` (soft-deleted customers change without an event).
_CLEARED = """(
    SELECT c.id, c.custom_fields AS before FROM customers c
    WHERE c.workspace_id = :ws AND c.custom_fields ? CAST(:key AS text) FOR UPDATE
)"""
_AUDIT_ROWS = """(
    SELECT u.workspace_id, 'customer' AS entity_type, u.id AS entity_id, 'updated' AS action,
           CAST(:actor_type AS text) AS actor_type, CAST(:actor_id AS uuid) AS actor_id,
           jsonb_build_object('custom_fields', jsonb_build_object(
               'before', cl.before, 'after', u.custom_fields)) AS changes,
           CAST(:at AS timestamptz) AS occurred_at
    FROM updated u JOIN cleared cl ON cl.id = u.id
)"""
_EVENTS = f"""(
    SELECT guanxi_uuid7() AS id,
           {customer_json_sql("u")} || '{{"changed_fields": ["custom_fields"]}}'::jsonb AS data
    FROM updated u WHERE u.deleted_at IS NULL
)"""
_CLEAR_SQL = f"""
WITH cleared AS {_CLEARED},
updated AS (
    UPDATE customers c SET custom_fields = c.custom_fields - CAST(:key AS text), version = c.version + 1,
        updated_at = :at
    FROM cleared cl WHERE c.workspace_id = :ws AND c.id = cl.id
    RETURNING c.*
),
audited AS ({audit.record_rows_sql(_AUDIT_ROWS)}),
emitted AS ({
    outbox.emit_rows_sql(
        _EVENTS, workspace_id=":ws", event_type="'customer.updated'", at=":at", actor="CAST(:actor AS jsonb)"
    )
})
SELECT count(*) FROM updated
"""


async def delete(session: AsyncSession, ctx: Caller, field_id: uuid.UUID, *, expected_version: int) -> None:
    """Removes the definition and its values from every customer, set-based."""
    definition = await get(session, ctx, field_id, lock=True)
    check_version(definition.version, expected_version, what="custom field")
    await session.execute(
        text(_CLEAR_SQL),
        {
            "ws": ctx.workspace_id,
            "key": definition.key,
            "at": clock.now(),
            "actor_type": ctx.actor_type,
            "actor_id": ctx.actor_id,
            "actor": json.dumps(ctx.actor),
        },
    )
    await session.delete(definition)
    audit.record(
        session,
        ctx,
        entity_type="custom_field",
        entity_id=definition.id,
        action="deleted",
        changes={"key": {"before": definition.key, "after": None}},
    )


def validate_values(
    defs: Definitions, values: dict[str, Any], *, existing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check `values` against the definitions and return the stored object.

    With `existing` (a PATCH), values merge into it and a null removes a key."""
    merged = dict(existing or {})
    for key, raw in values.items():
        loc: list[str | int] = ["body", "custom_fields", key]
        definition = defs.get(key)
        if definition is None:
            raise ValidationFailed(f"Unknown custom field '{key}'.", loc=loc, error_type="unknown_field")
        if raw is None:
            merged.pop(key, None)
            continue
        merged[key] = coerce_value(definition, raw, loc)
    for key, definition in defs.items():
        if definition.required and key not in merged:
            raise ValidationFailed(
                f"Custom field '{key}' is required.", loc=["body", "custom_fields", key], error_type="missing"
            )
    return merged


def coerce_value(definition: CustomFieldDefinition, raw: Any, loc: list[str | int]) -> Any:
    rules = CustomFieldRules.model_validate(definition.rules)

    def fail(message: str) -> ValidationFailed:
        return ValidationFailed(f"{definition.key}: {message}", loc=loc)

    match definition.type:
        case "text":
            if not isinstance(raw, str):
                raise fail("must be a string")
            if len(raw) > (rules.max_length or 500):
                raise fail(f"must be at most {rules.max_length or 500} characters")
            return raw
        case "integer" | "number":
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise fail("must be a number")
            if definition.type == "integer" and not (isinstance(raw, int) or float(raw).is_integer()):
                raise fail("must be a whole number")
            if isinstance(raw, float) and not math.isfinite(raw):
                raise fail("must be finite")
            if abs(raw) > 2**53:
                raise fail("is out of range")
            if rules.min is not None and raw < rules.min:
                raise fail(f"must be at least {rules.min:g}")
            if rules.max is not None and raw > rules.max:
                raise fail(f"must be at most {rules.max:g}")
            return int(raw) if definition.type == "integer" else raw
        case "boolean":
            if not isinstance(raw, bool):
                raise fail("must be true or false")
            return raw
        case "date":
            if not isinstance(raw, str):
                raise fail("must be a date (YYYY-MM-DD)")
            try:
                return date.fromisoformat(raw).isoformat()
            except ValueError as exc:
                raise fail("must be a date (YYYY-MM-DD)") from exc
        case "select":
            if raw not in (rules.options or []):
                raise fail(f"must be one of {rules.options}")
            return raw
        case "multiselect":
            if not isinstance(raw, list) or any(item not in (rules.options or []) for item in raw):
                raise fail(f"must be a list of values from {rules.options}")
            return list(dict.fromkeys(raw))
    raise fail("has an unsupported type")
