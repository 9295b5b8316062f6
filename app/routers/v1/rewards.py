"""Loyalty rewards and vouchers: /api/v1/rewards and /api/v1/vouchers."""

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    REQUIRED_IDEMPOTENCY_KEY,
    Cursor,
    CustomersRead,
    IdempotencyKey,
    IfMatch,
    Limit,
    LoyaltyAdmin,
    OrdersWrite,
    Reader,
    RequiredIdempotencyKey,
    Session,
)
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.loyalty_rewards import (
    RewardIn,
    RewardList,
    RewardOut,
    RewardPatch,
    RewardRedeemIn,
    VoucherIssueIn,
    VoucherList,
    VoucherOut,
    VoucherRedeemIn,
)
from app.services.loyalty import rewards, vouchers

router = APIRouter(prefix="/rewards", tags=["loyalty rewards"])
voucher_router = APIRouter(prefix="/vouchers", tags=["loyalty rewards"])


def _location(reward_id: object) -> str:
    return f"/api/v1/rewards/{reward_id}"


def _voucher_location(voucher_id: object) -> str:
    return f"/api/v1/vouchers/{voucher_id}"


@router.post("", status_code=201, response_model=RewardOut, responses=errors(), summary="Add a reward")
async def create_reward(
    request: Request, data: RewardIn, ctx: LoyaltyAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """What members redeem points for: a gift or a discount (an amount in the workspace currency,
    or a percentage), its stock (null: unlimited), a per-customer limit, the levels that may redeem
    it (codes of GET /loyalty/levels; 422 naming an unknown one) and its dates. Audited."""

    async def create() -> StoredResponse:
        reward = await rewards.create(session, ctx, data)
        return stored_resource(rewards.present(reward), location=_location(reward.id))

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=RewardList, responses=errors(), summary="List rewards")
async def list_rewards(
    ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first; deleted ones are not listed."""
    items, next_cursor = await rewards.list_rewards(session, ctx, limit=limit, cursor=cursor)
    return json_response({"items": [rewards.present(r) for r in items], "next_cursor": next_cursor})


@router.get("/{reward_id}", response_model=RewardOut, responses=errors(404), summary="Get a reward")
async def get_reward(reward_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(rewards.present(await rewards.get(session, ctx, reward_id)))


@router.patch("/{reward_id}", response_model=RewardOut, responses=errors(404, 412, 428), summary="Change a reward")
async def update_reward(
    reward_id: uuid.UUID, patch: RewardPatch, ctx: LoyaltyAdmin, session: Session, version: IfMatch
) -> Response:
    """Send the ETag you read as If-Match. `stock` sets the count left (a restock). Vouchers already
    issued keep the terms they were issued with. Audited."""
    return resource_response(
        rewards.present(await rewards.update(session, ctx, reward_id, patch, expected_version=version))
    )


@router.delete("/{reward_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete a reward")
async def delete_reward(reward_id: uuid.UUID, ctx: LoyaltyAdmin, session: Session, version: IfMatch) -> Response:
    """Soft: it can no longer be redeemed; vouchers issued stay good on their own terms."""
    await rewards.delete(session, ctx, reward_id, expected_version=version)
    return Response(status_code=204)


def _issued(issued: vouchers.Issued, shown_once: dict[str, Any]) -> StoredResponse:
    """The voucher as stored for a replay, without its code; the code goes in the first response only."""
    shown_once["code"] = issued.code
    return stored_resource(vouchers.present(issued.voucher), location=_voucher_location(issued.voucher.id))


@router.post(
    "/{reward_id}/redeem",
    status_code=201,
    response_model=VoucherOut,
    responses=errors(400, 404, 409, 410),
    summary="Redeem a reward for a customer",
    openapi_extra=REQUIRED_IDEMPOTENCY_KEY,
)
async def redeem_reward(
    request: Request,
    reward_id: uuid.UUID,
    data: RewardRedeemIn,
    ctx: OrdersWrite,
    session: Session,
    key: RequiredIdempotencyKey,
) -> Response:
    """A voucher for the customer: the reward's points taken from the member's available lots
    (a redemption, listed under /loyalty/redemptions), one unit of its stock taken. The response
    holds the voucher's whole code, once: a replay of the same Idempotency-Key (required, 400
    without) answers `code: null`. 409 `out-of-stock`, `not-enough-points` (with `available`) or
    `not-eligible` (another level, the per-customer limit reached, before `valid_from`); 410 after
    `valid_until`. A refusal changes nothing. `voucher.issued`, `loyalty.points_redeemed`."""
    shown_once: dict[str, Any] = {}

    async def create() -> StoredResponse:
        return _issued(await vouchers.redeem_reward(session, ctx, reward_id, data.customer_id), shown_once)

    return await idempotent(request, session, ctx, key, create, shown_once=shown_once)


@voucher_router.post("", status_code=201, response_model=VoucherOut, responses=errors(404), summary="Issue a voucher")
async def issue_voucher(
    request: Request, data: VoucherIssueIn, ctx: LoyaltyAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """A voucher by hand, for no points and no stock (a new-customer offer, a goodwill gesture);
    the reason is required and audited. The response holds the whole code, once. `voucher.issued`."""
    shown_once: dict[str, Any] = {}

    async def create() -> StoredResponse:
        return _issued(await vouchers.issue_by_hand(session, ctx, data), shown_once)

    return await idempotent(request, session, ctx, key, create, shown_once=shown_once)


@voucher_router.get("", response_model=VoucherList, responses=errors(), summary="List vouchers")
async def list_vouchers(
    ctx: CustomersRead,
    session: Reader,
    customer_id: uuid.UUID | None = None,
    status: Literal["issued", "redeemed", "voided", "expired"] | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first, of the customers the caller may see; by customer and status (`issued` is
    usable now, `expired` issued and past `expires_at`). Codes are never shown again."""
    items, next_cursor = await vouchers.list_vouchers(
        session, ctx, customer_id=customer_id, status=status, limit=limit, cursor=cursor
    )
    return json_response({"items": [vouchers.present(v) for v in items], "next_cursor": next_cursor})


@voucher_router.post(
    "/redeem", response_model=VoucherOut, responses=errors(404, 409, 410), summary="Spend a voucher on an order"
)
async def redeem_voucher(data: VoucherRedeemIn, ctx: OrdersWrite, session: Session) -> Response:
    """By its code, against an order of its own customer, once. 404 for a code unknown (or of a
    customer the caller may not see); 409 `voucher-spent` when used or voided; 410 `voucher-expired`;
    422 naming `order_id` for an order unknown or another customer's. `voucher.redeemed`."""
    return resource_response(vouchers.present(await vouchers.redeem_code(session, ctx, data.code, data.order_id)))


@voucher_router.get("/{voucher_id}", response_model=VoucherOut, responses=errors(404), summary="Get a voucher")
async def get_voucher(voucher_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """404 unless the caller may see its customer; the code is never shown again."""
    return resource_response(vouchers.present(await vouchers.get(session, ctx, voucher_id)))


@voucher_router.post(
    "/{voucher_id}/void", response_model=VoucherOut, responses=errors(404, 409), summary="Void a voucher"
)
async def void_voucher(voucher_id: uuid.UUID, ctx: OrdersWrite, session: Session) -> Response:
    """A voucher never spent (expired ones too) is voided: the points it cost go back to the lots
    they came from (its redemption cancelled) and its unit back to the reward's stock. 409
    `voucher-spent` when used or voided already. `voucher.voided`."""
    return resource_response(vouchers.present(await vouchers.void(session, ctx, voucher_id)))
