"""Orders: /api/v1/orders and /api/v1/customers/{id}/orders."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    Cursor,
    CustomersRead,
    IdempotencyKey,
    IfMatch,
    Limit,
    OrdersWrite,
    Reader,
    Session,
)
from app.routers.responses import errors, existing, idempotent, resource_response, stored
from app.schemas.common import Timestamp
from app.schemas.customer import BatchResponse
from app.schemas.order import (
    FulfilmentHistoryPage,
    FulfilmentIn,
    OrderBatch,
    OrderIn,
    OrderOut,
    OrderPage,
    OrderQuery,
    OrderSearch,
    OrderSort,
    OrderStatus,
)
from app.services.value import orders

router = APIRouter(tags=["orders"])


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    responses=errors(404) | existing(OrderOut, "Known by (`source`, `external_id`): the stored order, updated"),
    summary="Create or update an order",
)
async def upsert_order(
    request: Request, data: OrderIn, ctx: OrdersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Keyed by (`source`, `external_id`): 201 when new, 200 when the stored order was updated or
    already matched. Lines must add up to the total, in the workspace currency with its decimals.
    The customer's value figures, scores and tier are updated in the same transaction."""

    async def create() -> StoredResponse:
        order, lines, created = await orders.upsert(session, ctx, data)
        headers = {"ETag": f'"{order.version}"'}
        if created:
            headers["Location"] = f"/api/v1/orders/{order.id}"
        return stored(201 if created else 200, orders.present(order, lines), headers)

    return await idempotent(request, session, ctx, key, create)


@router.post(
    "/orders/batch", status_code=207, response_model=BatchResponse, responses=errors(413), summary="Up to 100 orders"
)
async def upsert_orders(batch: OrderBatch, ctx: OrdersWrite, session: Session) -> Response:
    """Each order in its own savepoint; `results[i].status` is 201, 200 or the item's problem."""
    return json_response(await orders.upsert_many(session, ctx, batch.items), status_code=207)


@router.get("/orders/{order_id}", response_model=OrderOut, responses=errors(404), summary="Get an order")
async def get_order(order_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    order, lines = await orders.get(session, ctx, order_id)
    return resource_response(orders.present(order, lines))


@router.get(
    "/customers/{customer_id}/orders", response_model=OrderPage, responses=errors(404), summary="A customer's orders"
)
async def customer_orders(
    customer_id: uuid.UUID,
    ctx: CustomersRead,
    session: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    ordered_from: Timestamp | None = None,
    ordered_to: Timestamp | None = None,
    status: OrderStatus | None = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Newest first; filters by date range, status, and category (any line in it)."""
    page, next_cursor = await orders.list_for_customer(
        session,
        ctx,
        customer_id,
        limit=limit,
        cursor=cursor,
        ordered_from=ordered_from,
        ordered_to=ordered_to,
        status=status,
        category=category,
    )
    return json_response({"items": [orders.present(o, lines) for o, lines in page], "next_cursor": next_cursor})


@router.get("/orders", response_model=OrderPage, responses=errors(), summary="List and filter orders")
async def list_orders(
    ctx: CustomersRead,
    session: Reader,
    filters: Annotated[OrderQuery, Query()],
    sort: Annotated[OrderSort, Query(description="`-ordered_at` (newest first) or `ordered_at`.")] = "-ordered_at",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The orders of the customers the caller may see. Every filter given narrows the list; a
    repeated one matches any of its values. Amounts compare with `total_amount`; `category` finds
    orders with a line in it. For long filters, POST /orders/search takes the same in a JSON body."""
    page, next_cursor = await orders.list_orders(
        session, ctx, filters, sort=sort, limit=limit, cursor=cursor, loc="query"
    )
    return json_response({"items": [orders.present(o, lines) for o, lines in page], "next_cursor": next_cursor})


@router.post("/orders/search", response_model=OrderPage, responses=errors(), summary="Search orders")
async def search_orders(body: OrderSearch, ctx: CustomersRead, session: Reader) -> Response:
    """GET /orders with its filters, sort and page in a JSON body, for filters too long for a URL.
    A cursor of either route serves the other with the same sort."""
    page, next_cursor = await orders.list_orders(
        session, ctx, body, sort=body.sort, limit=body.limit, cursor=body.cursor, loc="body"
    )
    return json_response({"items": [orders.present(o, lines) for o, lines in page], "next_cursor": next_cursor})


@router.post(
    "/orders/{order_id}/fulfilment",
    response_model=OrderOut,
    responses=errors(404, 409, 412, 428),
    summary="Move an order's fulfilment",
)
async def change_order_fulfilment(
    order_id: uuid.UUID, body: FulfilmentIn, ctx: OrdersWrite, session: Session, version: IfMatch
) -> Response:
    """pending → paid, shipped or cancelled; paid → shipped, delivered or cancelled; shipped →
    delivered or returned; delivered → returned. Staying puts a new tracking reference alone.
    409 names the allowed moves. Each change is in the order's fulfilment history, an
    `order.fulfilment_changed` event and the audit log."""
    order, lines = await orders.change_fulfilment(session, ctx, order_id, body, expected_version=version)
    return resource_response(orders.present(order, lines))


@router.get(
    "/orders/{order_id}/fulfilment-history",
    response_model=FulfilmentHistoryPage,
    responses=errors(404),
    summary="An order's fulfilment history",
)
async def list_order_fulfilment_history(
    order_id: uuid.UUID, ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Oldest first: the order's first status (`from_status` null), then every change."""
    changes, next_cursor = await orders.fulfilment_history(session, ctx, order_id, limit=limit, cursor=cursor)
    return json_response({"items": [orders.present_change(c) for c in changes], "next_cursor": next_cursor})
