"""Automation rules: /api/v1/automation-rules."""

import uuid
from typing import Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    AutomationWrite,
    Cursor,
    CustomersRead,
    IdempotencyKey,
    IfMatch,
    Limit,
    Reader,
    Session,
)
from app.routers.responses import errors, idempotent, resource_response, stored
from app.schemas.automation import PreviewIn, PreviewOut, RuleIn, RuleList, RuleOut, RulePatch, RunList, RunNowOut
from app.services.automation import rules, runs

router = APIRouter(prefix="/automation-rules", tags=["automation rules"])


def _location(rule_id: object) -> str:
    return f"/api/v1/automation-rules/{rule_id}"


@router.post("", status_code=201, response_model=RuleOut, responses=errors(), summary="Add an automation rule")
async def create_automation_rule(
    request: Request, data: RuleIn, ctx: AutomationWrite, session: Session, key: IdempotencyKey
) -> Response:
    """A trigger — `event` (a type of GET /events/types, with conditions on its data), `schedule`
    (cron in the workspace's time zone, over an audience filter) or `date` (birthday, a date custom
    field or a fixed day, Gregorian or lunar, with an offset in days) — and 1 to 10 actions, run
    exactly once per rule, trigger and customer. 422 `self_triggering` naming the action when an
    action emits the event the trigger listens to; 422 naming the field for an unknown event type,
    an invalid cron or filter, or an action's unknown target."""

    async def create() -> StoredResponse:
        rule = await rules.create(session, ctx, data)
        return stored(201, rules.present(rule), {"ETag": f'"{rule.version}"', "Location": _location(rule.id)})

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=RuleList, responses=errors(), summary="List automation rules")
async def list_automation_rules(
    ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first; rules kept through the deprecated /care-rules API too (`managed_by`)."""
    items, next_cursor = await rules.list_rules(session, ctx, limit=limit, cursor=cursor)
    return json_response({"items": [rules.present(r) for r in items], "next_cursor": next_cursor})


@router.get("/{rule_id}", response_model=RuleOut, responses=errors(404), summary="Get an automation rule")
async def get_automation_rule(rule_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(rules.present(await rules.get(session, ctx, rule_id)))


@router.patch(
    "/{rule_id}", response_model=RuleOut, responses=errors(404, 412, 428), summary="Change an automation rule"
)
async def update_automation_rule(
    rule_id: uuid.UUID, patch: RulePatch, ctx: AutomationWrite, session: Session, version: IfMatch
) -> Response:
    """The rule as changed is checked as a new one is; `active: false` pauses it. Runs already
    recorded stay, and it does not run again for a trigger it ran for."""
    rule = await rules.update(session, ctx, rule_id, patch, expected_version=version)
    return resource_response(rules.present(rule))


@router.delete("/{rule_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete an automation rule")
async def delete_automation_rule(
    rule_id: uuid.UUID, ctx: AutomationWrite, session: Session, version: IfMatch
) -> Response:
    """The rule stops (soft delete). What it did stays: tasks, tags, tickets, its runs."""
    await rules.delete(session, ctx, rule_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/{rule_id}/preview", response_model=PreviewOut, responses=errors(404), summary="Who a rule would act for now"
)
async def preview_automation_rule(
    rule_id: uuid.UUID, ctx: CustomersRead, session: Reader, data: PreviewIn | None = None
) -> Response:
    """The count and the first customers (of those the caller may see) a run now would act for:
    event rules, the audience their events would run for; schedule rules, the audience of a firing;
    date rules, today's occasions not yet run. Changes nothing."""
    limit = (data or PreviewIn()).limit
    return json_response(await rules.preview(session, ctx, rule_id, limit=limit))


@router.get("/{rule_id}/runs", response_model=RunList, responses=errors(404), summary="A rule's runs")
async def list_automation_runs(
    rule_id: uuid.UUID,
    ctx: CustomersRead,
    session: Reader,
    customer_id: uuid.UUID | None = None,
    outcome: Literal["ok", "failed", "skipped"] | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first, one per customer and trigger: when, at what chain depth, the outcome (a
    failure's or skip's reason) and each action's. Runs for customers the caller may not see are
    not listed."""
    await rules.get(session, ctx, rule_id)
    items, next_cursor = await runs.list_runs(
        session, ctx, rule_id, customer_id=customer_id, outcome=outcome, limit=limit, cursor=cursor
    )
    return json_response({"items": [runs.present_run(r) for r in items], "next_cursor": next_cursor})


@router.post("/{rule_id}/run", response_model=RunNowOut, responses=errors(404, 409), summary="Run a rule now")
async def run_automation_rule(rule_id: uuid.UUID, ctx: AutomationWrite, session: Session) -> Response:
    """Schedule rules fire for this moment; date rules run for today's occasions (customers already
    run for this year's occasion get nothing again). 409 for an event rule."""
    return json_response({"runs": await rules.run_now(session, ctx, rule_id)})
