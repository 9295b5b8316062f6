"""Loyalty: the program and levels, members' accounts and ledgers, adjustments, redemptions, level reviews."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    REQUIRED_IDEMPOTENCY_KEY,
    Cursor,
    CustomersRead,
    CustomersWrite,
    IdempotencyKey,
    IfMatch,
    Limit,
    LoyaltyAdmin,
    OrdersWrite,
    Reader,
    RequiredIdempotencyKey,
    Session,
)
from app.routers.responses import errors, idempotent, resource_response, stored
from app.schemas.common import Page
from app.schemas.loyalty import (
    AccountOut,
    ActionIn,
    AdjustmentIn,
    AdjustmentOut,
    EnrolmentOut,
    EntryOut,
    LevelsIn,
    LevelsOut,
    ProgramIn,
    ProgramOut,
    RedemptionIn,
    RedemptionOut,
    ReviewOut,
)
from app.services.loyalty import actions, enrolment, levels, members, programs

router = APIRouter(tags=["loyalty"])


@router.get("/loyalty/program", response_model=ProgramOut, responses=errors(), summary="The loyalty program")
async def get_loyalty_program(ctx: CustomersRead, session: Reader) -> Response:
    """Earn rate and multipliers, pending days, expiry and enrolment; version 0 (nothing earns) until saved."""
    return resource_response(await programs.get_program(session, ctx))


@router.put(
    "/loyalty/program", response_model=ProgramOut, responses=errors(412, 428), summary="Replace the loyalty program"
)
async def put_loyalty_program(data: ProgramIn, ctx: LoyaltyAdmin, session: Session, if_match: IfMatch) -> Response:
    """The whole document, with the ETag read as If-Match (`*` or `0` for the first save). Applies to
    orders written from now on; points already earned keep their lots. Audited."""
    return resource_response(await programs.put_program(session, ctx, data, expected_version=if_match))


@router.get("/loyalty/levels", response_model=LevelsOut, responses=errors(), summary="The membership levels")
async def get_loyalty_levels(ctx: CustomersRead, session: Reader) -> Response:
    """Lowest first, with what qualifies for each and its benefits."""
    return resource_response(await programs.get_levels(session, ctx))


@router.put(
    "/loyalty/levels", response_model=LevelsOut, responses=errors(412, 428), summary="Replace the membership levels"
)
async def put_loyalty_levels(data: LevelsIn, ctx: LoyaltyAdmin, session: Session, if_match: IfMatch) -> Response:
    """The whole ordered list, with the ETag read as If-Match. Members move at the next review
    (`POST /loyalty/levels/review` runs one now). A `value_tier` must name one of the workspace's value
    tiers. A member's new tickets open at least at the level's `ticket_priority`, timed by the SLA
    policies of the level's `value_tier` when it ranks above the customer's own. Audited."""
    return resource_response(await programs.put_levels(session, ctx, data, expected_version=if_match))


@router.post(
    "/loyalty/levels/review", response_model=ReviewOut, responses=errors(), summary="Review members' levels now"
)
async def review_loyalty_levels(ctx: LoyaltyAdmin, session: Session) -> Response:
    """What the nightly review does, for this workspace at once: `loyalty.level_changed` per move."""
    done = await levels.review(session, ctx)
    return json_response({"reviewed": done.reviewed, "changed": done.changed})


@router.get(
    "/customers/{customer_id}/loyalty", response_model=AccountOut, responses=errors(404), summary="A member's points"
)
async def get_customer_loyalty(customer_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """Available and pending points, the next expiry, the level and the way to the next one. A
    customer who is not a member answers `member: false` with zeros."""
    return json_response(await members.account(session, ctx, customer_id))


@router.get(
    "/customers/{customer_id}/loyalty/ledger",
    response_model=Page[EntryOut],
    responses=errors(404),
    summary="A member's points ledger",
)
async def list_customer_loyalty_ledger(
    customer_id: uuid.UUID, ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Every movement, newest first; the balance is their sum."""
    items, next_cursor = await members.ledger(session, ctx, customer_id, limit=limit, cursor=cursor)
    return json_response({"items": items, "next_cursor": next_cursor})


@router.post(
    "/loyalty/adjustments",
    response_model=AdjustmentOut,
    responses=errors(404, 409),
    summary="Adjust a member's points by hand",
)
async def create_loyalty_adjustment(
    request: Request, data: AdjustmentIn, ctx: LoyaltyAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """Points added (available at once; a customer who is not a member is enrolled) or taken
    (oldest first; 409 with `available` when there are too few). The reason is required; audited,
    `loyalty.points_adjusted`. 200 with the ledger entry and the member's balance after it (an entry
    is read in the member's ledger, not on its own); Idempotency-Key makes a retry safe."""

    async def create() -> StoredResponse:
        return stored(200, await members.adjust(session, ctx, data))

    return await idempotent(request, session, ctx, key, create)


def _redemption_location(redemption_id: object) -> str:
    return f"/api/v1/loyalty/redemptions/{redemption_id}"


@router.post(
    "/loyalty/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    responses=errors(400, 404, 409),
    summary="Redeem a member's points",
    openapi_extra=REQUIRED_IDEMPOTENCY_KEY,
)
async def create_loyalty_redemption(
    request: Request, data: RedemptionIn, ctx: OrdersWrite, session: Session, key: RequiredIdempotencyKey
) -> Response:
    """Points for a discount or gift, taken from the available lots oldest first. Idempotency-Key
    is required (400 without). 409 with `available` when the member has too few; nothing changes.
    `loyalty.points_redeemed`."""

    async def create() -> StoredResponse:
        redemption = members.present_redemption(await members.redeem(session, ctx, data))
        return stored(201, redemption, {"Location": _redemption_location(redemption["id"]), "ETag": '"1"'})

    return await idempotent(request, session, ctx, key, create)


@router.get("/loyalty/redemptions", response_model=Page[RedemptionOut], responses=errors(), summary="Redemptions")
async def list_loyalty_redemptions(
    ctx: CustomersRead,
    session: Reader,
    customer_id: uuid.UUID | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first, of the customers the caller may see; `customer_id` for one member's."""
    rows, next_cursor = await members.list_redemptions(
        session, ctx, customer_id=customer_id, limit=limit, cursor=cursor
    )
    return json_response({"items": [members.present_redemption(r) for r in rows], "next_cursor": next_cursor})


@router.get(
    "/loyalty/redemptions/{redemption_id}", response_model=RedemptionOut, responses=errors(404), summary="A redemption"
)
async def get_loyalty_redemption(redemption_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """404 unless the caller may see its member."""
    return resource_response(members.present_redemption(await members.get(session, ctx, redemption_id)))


@router.post(
    "/loyalty/redemptions/{redemption_id}/cancel",
    response_model=RedemptionOut,
    responses=errors(404, 409),
    summary="Cancel a redemption",
)
async def cancel_loyalty_redemption(redemption_id: uuid.UUID, ctx: OrdersWrite, session: Session) -> Response:
    """The points go back to the lots they were taken from, keeping those lots' expiry (a lot past
    it is written off at the next expiry run). 409 when cancelled already. `loyalty.points_redeemed`
    with kind `redeem_cancel`."""
    return resource_response(members.present_redemption(await members.cancel(session, ctx, redemption_id)))


@router.post(
    "/customers/{customer_id}/loyalty/enrolment",
    response_model=AccountOut,
    responses=errors(404),
    summary="Enrol a customer in the loyalty program",
)
async def enrol_customer_in_loyalty(customer_id: uuid.UUID, ctx: CustomersWrite, session: Session) -> Response:
    """200 with the member's account (read again at `GET /customers/{id}/loyalty`), whether this call
    enrolled the customer or the customer was a member already: a retry is safe and concurrent calls
    make one account (`enrolled_at` tells when). A customer who left comes back with no points.
    Audited when it enrols."""
    return json_response(await enrolment.enrol(session, ctx, customer_id))


@router.delete(
    "/customers/{customer_id}/loyalty/enrolment",
    response_model=EnrolmentOut,
    responses=errors(404),
    summary="Take a customer out of the loyalty program",
)
async def leave_loyalty(customer_id: uuid.UUID, ctx: LoyaltyAdmin, session: Session) -> Response:
    """The points the member holds are forfeited (`loyalty.points_adjusted`, kind `forfeit`) and the
    account, its ledger, lots and redemptions are removed; automatic enrolment does not take the
    customer back (enrolling here does). 404 when not a member. Audited."""
    return json_response(await enrolment.leave(session, ctx, customer_id))


@router.post(
    "/loyalty/actions",
    response_model=AdjustmentOut,
    responses=errors(404, 409),
    summary="Award points for a named action",
)
async def create_loyalty_action(
    request: Request, data: ActionIn, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """The points the program gives `action` (422 when it names no such action), once per customer,
    action and reference: 409 with `existing_id` (the ledger entry) for a repeat, however many come
    at once. 409 too when the program is off or the customer is not a member of an `explicit`
    program. `loyalty.points_earned` with kind `action`; 200 with the entry and the balance after it."""

    async def create() -> StoredResponse:
        return stored(200, await actions.award(session, ctx, data))

    return await idempotent(request, session, ctx, key, create)
