"""Customer value: /api/v1/customers/{id}/value, /api/v1/value-tiers, /api/v1/value/recompute,
/api/v1/reports/value."""

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from app.core import clock
from app.http.json_response import json_response
from app.routers.deps import CustomersRead, Reader, ReportsRead, Session, ValueAdmin
from app.routers.responses import csv_alternative, errors
from app.schemas.common import Timestamp
from app.schemas.order import CustomerValueOut, RecomputeOut, TierSettings, ValueReportOut, ValueTierList
from app.services.bulk import csv_export
from app.services.value import customer_values, value_reports, value_tiers

router = APIRouter(tags=["customer value"])


@router.get(
    "/customers/{customer_id}/value", response_model=CustomerValueOut, responses=errors(404), summary="Value figures"
)
async def customer_value(customer_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """Purchase figures, RFM scores and segment, tier, and lifetime value (historical and predicted)."""
    value = await customer_values.get_value(session, ctx, customer_id)
    return json_response(CustomerValueOut.model_validate(value).model_dump(mode="json"))


@router.get("/value-tiers", response_model=ValueTierList, responses=errors(), summary="The tier rules")
async def get_tiers(ctx: CustomersRead, session: Session) -> Response:
    """Defaults to A (≥ 10,000 net spend in the window), B (≥ 2,000) and C (the rest)."""
    tiers, window = await value_tiers.list_tiers(session, ctx)
    return json_response({"items": tiers, "window_days": window})


@router.put("/value-tiers", response_model=ValueTierList, responses=errors(), summary="Replace the tier rules")
async def put_tiers(settings: TierSettings, ctx: ValueAdmin, session: Session) -> Response:
    """A customer gets the best-ranked tier whose every rule holds; the new rules apply at the
    recompute this requests (run by the worker)."""
    tiers, window = await value_tiers.replace(session, ctx, settings)
    return json_response({"items": tiers, "window_days": window})


@router.post(
    "/value/recompute", status_code=202, response_model=RecomputeOut, responses=errors(), summary="Recompute now"
)
async def request_recompute(ctx: ValueAdmin, session: Session) -> Response:
    """Queues a full recompute of figures, RFM, tiers and lifetime value for the workspace; the
    worker runs it (and runs one every 24 hours regardless)."""
    requested_at = await customer_values.request_recompute(session, ctx)
    return json_response({"status": "queued", "requested_at": requested_at}, status_code=202)


@router.get(
    "/reports/value",
    response_model=ValueReportOut,
    responses=errors() | csv_alternative(),
    summary="Value report (JSON or CSV)",
)
async def value_report(
    ctx: ReportsRead,
    session: Reader,
    since: Annotated[Timestamp | None, Query(description="Tier migration from; default 30 days ago")] = None,
    until: Annotated[Timestamp | None, Query(description="Tier migration to; default now")] = None,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Customers and revenue by tier and by RFM segment, tier moves between two moments, and the
    top customers by spend — over the customers the caller may see. `Accept: text/csv` for CSV."""
    now = clock.now()
    since_at = since or now - timedelta(days=30)
    data = await value_reports.value_report(session, ctx, since=since_at, until=until or now, top=top)
    if accept and "text/csv" in accept:
        return Response(csv_export.render(value_reports.as_csv_rows(data)), media_type="text/csv; charset=utf-8")
    return json_response(data)
