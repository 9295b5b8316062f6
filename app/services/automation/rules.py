"""Automation rules: saved (checked as a whole, with 422s naming the field), read, changed,
soft-deleted, previewed and run on demand."""

import calendar as calendar_module
import itertools
import uuid
from datetime import datetime
from typing import Any

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.models import AutomationRule, CustomFieldDefinition, Segment, User, WebhookEndpoint
from app.schemas.automation import RuleIn, RulePatch
from app.services.automation import conditions, runs, triggers
from app.services.engagement import lunar_dates
from app.services.events import audit
from app.services.events.event_catalogue import TYPES, data_model
from app.services.filters.compiler import compile_filter
from app.services.identity import workspaces
from app.services.outreach import channels, message_templates, messages
from app.services.segments import lifecycle

MIN_CRON_MINUTES = 5
Loc = list[str | int]


def _fail(loc: Loc, message: str, error_type: str = "value_error") -> ValidationFailed:
    return ValidationFailed(message, loc=["body", *loc], error_type=error_type)


def _check_cron(cron: str) -> None:
    loc: Loc = ["trigger", "cron"]
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise _fail(loc, "Expected a five-field cron expression (minute hour day month weekday).", "invalid_cron")
    minutes = croniter(cron).expanded[0]
    found = sorted(range(60) if minutes == ["*"] else {int(m) for m in minutes})
    gaps = [b - a for a, b in itertools.pairwise(found)] + [60 - found[-1] + found[0]]
    if min(gaps) < MIN_CRON_MINUTES:
        raise _fail(loc, f"A schedule fires at most once every {MIN_CRON_MINUTES} minutes.", "invalid_cron")


async def _check_trigger(session: AsyncSession, ctx: Caller, trigger: dict[str, Any]) -> None:
    kind = trigger["kind"]
    if trigger.get("audience") is not None:
        await compile_filter(session, ctx, trigger["audience"], loc=["body", "trigger", "audience"])
    if kind == "event":
        event_type = trigger["event_type"]
        if event_type not in TYPES:
            raise _fail(["trigger", "event_type"], f"Unknown event type '{event_type}'; see GET /api/v1/events/types.")
        if event_type.startswith("automation."):
            raise _fail(["trigger", "event_type"], "Automation's own events do not trigger rules.")
        model = data_model(event_type)
        if not triggers.has_customer(event_type, set(model.model_fields)):
            raise _fail(["trigger", "event_type"], f"'{event_type}' is about no customer; rules act for customers.")
        if trigger.get("conditions") is not None:
            conditions.check(trigger["conditions"], model, ["body", "trigger", "conditions"])
    elif kind == "schedule":
        _check_cron(trigger["cron"])
    else:
        await _check_date(session, ctx, trigger)


async def _check_date(session: AsyncSession, ctx: Caller, trigger: dict[str, Any]) -> None:
    month, day = trigger.get("month"), trigger.get("day")
    if trigger["date"] == "fixed":
        if month is None or day is None:
            raise _fail(["trigger", "month" if month is None else "day"], "A fixed date needs month and day.")
        if trigger["calendar"] == "lunar" and day > lunar_dates.LAST_LUNAR_DAY:
            raise _fail(["trigger", "day"], "A lunar month has at most 30 days.")
        if trigger["calendar"] == "gregorian" and day > calendar_module.monthrange(2000, month)[1]:
            raise _fail(["trigger", "day"], f"Month {month} has no day {day}.")
    if trigger["date"] == "custom_field":
        definition = await session.scalar(
            select(CustomFieldDefinition).where(
                CustomFieldDefinition.workspace_id == ctx.workspace_id,
                CustomFieldDefinition.key == trigger.get("field_key"),
            )
        )
        if definition is None or definition.type != "date":
            raise _fail(["trigger", "field_key"], "field_key must name a date custom field.")


async def _check_actions(
    session: AsyncSession, ctx: Caller, trigger: dict[str, Any], actions: list[dict[str, Any]]
) -> None:
    stages: set[str] | None = None
    for i, action in enumerate(actions):
        loc: Loc = ["actions", i]
        kind = action["type"]
        if trigger["kind"] == "event" and trigger["event_type"] in runs.EMITS[kind]:
            raise _fail(
                [*loc, "type"],
                f"Action {i} ({kind}) emits {trigger['event_type']}, which this rule's trigger listens to: "
                "the rule would trigger itself.",
                "self_triggering",
            )
        if kind == "create_task" and action.get("assignee_id"):
            found = await session.scalar(
                select(User.id).where(
                    User.workspace_id == ctx.workspace_id,
                    User.id == uuid.UUID(str(action["assignee_id"])),
                    User.is_active.is_(True),
                )
            )
            if found is None:
                raise _fail([*loc, "assignee_id"], "assignee_id is not an active user of this workspace.")
        elif kind == "add_to_segment":
            segment = await session.scalar(
                select(Segment.kind).where(
                    Segment.workspace_id == ctx.workspace_id, Segment.id == uuid.UUID(str(action["segment_id"]))
                )
            )
            if segment != "static":
                raise _fail([*loc, "segment_id"], "segment_id must name a static segment of this workspace.")
        elif kind == "set_lifecycle_stage":
            if stages is None:
                stages = {stage.key for stage in await lifecycle.stages(session, ctx)}
            if action["stage"] not in stages:
                raise _fail([*loc, "stage"], f"Unknown lifecycle stage '{action['stage']}'.")
        elif kind == "send_message":
            await _check_message(session, ctx, action, loc)
        elif kind == "call_webhook":
            endpoint = await session.scalar(
                select(WebhookEndpoint.id).where(
                    WebhookEndpoint.workspace_id == ctx.workspace_id,
                    WebhookEndpoint.id == uuid.UUID(str(action["endpoint_id"])),
                )
            )
            if endpoint is None:
                raise _fail([*loc, "endpoint_id"], "endpoint_id must name a webhook endpoint of this workspace.")


async def _check_message(session: AsyncSession, ctx: Caller, action: dict[str, Any], loc: Loc) -> None:
    """A channel and a template of its kind, with exactly the template's variables: what the
    message writer would refuse for every customer, refused at save."""
    try:
        channel = await channels.get(session, ctx, uuid.UUID(str(action["channel_id"])))
    except NotFound as exc:
        raise _fail([*loc, "channel_id"], "channel_id must name a channel of this workspace.") from exc
    try:
        template = await message_templates.get(session, ctx, uuid.UUID(str(action["template_id"])))
    except NotFound as exc:
        raise _fail([*loc, "template_id"], "template_id must name a message template of this workspace.") from exc
    sends = messages.TEMPLATE_CHANNEL[channel.kind]
    if template.channel != sends:
        raise _fail([*loc, "template_id"], f"This is a `{template.channel}` template; the channel sends `{sends}`.")
    supplied = action.get("variables") or {}
    for name in supplied:
        if name not in template.variables:
            raise _fail(
                [*loc, "variables", name], f"{name} is not one of the template's variables.", "unknown_variable"
            )
    for name in template.variables:
        if name not in supplied:
            raise _fail([*loc, "variables", name], f"The template needs the variable {name}.", "variable_required")


async def arm(session: AsyncSession, rule: AutomationRule, now: datetime) -> None:
    """The columns the worker finds the rule by, from its trigger."""
    trigger = rule.trigger
    rule.trigger_kind = trigger["kind"]
    rule.event_type = trigger.get("event_type")
    rule.listening_since_txid = (
        await triggers.start_listening(session, rule.workspace_id)
        if rule.active and rule.trigger_kind == "event"
        else None
    )
    rule.next_run_at = None
    if rule.active and rule.trigger_kind == "schedule":
        timezone = await workspaces.timezone(session, rule.workspace_id)
        rule.next_run_at = triggers.next_firing(trigger["cron"], now, timezone)


async def check_rule(
    session: AsyncSession, ctx: Caller, trigger: dict[str, Any], actions: list[dict[str, Any]]
) -> None:
    """A rule that can run: the same checks for a new rule and for a changed one as a whole."""
    await _check_trigger(session, ctx, trigger)
    await _check_actions(session, ctx, trigger, actions)


async def create(
    session: AsyncSession, ctx: Caller, data: RuleIn, *, managed_by: str | None = None, rule_id: uuid.UUID | None = None
) -> AutomationRule:
    trigger = data.trigger.model_dump(mode="json")
    actions = [action.model_dump(mode="json") for action in data.actions]
    await check_rule(session, ctx, trigger, actions)
    now = clock.now()
    rule = AutomationRule(
        workspace_id=ctx.workspace_id,
        id=rule_id or new_id(),
        name=data.name,
        active=data.active,
        trigger=trigger,
        actions=actions,
        managed_by=managed_by,
        created_at=now,
        updated_at=now,
        version=1,
    )
    await arm(session, rule, now)
    session.add(rule)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="automation_rule",
        entity_id=rule.id,
        action="created",
        changes={"name": {"before": None, "after": rule.name}},
    )
    return rule


async def get(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, lock: bool = False) -> AutomationRule:
    statement = scoped.in_workspace(AutomationRule, ctx).where(
        AutomationRule.id == rule_id, AutomationRule.deleted_at.is_(None)
    )
    return await scoped.one(session, statement, missing="No automation rule with that id.", lock=lock)


async def list_rules(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None
) -> tuple[list[AutomationRule], str | None]:
    statement = scoped.in_workspace(AutomationRule, ctx).where(AutomationRule.deleted_at.is_(None))
    keys = [SortKey(AutomationRule.id, descending=True)]
    return await keyset_page(session, statement, keys, list_name="automation-rules", limit=limit, cursor=cursor)


_FIELDS = ("name", "active", "trigger", "actions")


async def update(
    session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, patch: RulePatch, *, expected_version: int
) -> AutomationRule:
    """Runs already recorded stay: a changed rule does not run again for a trigger it ran for."""
    rule = await get(session, ctx, rule_id, lock=True)
    check_version(rule.version, expected_version, what="automation rule")
    wanted: dict[str, Any] = {name: getattr(rule, name) for name in _FIELDS}
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if value is None:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
        if name == "actions":
            value = [action.model_dump(mode="json") for action in patch.actions or []]
        elif name == "trigger":
            value = value.model_dump(mode="json")
        wanted[name] = value
    await check_rule(session, ctx, wanted["trigger"], wanted["actions"])
    changes: audit.Changes = {}
    for name, value in wanted.items():
        if value != getattr(rule, name):
            changes[name] = {"before": getattr(rule, name), "after": value}
            setattr(rule, name, value)
    if changes.keys() & {"active", "trigger"}:
        await arm(session, rule, clock.now())
    audit.record_update(session, ctx, rule, entity_type="automation_rule", changes=changes)
    return rule


async def delete(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, expected_version: int) -> None:
    """Soft: the rule stops, its runs stay readable in the audit trail's terms."""
    rule = await get(session, ctx, rule_id, lock=True)
    check_version(rule.version, expected_version, what="automation rule")
    now = clock.now()
    rule.deleted_at, rule.active, rule.next_run_at = now, False, None
    rule.version += 1
    rule.updated_at = now
    audit.record(session, ctx, entity_type="automation_rule", entity_id=rule.id, action="deleted", changes={})


async def preview(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, limit: int) -> dict[str, Any]:
    rule = await get(session, ctx, rule_id)
    count, customers = await triggers.preview(session, ctx, rule, limit=limit, now=clock.now())
    return {"count": count, "customers": customers}


async def run_now(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID) -> int:
    """A schedule rule fires for this moment; a date rule runs for today's occasions (nothing for
    those already run this year). Event rules run on their events only."""
    rule = await get(session, ctx, rule_id, lock=True)
    if rule.trigger_kind == "event":
        raise Conflict("An event rule runs on its events; only schedule and date rules run on demand.")
    return await triggers.run_in_ranges(session, rule, now=clock.now())


def present(rule: AutomationRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "active": rule.active,
        "trigger": rule.trigger,
        "actions": rule.actions,
        "next_run_at": rule.next_run_at,
        "last_run_at": rule.last_run_at,
        "managed_by": rule.managed_by,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
        "version": rule.version,
    }
