"""Follow-up plans and care reminders: rules that create tasks, run set-based by the scheduler.

Re-running creates nothing twice: a plan keeps at most one open task per customer (a unique index)
and waits its interval after the last one; a care reminder carries its occasion and year as a
dedupe key."""

import uuid
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.versions import check_version
from app.models import CareRule, CustomFieldDefinition, FollowUpPlan, LifecycleStage, Segment
from app.schemas.interaction import CareRuleIn, CareRuleOut, PlanIn, PlanOut, PlanPatch
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
SELECT c.workspace_id, guanxi_uuid7(), c.id, :title, :kind, c.owner_id,
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
        return TICKET_PLAN_SQL.format(audience=_audience_sql(plan.audience))
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
SELECT c.workspace_id, guanxi_uuid7(), c.id, :title, :kind, c.owner_id, {due}, :priority, 'open', 'plan',
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


async def create_care_rule(session: AsyncSession, ctx: Caller, data: CareRuleIn) -> CareRule:
    if data.kind == "fixed_date" and (data.month is None or data.day is None):
        raise ValidationFailed("A fixed date needs month and day.", loc=["body", "month"])
    if data.kind == "custom_date":
        definition = await session.scalar(
            select(CustomFieldDefinition).where(
                CustomFieldDefinition.workspace_id == ctx.workspace_id, CustomFieldDefinition.key == data.field_key
            )
        )
        if definition is None or definition.type != "date":
            raise ValidationFailed("field_key must name a date custom field.", loc=["body", "field_key"])
    now = clock.now()
    rule = CareRule(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        kind=data.kind,
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
SELECT workspace_id, guanxi_uuid7(), id, :title, 'care', owner_id, (next_date::timestamp AT TIME ZONE :tz), 'normal',
       'open', 'care', 'care:' || :rule_id || ':' || id || ':' || extract(year FROM next_date)::int,
       CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
FROM next
WHERE next_date - today BETWEEN 0 AND :lead_days
ON CONFLICT DO NOTHING
"""


async def run_now(session: AsyncSession, ctx: Caller) -> int:
    """The workspace's plans and care rules, on demand, in the workspace's time zone; returns how
    many tasks were created."""
    timezone = await workspaces.timezone(session, ctx.workspace_id)
    return await run_plans(session, ctx) + await run_care(session, ctx, timezone=timezone)


async def run_care(session: AsyncSession, ctx: Caller, *, timezone: str) -> int:
    """Reminder tasks for the owner, `lead_days` ahead of each customer's occasion."""
    created = 0
    rules = await session.scalars(
        select(CareRule).where(CareRule.workspace_id == ctx.workspace_id, CareRule.active.is_(True))
    )
    for rule in rules.all():
        params = {
            "ws": ctx.workspace_id,
            "now": clock.now(),
            "tz": timezone,
            "title": rule.task_title,
            "rule_id": str(rule.id),
            "lead_days": rule.lead_days,
            "field_key": rule.field_key,
            "month": rule.month,
            "day": rule.day,
        }
        result = await session.execute(text(_care_sql(rule)), params)
        created += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return created


def present_plan(plan: FollowUpPlan) -> dict[str, Any]:
    return PlanOut.model_validate(plan, from_attributes=True).model_dump(mode="json")


def present_care_rule(rule: CareRule) -> dict[str, Any]:
    return CareRuleOut.model_validate(rule, from_attributes=True).model_dump(mode="json")
