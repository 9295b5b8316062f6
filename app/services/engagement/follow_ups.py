"""Follow-up plans, and the deprecated care rules API over automation rules: rules that create tasks,
run set-based by the scheduler.

Re-running creates nothing twice: a plan keeps at most one open task per customer (a unique index)
and waits its interval after the last one; a care reminder is an automation run, once per rule,
customer and occasion's year, and its task carries that as its dedupe key."""

import uuid
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.versions import check_version
from app.models import AutomationRule, FollowUpPlan, LifecycleStage, Segment
from app.schemas.automation import CreateTask, DateTrigger, RuleIn
from app.schemas.interaction import CareRuleIn, CareRuleOut, CareRulePatch, PlanIn, PlanOut, PlanPatch
from app.services.automation import rules, triggers
from app.services.engagement import assignees
from app.services.events import audit
from app.services.segments import lifecycle

CARE_RULES = "care_rules"


async def _check_audience(session: AsyncSession, ctx: Caller, audience: dict[str, Any]) -> None:
    if audience.get("segment_id"):
        found = await session.scalar(
            select(Segment.id).where(Segment.workspace_id == ctx.workspace_id, Segment.id == audience["segment_id"])
        )
        if found is None:
            raise ValidationFailed("Unknown segment.", loc=["body", "audience", "segment_id"])
    if audience.get("stage"):
        await lifecycle.ensure_stages(session, ctx.workspace_id)
        found_stage = await session.scalar(
            select(LifecycleStage.key).where(
                LifecycleStage.workspace_id == ctx.workspace_id, LifecycleStage.key == audience["stage"]
            )
        )
        if found_stage is None:
            raise ValidationFailed("Unknown lifecycle stage.", loc=["body", "audience", "stage"])


async def create_plan(session: AsyncSession, ctx: Caller, data: PlanIn) -> FollowUpPlan:
    audience = data.audience.model_dump(mode="json", exclude_none=True)
    await _check_audience(session, ctx, audience)
    now = clock.now()
    plan = FollowUpPlan(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        rule=data.rule,
        days=data.days,
        audience=audience,
        task_title=data.task_title,
        task_kind=data.task_kind,
        task_priority=data.task_priority,
        active=data.active,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(plan)
    await session.flush()
    audit.record(session, ctx, entity_type="follow_up_plan", entity_id=plan.id, action="created", changes={})
    return plan


async def get_plan(session: AsyncSession, ctx: Caller, plan_id: uuid.UUID, *, lock: bool = False) -> FollowUpPlan:
    return await scoped.get(session, ctx, FollowUpPlan, plan_id, missing="No follow-up plan with that id.", lock=lock)


async def list_plans(session: AsyncSession, ctx: Caller) -> list[FollowUpPlan]:
    return await scoped.all_of(session, ctx, FollowUpPlan, order_by=FollowUpPlan.created_at)


async def update_plan(
    session: AsyncSession, ctx: Caller, plan_id: uuid.UUID, patch: PlanPatch, *, expected_version: int
) -> FollowUpPlan:
    """Open tasks stay as they are: a changed plan never adds a second open task for a customer."""
    plan = await get_plan(session, ctx, plan_id, lock=True)
    check_version(plan.version, expected_version, what="plan")
    wanted: dict[str, Any] = {}
    if patch.audience is not None:
        audience = patch.audience.model_dump(mode="json", exclude_none=True)
        await _check_audience(session, ctx, audience)
        wanted["audience"] = audience
    for name in ("name", "days", "task_title", "task_priority", "active"):
        if name in patch.model_fields_set:
            value = getattr(patch, name)
            if value is None:
                raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
            wanted[name] = value
    changes: audit.Changes = {
        name: {"before": getattr(plan, name), "after": value}
        for name, value in wanted.items()
        if value != getattr(plan, name)
    }
    for name in changes:
        setattr(plan, name, wanted[name])
    audit.record_update(session, ctx, plan, entity_type="follow_up_plan", changes=changes)
    return plan


# Tasks for customers without an owner: the workspace's fallback (one evaluation per statement).
_FALLBACK = assignees.fallback_sql(":ws")


def _audience_sql(audience: dict[str, Any]) -> str:
    clauses = []
    if audience.get("tier"):
        clauses.append(
            "EXISTS (SELECT 1 FROM customer_values v WHERE v.workspace_id = c.workspace_id "
            "AND v.customer_id = c.id AND v.tier = :tier)"
        )
    if audience.get("segment_id"):
        clauses.append(
            "EXISTS (SELECT 1 FROM segment_members m WHERE m.workspace_id = c.workspace_id "
            "AND m.customer_id = c.id AND m.segment_id = CAST(:segment_id AS uuid))"
        )
    if audience.get("stage"):
        clauses.append(
            "EXISTS (SELECT 1 FROM customer_stages s WHERE s.workspace_id = c.workspace_id "
            "AND s.customer_id = c.id AND s.stage = :stage)"
        )
    return "".join(f" AND {clause}" for clause in clauses)


TICKET_PLAN_SQL = """
INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, origin,
                   plan_id, dedupe_key, created_at, updated_at, version)
SELECT c.workspace_id, guanxi_uuid7(), c.id, :title, :kind, coalesce(c.owner_id, {fallback}),
       t.resolved_at + make_interval(days => :days), :priority, 'open', 'plan', :plan_id,
       'plan:' || :plan_key || ':ticket:' || t.id, CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
FROM tickets t JOIN customers c ON c.workspace_id = t.workspace_id AND c.id = t.customer_id
WHERE t.workspace_id = :ws AND c.deleted_at IS NULL AND t.resolved_at IS NOT NULL
  -- Tickets resolved since the plan exists: a new plan does not call back on old tickets.
  AND t.resolved_at >= :plan_created_at
  AND t.resolved_at + make_interval(days => :days) <= CAST(:now AS timestamptz) {audience}
ON CONFLICT DO NOTHING
"""


def _plan_sql(plan: FollowUpPlan) -> str:
    """One INSERT … SELECT for the whole audience."""
    if plan.rule == "days_after_ticket_resolved":
        # A satisfaction call-back per resolved ticket, keyed by the ticket: never twice.
        return TICKET_PLAN_SQL.format(audience=_audience_sql(plan.audience), fallback=_FALLBACK)
    if plan.rule == "every_n_days":
        taken = "AND (t.status = 'open' OR t.created_at > CAST(:now AS timestamptz) - make_interval(days => :days))"
        due = "CAST(:now AS timestamptz)"
        join = extra = ""
    else:  # days_after_first_purchase: once per customer
        taken = ""
        join = "JOIN customer_values v ON v.workspace_id = c.workspace_id AND v.customer_id = c.id"
        extra = """
  AND v.first_purchase_at IS NOT NULL
  AND v.first_purchase_at + make_interval(days => :days) <= CAST(:now AS timestamptz)"""
        due = "v.first_purchase_at + make_interval(days => :days)"
    # EXCEPT reads tasks once. A correlated NOT EXISTS, planned while the plan has no tasks yet, became a
    # nested loop whose inner scan re-read every row this statement had inserted so far: quadratic.
    return f"""
INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, origin,
                   plan_id, created_at, updated_at, version)
SELECT c.workspace_id, guanxi_uuid7(), c.id, :title, :kind, coalesce(c.owner_id, {_FALLBACK}), {due}, :priority,
       'open', 'plan',
       :plan_id, CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
FROM (SELECT id FROM customers WHERE workspace_id = :ws AND deleted_at IS NULL
      EXCEPT
      SELECT customer_id FROM tasks t WHERE t.workspace_id = :ws AND t.plan_id = :plan_id {taken}) e
JOIN customers c ON c.workspace_id = :ws AND c.id = e.id {join}
WHERE TRUE {extra} {_audience_sql(plan.audience)}
ON CONFLICT DO NOTHING
"""


async def run_plans(session: AsyncSession, ctx: Caller) -> int:
    """Every active plan of the workspace; returns how many tasks were created."""
    now = clock.now()
    created = 0
    plans = await session.scalars(
        select(FollowUpPlan).where(FollowUpPlan.workspace_id == ctx.workspace_id, FollowUpPlan.active.is_(True))
    )
    for plan in plans.all():
        params = {
            "ws": ctx.workspace_id,
            "now": now,
            "plan_id": plan.id,
            "days": plan.days,
            "title": plan.task_title,
            "kind": plan.task_kind,
            "priority": plan.task_priority,
            "plan_created_at": plan.created_at,
            "plan_key": str(plan.id),
            **plan.audience,
        }
        result = await session.execute(text(_plan_sql(plan)), params)
        created += int(result.rowcount or 0)  # type: ignore[attr-defined]
        plan.last_run_at = now
    return created


# Care rules are automation rules now (a date trigger and one create_task action, `managed_by`
# `care_rules`): the deprecated /care-rules API reads and writes them in its own shape, and the
# automation date runner is the one mechanism that makes their reminders.

_CARE_KINDS = {"birthday": "birthday", "custom_date": "custom_field", "fixed_date": "fixed"}
# May be cleared: they matter for some kinds only, and the rule as changed is checked as a whole.
_CARE_NULLABLE = frozenset({"month", "day", "field_key"})


def _as_automation(care: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A care rule's fields as an automation rule's trigger and actions."""
    trigger = DateTrigger.model_validate(
        {
            "kind": "date",
            "date": _CARE_KINDS[care["kind"]],
            "field_key": care["field_key"],
            "month": care["month"],
            "day": care["day"],
            "calendar": care["calendar"],
            "offset_days": -care["lead_days"],
        }
    )
    task = CreateTask(type="create_task", title=care["task_title"], kind="care", priority="normal", due_in_days=0)
    return trigger.model_dump(mode="json"), [task.model_dump(mode="json")]


def _care_fields(rule: AutomationRule) -> dict[str, Any]:
    trigger = rule.trigger
    kind = next(care for care, date_kind in _CARE_KINDS.items() if date_kind == trigger["date"])
    return {
        "name": rule.name,
        "kind": kind,
        "calendar": trigger["calendar"],
        "month": trigger.get("month"),
        "day": trigger.get("day"),
        "field_key": trigger.get("field_key"),
        "lead_days": -int(trigger["offset_days"]),
        "task_title": rule.actions[0]["title"],
        "active": rule.active,
    }


async def create_care_rule(session: AsyncSession, ctx: Caller, data: CareRuleIn) -> AutomationRule:
    trigger, actions = _as_automation(data.model_dump())
    rule_in = RuleIn.model_validate({"name": data.name, "active": data.active, "trigger": trigger, "actions": actions})
    return await rules.create(session, ctx, rule_in, managed_by=CARE_RULES)


async def list_care_rules(session: AsyncSession, ctx: Caller) -> list[AutomationRule]:
    return list(
        (
            await session.scalars(
                scoped.in_workspace(AutomationRule, ctx)
                .where(AutomationRule.managed_by == CARE_RULES, AutomationRule.deleted_at.is_(None))
                .order_by(AutomationRule.created_at, AutomationRule.id)
            )
        ).all()
    )


async def get_care_rule(
    session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, lock: bool = False
) -> AutomationRule:
    statement = scoped.in_workspace(AutomationRule, ctx).where(
        AutomationRule.id == rule_id, AutomationRule.managed_by == CARE_RULES, AutomationRule.deleted_at.is_(None)
    )
    return await scoped.one(session, statement, missing="No care rule with that id.", lock=lock)


async def update_care_rule(
    session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, patch: CareRulePatch, *, expected_version: int
) -> AutomationRule:
    """Reminders already created stay as they are; the changed rule applies from its next run."""
    rule = await get_care_rule(session, ctx, rule_id, lock=True)
    check_version(rule.version, expected_version, what="care rule")
    before = _care_fields(rule)
    wanted = dict(before)
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if value is None and name not in _CARE_NULLABLE:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
        wanted[name] = value
    trigger, actions = _as_automation(wanted)
    await rules.check_rule(session, ctx, trigger, actions)
    changes: audit.Changes = {
        name: {"before": before[name], "after": value} for name, value in wanted.items() if value != before[name]
    }
    if changes:
        rule.name, rule.active, rule.trigger, rule.actions = wanted["name"], wanted["active"], trigger, actions
        await rules.arm(session, rule, clock.now())
    audit.record_update(session, ctx, rule, entity_type="care_rule", changes=changes)
    return rule


async def delete_care_rule(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, expected_version: int) -> None:
    """The rule goes; the reminder tasks it created stay, open ones included."""
    await get_care_rule(session, ctx, rule_id)
    await rules.delete(session, ctx, rule_id, expected_version=expected_version)


async def run_now(session: AsyncSession, ctx: Caller) -> int:
    """The workspace's plans and care rules, on demand, in the workspace's time zone; returns how
    many tasks were created."""
    return await run_plans(session, ctx) + await run_care(session, ctx)


async def run_care(session: AsyncSession, ctx: Caller) -> int:
    """The workspace's care rules now, through the automation date runner (which also runs them on
    its own schedule): reminder tasks for the owner (or the workspace's fallback), `lead_days` ahead
    of each customer's occasion; a lunar occasion in the workspace's local days. Returns how many
    reminders were made."""
    made = 0
    for rule in await triggers.date_rules(session, workspace_id=ctx.workspace_id, managed_by=CARE_RULES):
        made += await triggers.run_in_ranges(session, rule, now=clock.now())
    return made


def present_plan(plan: FollowUpPlan) -> dict[str, Any]:
    return PlanOut.model_validate(plan, from_attributes=True).model_dump(mode="json")


def present_care_rule(rule: AutomationRule) -> dict[str, Any]:
    return CareRuleOut.model_validate({"id": rule.id, "version": rule.version, **_care_fields(rule)}).model_dump(
        mode="json"
    )


_UNLINK_PLAN = text(
    "UPDATE tasks SET plan_id = NULL, version = version + 1, updated_at = :now "
    "WHERE workspace_id = :ws AND plan_id = :plan_id"
)


async def delete_plan(session: AsyncSession, ctx: Caller, plan_id: uuid.UUID, *, expected_version: int) -> None:
    """The plan goes; the tasks it created stay, open ones included, with no plan (`plan_id` null)."""
    plan = await get_plan(session, ctx, plan_id, lock=True)
    check_version(plan.version, expected_version, what="plan")
    # Here, not by the foreign key's ON DELETE SET NULL: on the composite key that would clear
    # workspace_id as well.
    await session.execute(_UNLINK_PLAN, {"ws": ctx.workspace_id, "plan_id": plan.id, "now": clock.now()})
    await session.delete(plan)
    audit.record(session, ctx, entity_type="follow_up_plan", entity_id=plan.id, action="deleted", changes={})
    await session.flush()
