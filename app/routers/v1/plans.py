"""Follow-up plans and care rules: /api/v1/follow-up-plans, /api/v1/care-rules.

/care-rules is deprecated: a care rule is an automation rule (a date trigger and one create_task
action) and is listed, previewed and run under /api/v1/automation-rules, where new ones belong. It
keeps working on the same rules, ids and reminders."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import CustomersRead, IdempotencyKey, IfMatch, PlansWrite, Reader, Session
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.interaction import (
    CareRuleIn,
    CareRuleList,
    CareRuleOut,
    CareRulePatch,
    PlanIn,
    PlanList,
    PlanOut,
    PlanPatch,
    RunOut,
)
from app.services.engagement import follow_ups

router = APIRouter(tags=["follow-up plans and care"])


@router.get("/follow-up-plans", response_model=PlanList, responses=errors(), summary="List plans")
async def list_plans(ctx: CustomersRead, session: Reader) -> Response:
    plans = await follow_ups.list_plans(session, ctx)
    return json_response({"items": [follow_ups.present_plan(p) for p in plans], "next_cursor": None})


@router.post("/follow-up-plans", status_code=201, response_model=PlanOut, responses=errors(), summary="Add a plan")
async def create_plan(
    request: Request, data: PlanIn, ctx: PlansWrite, session: Session, key: IdempotencyKey
) -> Response:
    """`every_n_days` for the audience (tier, segment, stage), or `days_after_first_purchase`.
    The scheduler runs plans every 10 minutes; tasks go to each customer's owner."""

    async def create() -> StoredResponse:
        plan = await follow_ups.create_plan(session, ctx, data)
        return stored_resource(follow_ups.present_plan(plan), location=f"/api/v1/follow-up-plans/{plan.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get("/follow-up-plans/{plan_id}", response_model=PlanOut, responses=errors(404), summary="Get a plan")
async def get_plan(plan_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(follow_ups.present_plan(await follow_ups.get_plan(session, ctx, plan_id)))


@router.patch("/follow-up-plans/{plan_id}", response_model=PlanOut, responses=errors(404, 412, 428), summary="Change")
async def update_plan(
    plan_id: uuid.UUID, patch: PlanPatch, ctx: PlansWrite, session: Session, version: IfMatch
) -> Response:
    """`active: false` pauses the plan; its open tasks stay."""
    return resource_response(
        follow_ups.present_plan(await follow_ups.update_plan(session, ctx, plan_id, patch, expected_version=version))
    )


@router.post("/follow-up-plans/run", response_model=RunOut, responses=errors(), summary="Run plans and care now")
async def run_plans_now(ctx: PlansWrite, session: Session) -> Response:
    """What the scheduler does, on demand; running twice creates nothing twice."""
    return json_response({"created": await follow_ups.run_now(session, ctx)})


@router.get("/care-rules", deprecated=True, response_model=CareRuleList, responses=errors(), summary="List care rules")
async def list_care_rules(ctx: CustomersRead, session: Reader) -> Response:
    rules = await follow_ups.list_care_rules(session, ctx)
    return json_response({"items": [follow_ups.present_care_rule(r) for r in rules], "next_cursor": None})


@router.post(
    "/care-rules",
    deprecated=True,
    status_code=201,
    response_model=CareRuleOut,
    responses=errors(),
    summary="Add a care rule",
)
async def create_care_rule(
    request: Request, data: CareRuleIn, ctx: PlansWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Birthdays, a fixed date (a holiday) or a date custom field (an anniversary): a reminder task
    for the owner `lead_days` ahead, skipping customers who declined every channel."""

    async def create() -> StoredResponse:
        rule = await follow_ups.create_care_rule(session, ctx, data)
        return stored_resource(follow_ups.present_care_rule(rule), location=f"/api/v1/care-rules/{rule.id}")

    return await idempotent(request, session, ctx, key, create)


@router.delete("/follow-up-plans/{plan_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete a plan")
async def delete_follow_up_plan(plan_id: uuid.UUID, ctx: PlansWrite, session: Session, version: IfMatch) -> Response:
    """The plan creates no more tasks. The tasks it created stay, open ones included, with
    `plan_id` null; cancel them through `/tasks` if they should go too."""
    await follow_ups.delete_plan(session, ctx, plan_id, expected_version=version)
    return Response(status_code=204)


@router.get(
    "/care-rules/{rule_id}",
    deprecated=True,
    response_model=CareRuleOut,
    responses=errors(404),
    summary="Get a care rule",
)
async def get_care_rule(rule_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(follow_ups.present_care_rule(await follow_ups.get_care_rule(session, ctx, rule_id)))


@router.patch(
    "/care-rules/{rule_id}",
    deprecated=True,
    response_model=CareRuleOut,
    responses=errors(404, 412, 428),
    summary="Change a care rule",
)
async def update_care_rule(
    rule_id: uuid.UUID, patch: CareRulePatch, ctx: PlansWrite, session: Session, version: IfMatch
) -> Response:
    """The rule as changed is checked as a new one is; `active: false` pauses it. Reminders it
    already created stay as they are."""
    rule = await follow_ups.update_care_rule(session, ctx, rule_id, patch, expected_version=version)
    return resource_response(follow_ups.present_care_rule(rule))


@router.delete(
    "/care-rules/{rule_id}",
    deprecated=True,
    status_code=204,
    responses=errors(404, 412, 428),
    summary="Delete a care rule",
)
async def delete_care_rule(rule_id: uuid.UUID, ctx: PlansWrite, session: Session, version: IfMatch) -> Response:
    """The rule creates no more reminders. The reminder tasks it created stay, open ones included."""
    await follow_ups.delete_care_rule(session, ctx, rule_id, expected_version=version)
    return Response(status_code=204)
