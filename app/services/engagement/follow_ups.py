"""Follow-up plans and care reminders: rules that create tasks, run set-based by the scheduler.

Re-running creates nothing twice: a plan keeps at most one open task per customer (a unique index)
and waits its interval after the last one; a care reminder carries its occasion and year as a
dedupe key."""

import calendar as calendar_module
import uuid
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.versions import check_version
from app.models import CareRule, CustomFieldDefinition, FollowUpPlan, LifecycleStage, Segment
from app.schemas.interaction import CareRuleIn, CareRuleOut, CareRulePatch, PlanIn, PlanOut, PlanPatch
from app.services.engagement import assignees, lunar_dates
from app.services.events import audit
from app.services.identity import workspaces
from app.services.segments import lifecycle


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
    if patch.audience is not None:
        audience = patch.audience.model_dump(mode="json", exclude_none=True)
        await _check_audience(session, ctx, audience)
        plan.audience = audience
    for name in ("name", "days", "task_title", "task_priority", "active"):
        if name in patch.model_fields_set:
            value = getattr(patch, name)
            if value is None:
                raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
            setattr(plan, name, value)
    plan.version += 1
    plan.updated_at = clock.now()
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


async def _check_care_rule(
    session: AsyncSession,
    ctx: Caller,
    *,
    kind: str,
    calendar: str,
    month: int | None,
    day: int | None,
    field_key: str | None,
) -> None:
    """A rule that can run: the same checks for a new rule and for a changed one as a whole."""
    if kind == "fixed_date":
        if month is None or day is None:
            raise ValidationFailed(
                "A fixed date needs month and day.", loc=["body", "month" if month is None else "day"]
            )
        if calendar == "lunar" and day > lunar_dates.LAST_LUNAR_DAY:
            raise ValidationFailed("A lunar month has at most 30 days.", loc=["body", "day"])
        if calendar == "gregorian" and day > calendar_module.monthrange(2000, month)[1]:
            raise ValidationFailed(f"Month {month} has no day {day}.", loc=["body", "day"])
    if kind == "custom_date":
        definition = await session.scalar(
            select(CustomFieldDefinition).where(
                CustomFieldDefinition.workspace_id == ctx.workspace_id, CustomFieldDefinition.key == field_key
            )
        )
        if definition is None or definition.type != "date":
            raise ValidationFailed("field_key must name a date custom field.", loc=["body", "field_key"])


async def create_care_rule(session: AsyncSession, ctx: Caller, data: CareRuleIn) -> CareRule:
    await _check_care_rule(
        session,
        ctx,
        kind=data.kind,
        calendar=data.calendar,
        month=data.month,
        day=data.day,
        field_key=data.field_key,
    )
    now = clock.now()
    rule = CareRule(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        kind=data.kind,
        calendar=data.calendar,
        month=data.month,
        day=data.day,
        field_key=data.field_key,
        lead_days=data.lead_days,
        task_title=data.task_title,
        active=data.active,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(rule)
    await session.flush()
    return rule


async def list_care_rules(session: AsyncSession, ctx: Caller) -> list[CareRule]:
    return await scoped.all_of(session, ctx, CareRule, order_by=CareRule.created_at)


def _care_sql(rule: CareRule) -> str:
    date_expr = {
        "birthday": "c.birthday",
        "custom_date": "CAST(c.custom_fields ->> :field_key AS date)",
        "fixed_date": "make_date(2000, :month, :day)",
    }[rule.kind]
    return f"""
WITH today AS (SELECT (CAST(:now AS timestamptz) AT TIME ZONE :tz)::date AS d),
dated AS (
    SELECT c.id, c.owner_id, c.workspace_id, {date_expr} AS occasion
    FROM customers c
    WHERE c.workspace_id = :ws AND c.deleted_at IS NULL
      -- A customer who said no on every channel asked, and yes on none, gets no care reminders.
      AND NOT (EXISTS (SELECT 1 FROM jsonb_each(c.consent) e WHERE e.value = 'false'::jsonb)
               AND NOT EXISTS (SELECT 1 FROM jsonb_each(c.consent) e WHERE e.value = 'true'::jsonb))
),
next AS (
    SELECT dated.*, (
        SELECT (make_date(y, extract(month FROM occasion)::int, 1) + (extract(day FROM occasion)::int - 1))::date
        FROM (SELECT extract(year FROM today.d)::int + CASE WHEN to_char(occasion, 'MMDD') < to_char(today.d, 'MMDD')
                                                            THEN 1 ELSE 0 END AS y) years
    ) AS next_date, today.d AS today
    FROM dated CROSS JOIN today
    WHERE occasion IS NOT NULL
)
INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, origin,
                   dedupe_key, created_at, updated_at, version)
SELECT workspace_id, guanxi_uuid7(), id, :title, 'care', coalesce(owner_id, {_FALLBACK}),
       (next_date::timestamp AT TIME ZONE :tz), 'normal', 'open', 'care',
       'care:' || :rule_id || ':' || id || ':' || extract(year FROM next_date)::int,
       CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
FROM next
WHERE next_date - today BETWEEN 0 AND :lead_days
ON CONFLICT DO NOTHING
"""


_CONSENTS_SOME_CHANNEL = """
      -- A customer who said no on every channel asked, and yes on none, gets no care reminders.
      AND NOT (EXISTS (SELECT 1 FROM jsonb_each(c.consent) e WHERE e.value = 'false'::jsonb)
               AND NOT EXISTS (SELECT 1 FROM jsonb_each(c.consent) e WHERE e.value = 'true'::jsonb))"""


def _lunar_care_sql(rule: CareRule) -> str:
    """A lunar rule: the lunar months and days that fall in the lead window come from Python
    (`lunar_dates.occurrences`, as arrays) and are joined to the customers' in one statement."""
    month, day = {
        "birthday": ("extract(month FROM c.birthday)::int", "extract(day FROM c.birthday)::int"),
        "custom_date": (
            "extract(month FROM CAST(c.custom_fields ->> :field_key AS date))::int",
            "extract(day FROM CAST(c.custom_fields ->> :field_key AS date))::int",
        ),
        "fixed_date": ("CAST(:month AS int)", "CAST(:day AS int)"),
    }[rule.kind]
    return f"""
WITH lunar_window AS (
    SELECT * FROM unnest(CAST(:lunar_months AS int[]), CAST(:lunar_days AS int[]), CAST(:on_dates AS date[]),
                         CAST(:lunar_years AS int[])) AS w(month, day, on_date, lunar_year)
),
dated AS (
    SELECT c.id, c.owner_id, c.workspace_id, {month} AS month, {day} AS day
    FROM customers c
    WHERE c.workspace_id = :ws AND c.deleted_at IS NULL {_CONSENTS_SOME_CHANNEL}
)
INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, origin,
                   dedupe_key, created_at, updated_at, version)
SELECT d.workspace_id, guanxi_uuid7(), d.id, :title, 'care', coalesce(d.owner_id, {_FALLBACK}),
       (w.on_date::timestamp AT TIME ZONE :tz), 'normal', 'open', 'care',
       'care:' || :rule_id || ':' || d.id || ':lunar:' || w.lunar_year,
       CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
FROM dated d JOIN lunar_window w ON w.month = d.month AND w.day = d.day
ON CONFLICT DO NOTHING
"""


def _lunar_window(today: date, lead_days: int) -> dict[str, list[Any]]:
    found = lunar_dates.occurrences(today, lead_days)
    return {
        "lunar_months": [o.month for o in found],
        "lunar_days": [o.day for o in found],
        "on_dates": [o.on for o in found],
        "lunar_years": [o.lunar_year for o in found],
    }


async def run_now(session: AsyncSession, ctx: Caller) -> int:
    """The workspace's plans and care rules, on demand, in the workspace's time zone; returns how
    many tasks were created."""
    timezone = await workspaces.timezone(session, ctx.workspace_id)
    return await run_plans(session, ctx) + await run_care(session, ctx, timezone=timezone)


async def run_care(session: AsyncSession, ctx: Caller, *, timezone: str) -> int:
    """Reminder tasks for the owner (or the workspace's fallback), `lead_days` ahead of each
    customer's occasion; a lunar occasion in the workspace's local days."""
    created = 0
    rules = await session.scalars(
        select(CareRule).where(CareRule.workspace_id == ctx.workspace_id, CareRule.active.is_(True))
    )
    now = clock.now()
    today = now.astimezone(ZoneInfo(timezone)).date()
    for rule in rules.all():
        params: dict[str, Any] = {
            "ws": ctx.workspace_id,
            "now": now,
            "tz": timezone,
            "title": rule.task_title,
            "rule_id": str(rule.id),
            "lead_days": rule.lead_days,
            "field_key": rule.field_key,
            "month": rule.month,
            "day": rule.day,
        }
        if rule.calendar == "lunar":
            params |= _lunar_window(today, rule.lead_days)
        sql = _lunar_care_sql(rule) if rule.calendar == "lunar" else _care_sql(rule)
        result = await session.execute(text(sql), params)
        created += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return created


def present_plan(plan: FollowUpPlan) -> dict[str, Any]:
    return PlanOut.model_validate(plan, from_attributes=True).model_dump(mode="json")


def present_care_rule(rule: CareRule) -> dict[str, Any]:
    return CareRuleOut.model_validate(rule, from_attributes=True).model_dump(mode="json")


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


async def get_care_rule(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, lock: bool = False) -> CareRule:
    return await scoped.get(session, ctx, CareRule, rule_id, missing="No care rule with that id.", lock=lock)


_CARE_FIELDS = ("name", "kind", "calendar", "month", "day", "field_key", "lead_days", "task_title", "active")
# May be cleared: they matter for some kinds only, and the rule as changed is checked as a whole.
_CARE_NULLABLE = frozenset({"month", "day", "field_key"})


async def update_care_rule(
    session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, patch: CareRulePatch, *, expected_version: int
) -> CareRule:
    """Reminders already created stay as they are; the changed rule applies from its next run."""
    rule = await get_care_rule(session, ctx, rule_id, lock=True)
    check_version(rule.version, expected_version, what="care rule")
    wanted = {name: getattr(rule, name) for name in _CARE_FIELDS}
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if value is None and name not in _CARE_NULLABLE:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
        wanted[name] = value
    await _check_care_rule(
        session,
        ctx,
        kind=wanted["kind"],
        calendar=wanted["calendar"],
        month=wanted["month"],
        day=wanted["day"],
        field_key=wanted["field_key"],
    )
    changes: audit.Changes = {}
    for name, value in wanted.items():
        if value != getattr(rule, name):
            changes[name] = {"before": getattr(rule, name), "after": value}
            setattr(rule, name, value)
    audit.record_update(session, ctx, rule, entity_type="care_rule", changes=changes)
    return rule


async def delete_care_rule(session: AsyncSession, ctx: Caller, rule_id: uuid.UUID, *, expected_version: int) -> None:
    """The rule goes; the reminder tasks it created stay, open ones included."""
    rule = await get_care_rule(session, ctx, rule_id, lock=True)
    check_version(rule.version, expected_version, what="care rule")
    await session.delete(rule)
    audit.record(session, ctx, entity_type="care_rule", entity_id=rule.id, action="deleted", changes={})
    await session.flush()
