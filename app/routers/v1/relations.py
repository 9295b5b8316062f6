"""Relations between customers: /api/v1/customers/{id}/relations."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    Cursor,
    CustomersRead,
    CustomersWrite,
    IdempotencyKey,
    Limit,
    Reader,
    Session,
)
from app.routers.responses import errors, idempotent, stored
from app.schemas.relation import RelationIn, RelationKind, RelationOut, RelationPage
from app.services.customers import relations

router = APIRouter(prefix="/customers/{customer_id}/relations", tags=["customer relations"])


def _location(customer_id: uuid.UUID, relation_id: object) -> str:
    return f"/api/v1/customers/{customer_id}/relations/{relation_id}"


@router.post(
    "",
    status_code=201,
    response_model=RelationOut,
    responses=errors(404, 409),
    summary="Relate this customer to another",
)
async def add_customer_relation(
    request: Request,
    customer_id: uuid.UUID,
    data: RelationIn,
    ctx: CustomersWrite,
    session: Session,
    key: IdempotencyKey,
) -> Response:
    """This customer becomes `kind` of `to_customer_id`: `contact_of` (a person to a company),
    `subsidiary_of` (a company to its parent), `referred_by` (one referrer per customer) or
    `family_of` (people, either way round). 404 when either customer is not one the caller may see;
    422 for a relation to itself or ends of the wrong kind; 409 naming the existing relation in
    `existing_id` for a repeat or a second referrer, and 409 for a subsidiary or referral cycle.
    Both customers' timelines show it; `customer.relation_added` is emitted."""

    async def create() -> StoredResponse:
        relation = await relations.add(session, ctx, customer_id, data)
        return stored(201, relation, {"Location": _location(customer_id, relation["id"])})

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=RelationPage, responses=errors(404), summary="A customer's relations")
async def list_customer_relations(
    customer_id: uuid.UUID,
    ctx: CustomersRead,
    session: Reader,
    kind: RelationKind | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Both directions, newest first, each with its `direction` seen from this customer and the
    customer at the other end. Relations to customers the caller may not see are not listed."""
    items, next_cursor = await relations.list_for(
        session, ctx, customer_id, kind=kind.value if kind else None, limit=limit, cursor=cursor
    )
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get("/{relation_id}", response_model=RelationOut, responses=errors(404), summary="A relation")
async def get_customer_relation(
    customer_id: uuid.UUID, relation_id: uuid.UUID, ctx: CustomersRead, session: Reader
) -> Response:
    """As listed: 404 unless the caller may see the customers at both ends."""
    return json_response(await relations.get(session, ctx, customer_id, relation_id))


@router.delete("/{relation_id}", status_code=204, responses=errors(404), summary="Remove a relation")
async def remove_customer_relation(
    customer_id: uuid.UUID, relation_id: uuid.UUID, ctx: CustomersWrite, session: Session
) -> Response:
    """A relation has nothing to change, so no version and no If-Match: removing it again is a 404.
    Needs only this customer to be visible (the other end may be one the caller cannot see).
    `customer.relation_removed` is emitted."""
    await relations.remove(session, ctx, customer_id, relation_id)
    return Response(status_code=204)
