"""Lifecycle stages: /api/v1/customers/{id}/stage, /api/v1/lifecycle/stages, /api/v1/reports/lifecycle."""

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.core import clock
from app.http.json_response import json_response
from app.routers.deps import CustomersRead, CustomersWrite, PlansWrite, Reader, ReportsRead, Session, ValueAdmin
from app.routers.responses import errors, resource_response
from app.schemas.common import Timestamp
from app.schemas.segment import (
    LifecycleReport,
    LifecycleRulesIn,
    LifecycleRulesOut,
    LifecycleStages,
    StageList,
    StageMove,
    StageOut,
    StagesIn,
)
from app.services.segments import lifecycle

router = APIRouter(tags=["lifecycle"])


@router.get(
    "/lifecycle/stages", response_model=LifecycleStages, responses=errors(), summary="The workspace's stages, in order"
)
async def get_stages(ctx: CustomersRead, session: Session) -> Response:
    rows = await lifecycle.stages(session, ctx)
    return json_response(
        {
            "items": [{"key": r.key, "name": r.name, "position": r.position} for r in rows],
            "next_cursor": None,
            "transitions": {k or "none": sorted(v) for k, v in lifecycle.TRANSITIONS.items()},
            "rules": await lifecycle.thresholds(session, ctx),
        }
    )


@router.put("/lifecycle/stages", response_model=StageList, responses=errors(409), summary="Name, order and add stages")
async def set_stages(body: StagesIn, ctx: PlansWrite, session: Session) -> Response:
    """Every default stage stays (the rules use them); rename them, reorder them, add your own
    (entered and left by hand). Removing a stage customers are in is a 409."""
    rows = await lifecycle.set_stages(session, ctx, [(s.key, s.name) for s in body.stages])
    return json_response(
        {"items": [{"key": r.key, "name": r.name, "position": r.position} for r in rows], "next_cursor": None}
    )


@router.get("/customers/{customer_id}/stage", response_model=StageOut, responses=errors(404), summary="Stage")
async def customer_stage(customer_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """The current stage and every stay before it (entered, left, by whom or which rule)."""
    current, history = await lifecycle.history(session, ctx, customer_id)
    return json_response(lifecycle.present(customer_id, current, history))


@router.post(
    "/customers/{customer_id}/stage", response_model=StageOut, responses=errors(404, 409), summary="Move by hand"
)
async def move_stage(customer_id: uuid.UUID, body: StageMove, ctx: CustomersWrite, session: Session) -> Response:
    """409 lists the stages the customer may move to from where it is."""
    await lifecycle.move(session, ctx, customer_id, body.stage, body.reason)
    current, history = await lifecycle.history(session, ctx, customer_id)
    return json_response(lifecycle.present(customer_id, current, history))


@router.get("/reports/lifecycle", response_model=LifecycleReport, responses=errors(), summary="Lifecycle report")
async def lifecycle_report(
    ctx: ReportsRead,
    session: Reader,
    at: Annotated[Timestamp | None, Query(description="Counts per stage at this moment; default 30 days ago")] = None,
    since: Annotated[Timestamp | None, Query(description="Funnel period start; default 90 days ago")] = None,
    until: Annotated[Timestamp | None, Query(description="Funnel period end; default now")] = None,
) -> Response:
    """Counts per stage now and at a date, moves between stages in a period, median days in stage,
    and retention by first-purchase month (share of the cohort buying in each of months 1-12)."""
    now = clock.now()
    data = await lifecycle.report(
        session, ctx, at=at or now - timedelta(days=30), since=since or now - timedelta(days=90), until=until or now
    )
    return json_response(data)


@router.get(
    "/lifecycle/rules", response_model=LifecycleRulesOut, responses=errors(), summary="The stage rules' thresholds"
)
async def get_lifecycle_rules(ctx: CustomersRead, session: Reader) -> Response:
    """Loyal at `loyal_orders` orders or `loyal_spend` net spend in the tier window; at risk after
    `at_risk_days` without a purchase, churned after `churned_days`."""
    return resource_response(await lifecycle.thresholds(session, ctx))


@router.put(
    "/lifecycle/rules", response_model=LifecycleRulesOut, responses=errors(), summary="Set the stage rules' thresholds"
)
async def set_lifecycle_rules(body: LifecycleRulesIn, ctx: ValueAdmin, session: Session) -> Response:
    """Admins only. The next pass applies them: the nightly one over every customer, and the one
    after each order for its customer. `at_risk_days` must be fewer than `churned_days`."""
    return resource_response(await lifecycle.set_thresholds(session, ctx, body.model_dump()))
