"""Webhook endpoints and their delivery log: /api/v1/webhook-endpoints."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, IdempotencyKey, IfMatch, Limit, Reader, Session, WebhooksWrite
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.event import (
    AttemptList,
    DeliveryOut,
    DeliveryPage,
    DeliveryState,
    EndpointCreate,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
    Redeliver,
    RedeliverOut,
)
from app.services.events import webhook_endpoints

router = APIRouter(prefix="/webhook-endpoints", tags=["webhooks"])


@router.post("", status_code=201, response_model=EndpointWithSecret, responses=errors(), summary="Add an endpoint")
async def create_endpoint(
    request: Request, data: EndpointCreate, ctx: WebhooksWrite, session: Session, key: IdempotencyKey
) -> Response:
    """The response holds the signing secret (`whsec_…`) once (and in its Idempotency-Key's replay:
    the endpoint keeps the secret to sign with anyway). URLs that resolve to loopback, private,
    link-local or metadata addresses are refused (422) unless the operator allows them."""

    async def create() -> StoredResponse:
        endpoint = await webhook_endpoints.create(session, ctx, data)
        body = {**webhook_endpoints.present(endpoint), "secret": endpoint.secret}
        return stored_resource(body, location=f"/api/v1/webhook-endpoints/{endpoint.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=EndpointList, responses=errors(), summary="List endpoints")
async def list_endpoints(ctx: WebhooksWrite, session: Reader) -> Response:
    return json_response(
        {"items": [webhook_endpoints.present(e) for e in await webhook_endpoints.list_all(session, ctx)]}
    )


@router.get("/{endpoint_id}", response_model=EndpointOut, responses=errors(404), summary="Get an endpoint")
async def get_endpoint(endpoint_id: uuid.UUID, ctx: WebhooksWrite, session: Reader) -> Response:
    return resource_response(webhook_endpoints.present(await webhook_endpoints.get(session, ctx, endpoint_id)))


@router.patch(
    "/{endpoint_id}", response_model=EndpointOut, responses=errors(404, 412, 428), summary="Change an endpoint"
)
async def update_endpoint(
    endpoint_id: uuid.UUID, patch: EndpointPatch, ctx: WebhooksWrite, session: Session, version: IfMatch
) -> Response:
    """`enabled: true` re-enables a disabled endpoint and clears its failing streak; the deliveries
    held while it was disabled then go out, each with a fresh retry schedule. `enabled: false`
    holds its deliveries until then."""
    endpoint = await webhook_endpoints.update(session, ctx, endpoint_id, patch, expected_version=version)
    return resource_response(webhook_endpoints.present(endpoint))


@router.delete("/{endpoint_id}", status_code=204, responses=errors(404, 412, 428), summary="Remove an endpoint")
async def delete_endpoint(endpoint_id: uuid.UUID, ctx: WebhooksWrite, session: Session, version: IfMatch) -> Response:
    await webhook_endpoints.delete(session, ctx, endpoint_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=EndpointWithSecret,
    responses=errors(404, 409),
    summary="Rotate the signing secret",
)
async def rotate_secret(endpoint_id: uuid.UUID, ctx: WebhooksWrite, session: Session) -> Response:
    """Returns the new secret once. For `GUANXI_WEBHOOK_SECRET_OVERLAP_HOURS` the replaced secret
    keeps signing beside the new one, so receivers can switch without a gap; a second rotation
    within that time keeps both earlier secrets signing, each for its own overlap. 409 while five
    replaced secrets still sign."""
    endpoint = await webhook_endpoints.rotate_secret(session, ctx, endpoint_id)
    return resource_response({**webhook_endpoints.present(endpoint), "secret": endpoint.secret})


@router.post(
    "/{endpoint_id}/ping", status_code=202, response_model=DeliveryOut, responses=errors(404), summary="Send a test"
)
async def ping_endpoint(endpoint_id: uuid.UUID, ctx: WebhooksWrite, session: Session) -> Response:
    """Queues a `webhook.ping` event to this endpoint only; follow it in the delivery log."""
    delivery = await webhook_endpoints.ping(session, ctx, endpoint_id)
    return json_response(webhook_endpoints.present_delivery(delivery, "webhook.ping"), status_code=202)


@router.post(
    "/{endpoint_id}/redeliver",
    status_code=202,
    response_model=RedeliverOut,
    responses=errors(404),
    summary="Deliver events again",
)
async def redeliver_deliveries(
    endpoint_id: uuid.UUID, body: Redeliver, ctx: WebhooksWrite, session: Session
) -> Response:
    """One event (`event_id`) or every subscribed event in `[since, until)`, sent again with the same
    `webhook-id` (receivers deduplicate on it) and a fresh retry schedule: a `failed` delivery of
    the log is sent again by its `event_id`. Held while the endpoint is disabled."""
    scheduled = await webhook_endpoints.redeliver(session, ctx, endpoint_id, body)
    return json_response({"scheduled": scheduled}, status_code=202)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, responses=errors(404), summary="The delivery log")
async def list_deliveries(
    endpoint_id: uuid.UUID,
    ctx: WebhooksWrite,
    session: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    state: DeliveryState | None = None,
) -> Response:
    """Newest first."""
    rows, next_cursor = await webhook_endpoints.list_deliveries(
        session, ctx, endpoint_id, limit=limit, cursor=cursor, state=state
    )
    return json_response(
        {"items": [webhook_endpoints.present_delivery(d, t) for d, t in rows], "next_cursor": next_cursor}
    )


@router.get(
    "/{endpoint_id}/deliveries/{delivery_id}/attempts",
    response_model=AttemptList,
    responses=errors(404),
    summary="Attempts of one delivery",
)
async def list_delivery_attempts(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, ctx: WebhooksWrite, session: Reader
) -> Response:
    """Status, latency and the start of the response body of every attempt."""
    rows = await webhook_endpoints.list_attempts(session, ctx, endpoint_id, delivery_id)
    return json_response({"items": [webhook_endpoints.present_attempt(a) for a in rows]})
