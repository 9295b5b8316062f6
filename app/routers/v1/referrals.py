"""Referrals (/api/v1/referrals) and the loyalty report (/api/v1/reports/loyalty)."""

import uuid
from datetime import timedelta

from fastapi import APIRouter
from starlette.responses import Response

from app.core import clock
from app.core.errors import ValidationFailed
from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, CustomersRead, Limit, Reader, ReportsRead
from app.routers.responses import errors, resource_response
from app.schemas.common import Page, Timestamp
from app.schemas.referral import LoyaltyReportOut, ReferralOut, ReferralStatus
from app.services.loyalty import referrals, reports

router = APIRouter(tags=["loyalty"])


@router.get("/referrals", response_model=Page[ReferralOut], responses=errors(), summary="Referrals")
async def list_referrals(
    ctx: CustomersRead,
    session: Reader,
    referrer_id: uuid.UUID | None = None,
    status: ReferralStatus | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first, of the referees the caller may see; `referrer_id` for one referrer's, `status`
    for one stage (`refused` ones carry their `reason`)."""
    rows, next_cursor = await referrals.list_referrals(
        session, ctx, referrer_id=referrer_id, status=status, limit=limit, cursor=cursor
    )
    return json_response({"items": [referrals.present(r) for r in rows], "next_cursor": next_cursor})


@router.get("/referrals/{referral_id}", response_model=ReferralOut, responses=errors(404), summary="A referral")
async def get_referral(referral_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """404 unless the caller may see its referee."""
    return resource_response(referrals.present(await referrals.get(session, ctx, referral_id)))


@router.get("/reports/loyalty", response_model=LoyaltyReportOut, responses=errors(), summary="Loyalty report")
async def loyalty_report(
    ctx: ReportsRead, session: Reader, since: Timestamp | None = None, until: Timestamp | None = None
) -> Response:
    """Points liability now (balance, available, pending, expired not yet written off); points
    earned, reversed, redeemed, expired and adjusted and level moves up and down per month of the
    workspace's time zone; members per level; the funnel of the referrals made in the period
    (referred, qualified, rewarded, refused by reason). Default: the 365 days before `until` (now)."""
    now = clock.now()
    since, until = since or (until or now) - timedelta(days=365), until or now
    if until <= since:
        raise ValidationFailed("until must be after since.", loc=["query", "until"])
    return json_response(await reports.loyalty_report(session, ctx, since=since, until=until))
