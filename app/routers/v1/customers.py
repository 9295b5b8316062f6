"""Customer routes: /api/v1/customers."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from app.core.errors import ValidationFailed
from app.core.idempotency import Claim, StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    AuditRead,
    Autocommit,
    Cursor,
    CustomersDelete,
    CustomersRead,
    CustomersWrite,
    IdempotencyKey,
    IfMatch,
    Limit,
    Reader,
    Session,
)
from app.routers.responses import errors, idempotent, idempotent_statement, resource_response, stored
from app.schemas.common import Tag, Timestamp
from app.schemas.customer import (
    AuditPage,
    BatchCreate,
    BatchResponse,
    BatchUpdate,
    CustomerCreate,
    CustomerOut,
    CustomerPage,
    CustomerPatch,
    DuplicatePage,
    MergeIn,
    MergeOut,
    MergeUndone,
)
from app.services.customers import customer_batches, customer_merges, customer_search, customers
from app.services.customers.customer_output import present, present_page
from app.services.customers.customer_search import CustomerQuery, SortKey
from app.services.events import audit

router = APIRouter(prefix="/customers", tags=["customers"])

CustomerId = Annotated[uuid.UUID, "customer id"]
CUSTOM_FILTER_PREFIX = "custom."


async def customer_query(
    request: Request,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[SortKey, Query(description="Sort key; `-` for descending.")] = "-created_at",
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description=(
                "Search text. Matches any part of the name, company, code, email or phone (email and phone "
                "only with `customers:pii`), case-insensitively: any two adjacent Chinese characters "
                "(`小明` finds 王小明, `腾达` finds 深圳腾达科技), otherwise three characters or more. A phone "
                "number may be written as a create accepts it (`139 1234 5678`, `+86 139 1234 5678`, "
                "`021-62345678`) or in part (`139-1234`): a whole number finds its holder, a part the "
                "customers whose digits contain it. Order: the customer whose email is exactly the query "
                "first, then the others by id (oldest first). One character, or two "
                "without a Chinese pair, match the start of the name, in name order. When nothing "
                "contains the query, similarly spelled customers come by similarity."
            ),
        ),
    ] = None,
    tag: Annotated[list[Tag] | None, Query(max_length=20, description="Has every tag given.")] = None,
    owner_id: uuid.UUID | None = None,
    city: Annotated[str | None, Query(max_length=100)] = None,
    source: Annotated[str | None, Query(max_length=64)] = None,
    kind: Literal["individual", "company"] | None = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
    deleted: Annotated[
        Literal["exclude", "only"], Query(description="`only` lists soft-deleted customers (to restore).")
    ] = "exclude",
    tier: Annotated[str | None, Query(max_length=16, description="Value tier code, e.g. A.")] = None,
    rfm_segment: Annotated[str | None, Query(max_length=32, description="e.g. Champions, At risk.")] = None,
) -> CustomerQuery:
    """Also takes `custom.<key>=<value>` to filter on a custom field."""
    custom = {
        key[len(CUSTOM_FILTER_PREFIX) :]: value
        for key, value in request.query_params.multi_items()
        if key.startswith(CUSTOM_FILTER_PREFIX)
    }
    for key, value in [*custom.items(), ("q", q or ""), ("city", city or ""), ("source", source or "")]:
        if "\x00" in key or "\x00" in value or len(value) > 200:
            raise ValidationFailed("Query values must be under 200 characters, without NUL.", loc=["query", key])
    return CustomerQuery(
        limit=limit,
        cursor=cursor,
        sort=sort,
        q=q,
        tags=tag or [],
        owner_id=owner_id,
        city=city,
        source=source,
        kind=kind,
        created_after=created_after,
        created_before=created_before,
        deleted=deleted,
        custom=custom,
        tier=tier,
        rfm_segment=rfm_segment,
    )


@router.post(
    "",
    status_code=201,
    response_model=CustomerOut,
    responses=errors(409, 413),
    summary="Create a customer",
)
async def create_customer(
    request: Request, data: CustomerCreate, ctx: CustomersWrite, session: Autocommit, key: IdempotencyKey
) -> Response:
    """Emails and phones are normalised (lower case, E.164); one already held by another customer
    is a 409 naming that customer. The code comes from the workspace pattern."""

    async def create(claim: Claim | None) -> StoredResponse:
        new = await customers.build(session, ctx, data)
        customer = new.customer
        # Rendered before the write, which stores it with the code it takes: the code is filled in after.
        headers = {"ETag": f'"{customer.version}"', "Location": f"{request.url.path}/{customer.id}"}
        response = stored(201, present(customer, ctx), headers)
        remember = (claim, response) if claim else None
        await customers.write_new(session, ctx, new, remember=remember, own_transaction=True)
        response.body["code"] = customer.code
        return response

    return await idempotent_statement(request, session, ctx, key, create)


@router.post(
    "/batch",
    status_code=207,
    response_model=BatchResponse,
    responses=errors(413),
    summary="Create up to 100 customers",
)
async def create_customers(
    request: Request, batch: BatchCreate, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Each item succeeds or fails alone; `results[i].status` is 201 or the item's problem status."""

    async def create() -> StoredResponse:
        return stored(207, await customer_batches.create_many(session, ctx, batch.items))

    return await idempotent(request, session, ctx, key, create)


@router.patch(
    "/batch", status_code=207, response_model=BatchResponse, responses=errors(413), summary="Update up to 100"
)
async def update_customers(batch: BatchUpdate, ctx: CustomersWrite, session: Session) -> Response:
    """Each item carries the `version` it read; a stale one is a 412 for that item alone."""
    return json_response(await customer_batches.update_many(session, ctx, batch.items), status_code=207)


@router.get("", response_model=CustomerPage, responses=errors(), summary="List and search customers")
async def list_customers(
    ctx: CustomersRead, session: Reader, query: Annotated[CustomerQuery, Depends(customer_query)]
) -> Response:
    """Cursor-paginated. With `q`, the customers containing it (see `q` for what matches and the
    order), or when none does, similar ones. `custom.<key>=<value>` filters a custom field."""
    rows, next_cursor = await customer_search.list_customers(session, ctx, query)
    return json_response(present_page(rows, next_cursor, ctx))


@router.get("/duplicates", response_model=DuplicatePage, responses=errors(), summary="Candidate duplicates")
async def find_duplicates(
    ctx: CustomersRead,
    # Not the autocommit reader: the scan sets its own statement timeout and memory for one transaction.
    session: Session,
    threshold: Annotated[float, Query(ge=0.1, le=1.0, description="Name similarity (trigrams), 0-1")] = 0.5,
    limit: Limit = DEFAULT_LIMIT,
) -> Response:
    """Groups of customers with similar names in the same company or city (emails and phones are
    unique already), with a score and the reasons."""
    groups = await customer_merges.find_duplicates(session, ctx, threshold=threshold, limit=limit)
    return json_response({"items": groups, "next_cursor": None})


@router.get("/{customer_id}", response_model=CustomerOut, responses=errors(404), summary="Get a customer")
async def get_customer(customer_id: CustomerId, ctx: CustomersRead, session: Reader) -> Response:
    """The ETag is the customer's version: send it as If-Match to change or delete."""
    return resource_response(present(await customers.get(session, ctx, customer_id), ctx))


def route_of(endpoint: Callable[..., Awaitable[Response]]) -> APIRoute:
    """A route's own object, for the read lane (app/http/read_lane.py) that answers in front of it."""
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)


@router.patch(
    "/{customer_id}",
    response_model=CustomerOut,
    responses=errors(404, 409, 412, 428),
    summary="Update a customer",
)
async def update_customer(
    customer_id: CustomerId, patch: CustomerPatch, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    """Only fields sent change; null clears. `address` and `consent` merge field by field;
    `custom_fields` merges key by key (null removes a key)."""
    customer = await customers.update(session, ctx, customer_id, patch, expected_version=version)
    return resource_response(present(customer, ctx))


@router.delete("/{customer_id}", status_code=204, responses=errors(404, 412, 428), summary="Soft-delete a customer")
async def delete_customer(
    customer_id: CustomerId, ctx: CustomersDelete, session: Session, version: IfMatch
) -> Response:
    """The customer leaves every list and frees its emails and phones; restore brings it back."""
    await customers.soft_delete(session, ctx, customer_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/{customer_id}/restore",
    response_model=CustomerOut,
    responses=errors(404, 409),
    summary="Restore a soft-deleted customer",
)
async def restore_customer(customer_id: CustomerId, ctx: CustomersDelete, session: Session) -> Response:
    """409 if another customer took one of its emails or phones meanwhile."""
    return resource_response(present(await customers.restore(session, ctx, customer_id), ctx))


@router.get("/{customer_id}/audit", response_model=AuditPage, responses=errors(404), summary="A customer's audit log")
async def customer_audit(
    customer_id: CustomerId, ctx: AuditRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first: who changed what, when, with before and after per field."""
    await customers.get(session, ctx, customer_id, include_deleted=True)
    entries, next_cursor = await audit.list_for(
        session, ctx, entity_type="customer", entity_id=customer_id, limit=limit, cursor=cursor
    )
    return json_response({"items": [audit.present(e, ctx) for e in entries], "next_cursor": next_cursor})


@router.post(
    "/{customer_id}/merge", response_model=MergeOut, responses=errors(404, 409), summary="Merge customers into this one"
)
async def merge_customers(customer_id: CustomerId, body: MergeIn, ctx: CustomersDelete, session: Session) -> Response:
    """Absorbs up to 10 customers: their interactions, tasks, tickets, orders, stage and tier history,
    segment memberships, audit entries, emails, phones and tags move here; `fields` picks values from
    the absorbed ones. They are soft-deleted; `customer.merged` is emitted. Undo within 24 hours."""
    record = await customer_merges.merge(session, ctx, customer_id, body.absorb, body.fields)
    return json_response(
        {"merge_id": record.id, "survivor_id": record.survivor_id, "absorbed_ids": record.absorbed_ids}
    )


@router.post(
    "/merges/{merge_id}/undo", response_model=MergeUndone, responses=errors(404, 409), summary="Undo a merge (24 hours)"
)
async def undo_merge(merge_id: uuid.UUID, ctx: CustomersDelete, session: Session) -> Response:
    record = await customer_merges.undo(session, ctx, merge_id)
    return json_response({"merge_id": record.id, "undone_at": record.undone_at})
