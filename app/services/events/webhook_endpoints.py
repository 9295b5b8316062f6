"""Webhook endpoints: registration, secret rotation, test pings, redelivery and the delivery log."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.core.settings import get_settings
from app.core.versions import check_version
from app.core.wire import utc_text
from app.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.schemas.event import EndpointCreate, EndpointPatch, Redeliver
from app.services.events import audit, outbox, webhook_signing, webhook_targets

# Replaced secrets that may sign beside the current one at once: each adds a signature (an HMAC)
# to every delivery.
MAX_PREVIOUS_SECRETS = 5


async def create(session: AsyncSession, ctx: Caller, data: EndpointCreate) -> WebhookEndpoint:
    url = str(data.url)
    await webhook_targets.validate_for_api(url, allow_private=get_settings().webhook_allow_private_targets)
    now = clock.now()
    endpoint = WebhookEndpoint(
        workspace_id=ctx.workspace_id,
        url=url,
        description=data.description,
        event_types=data.event_types,
        enabled=data.enabled,
        secret=webhook_signing.new_secret(),
        previous_secrets=[],
        consecutive_failures=0,
        failing_since=None,
        settling=False,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(endpoint)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="webhook_endpoint",
        entity_id=endpoint.id,
        action="created",
        changes={"url": {"before": None, "after": url}, "event_types": {"before": None, "after": data.event_types}},
    )
    return endpoint


async def get(session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID, *, lock: bool = False) -> WebhookEndpoint:
    return await scoped.get(
        session, ctx, WebhookEndpoint, endpoint_id, missing="No webhook endpoint with that id.", lock=lock
    )


async def list_all(session: AsyncSession, ctx: Caller) -> list[WebhookEndpoint]:
    return await scoped.all_of(session, ctx, WebhookEndpoint, order_by=WebhookEndpoint.created_at)


async def update(
    session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID, patch: EndpointPatch, *, expected_version: int
) -> WebhookEndpoint:
    endpoint = await get(session, ctx, endpoint_id, lock=True)
    check_version(endpoint.version, expected_version, what="endpoint")
    changes: audit.Changes = {}
    sent = patch.model_fields_set
    if "url" in sent and patch.url is not None:
        url = str(patch.url)
        await webhook_targets.validate_for_api(url, allow_private=get_settings().webhook_allow_private_targets)
        changes["url"] = {"before": endpoint.url, "after": url}
        endpoint.url = url
    if "event_types" in sent and patch.event_types is not None:
        changes["event_types"] = {"before": endpoint.event_types, "after": patch.event_types}
        endpoint.event_types = patch.event_types
    if "description" in sent:
        changes["description"] = {"before": endpoint.description, "after": patch.description}
        endpoint.description = patch.description
    if "enabled" in sent and patch.enabled is not None and patch.enabled != endpoint.enabled:
        changes["enabled"] = {"before": endpoint.enabled, "after": patch.enabled}
        endpoint.enabled = patch.enabled
        # The workers hold its waiting deliveries, or release the held ones with a fresh schedule.
        endpoint.settling = True
        if patch.enabled:
            endpoint.disabled_reason = None
            endpoint.consecutive_failures = 0
            endpoint.failing_since = None
        else:
            endpoint.disabled_reason = "disabled by its owner"
        await outbox.wake_workers(session)
    audit.record_update(session, ctx, endpoint, entity_type="webhook_endpoint", changes=changes)
    return endpoint


async def delete(session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID, *, expected_version: int) -> None:
    endpoint = await get(session, ctx, endpoint_id, lock=True)
    check_version(endpoint.version, expected_version, what="endpoint")
    await session.delete(endpoint)
    audit.record(
        session,
        ctx,
        entity_type="webhook_endpoint",
        entity_id=endpoint.id,
        action="deleted",
        changes={"url": {"before": endpoint.url, "after": None}},
    )


async def rotate_secret(session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """A new secret; the one it replaces keeps signing (beside the new) for the overlap period, and
    so does every secret replaced before whose overlap has not ended: a receiver that took any of
    them verifies each delivery until that secret's own overlap ends."""
    endpoint = await get(session, ctx, endpoint_id, lock=True)
    now = clock.now()
    signing = _signing_previous_secrets(endpoint, now)
    if len(signing) >= MAX_PREVIOUS_SECRETS:
        raise Conflict(
            f"{len(signing)} replaced secrets still sign each delivery; rotate again once the first "
            f"stops, at {utc_text(min(datetime.fromisoformat(s['expires_at']) for s in signing))}."
        )
    expires_at = now + timedelta(hours=get_settings().webhook_secret_overlap_hours)
    endpoint.previous_secrets = [*signing, {"secret": endpoint.secret, "expires_at": utc_text(expires_at)}]
    endpoint.secret = webhook_signing.new_secret()
    endpoint.version += 1
    endpoint.updated_at = now
    audit.record(
        session, ctx, entity_type="webhook_endpoint", entity_id=endpoint.id, action="secret_rotated", changes={}
    )
    return endpoint


async def ping(session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID) -> WebhookDelivery:
    """A `webhook.ping` event delivered to this endpoint only, through the normal delivery path
    (held while the endpoint is disabled)."""
    # Locked: a re-enable in flight waits, then releases the delivery if it is held.
    endpoint = await get(session, ctx, endpoint_id, lock=True)
    now = clock.now()
    event = outbox.emit(session, ctx, "webhook.ping", {"message": "ping"})
    # Already published: the fan-out must not send it to the workspace's other endpoints.
    event.published_at = now
    await session.flush()
    delivery = _new_delivery(ctx.workspace_id, endpoint, event.id, now)
    session.add(delivery)
    await session.flush()
    await outbox.wake_workers(session)
    return delivery


async def redeliver(session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID, request: Redeliver) -> int:
    """Schedule again one event, or every event of the range that the endpoint subscribes to, each
    with a fresh retry schedule (held while the endpoint is disabled)."""
    # Locked: a re-enable in flight waits, then releases the deliveries held here.
    endpoint = await get(session, ctx, endpoint_id, lock=True)
    if request.event_id is None and request.since is None:
        raise ValidationFailed("Give event_id, or since (and optionally until).", loc=["body"])
    events = select(OutboxEvent.id).where(OutboxEvent.workspace_id == ctx.workspace_id)
    if request.event_id is not None:
        events = events.where(OutboxEvent.id == request.event_id)
    else:
        events = events.where(OutboxEvent.occurred_at >= request.since, _matches(endpoint.event_types))
        if request.until is not None:
            events = events.where(OutboxEvent.occurred_at < request.until)
    event_ids = list((await session.scalars(events.limit(10_000))).all())
    if request.event_id is not None and not event_ids:
        raise NotFound("No event with that id.")
    if not event_ids:
        return 0
    now = clock.now()
    rows = [_row(_new_delivery(ctx.workspace_id, endpoint, event_id, now)) for event_id in event_ids]
    statement = insert(WebhookDelivery).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[WebhookDelivery.workspace_id, WebhookDelivery.endpoint_id, WebhookDelivery.event_id],
        set_={
            "state": statement.excluded.state,
            "next_attempt_at": now,
            "schedule_offset": WebhookDelivery.attempts,
            "updated_at": now,
            "locked_until": None,
            "job_key": None,
        },
        where=WebhookDelivery.state != "sending",
    )
    result = await session.execute(statement)
    await outbox.wake_workers(session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def list_deliveries(
    session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID, *, limit: int, cursor: str | None, state: str | None
) -> tuple[list[Any], str | None]:
    await get(session, ctx, endpoint_id)
    stmt = (
        select(WebhookDelivery, OutboxEvent.type.label("event_type"))
        .join(
            OutboxEvent,
            (OutboxEvent.workspace_id == WebhookDelivery.workspace_id) & (OutboxEvent.id == WebhookDelivery.event_id),
        )
        .where(WebhookDelivery.workspace_id == ctx.workspace_id, WebhookDelivery.endpoint_id == endpoint_id)
    )
    if state:
        stmt = stmt.where(WebhookDelivery.state == state)
    keys = [SortKey(WebhookDelivery.id, descending=True)]
    return await keyset_page(
        session, stmt, keys, list_name=f"webhook-deliveries:{endpoint_id}", limit=limit, cursor=cursor
    )


async def list_attempts(
    session: AsyncSession, ctx: Caller, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> list[WebhookAttempt]:
    delivery = await session.scalar(
        select(WebhookDelivery.id).where(
            WebhookDelivery.workspace_id == ctx.workspace_id,
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.id == delivery_id,
        )
    )
    if delivery is None:
        raise NotFound("No delivery with that id for this endpoint.")
    stmt = (
        select(WebhookAttempt)
        .where(WebhookAttempt.workspace_id == ctx.workspace_id, WebhookAttempt.delivery_id == delivery_id)
        .order_by(WebhookAttempt.attempt)
    )
    return list((await session.scalars(stmt)).all())


def secret_rotating_until(endpoint: WebhookEndpoint, now: datetime) -> datetime | None:
    """When the last replaced secret stops signing; None when only the current one signs."""
    ends = [datetime.fromisoformat(s["expires_at"]) for s in _signing_previous_secrets(endpoint, now)]
    return max(ends, default=None)


def _signing_previous_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[dict[str, str]]:
    return [s for s in endpoint.previous_secrets if datetime.fromisoformat(s["expires_at"]) > now]


def _matches(patterns: list[str]) -> Any:
    """SQL for: the event type is one of the endpoint's patterns (exact, `family.*` or `*`)."""
    if "*" in patterns:
        return text("true")
    exact = [p for p in patterns if not p.endswith(".*")]
    families = [p[:-1] for p in patterns if p.endswith(".*")]
    return or_(OutboxEvent.type.in_(exact), *(OutboxEvent.type.startswith(f) for f in families))


def _new_delivery(
    workspace_id: uuid.UUID, endpoint: WebhookEndpoint, event_id: uuid.UUID, now: datetime
) -> WebhookDelivery:
    return WebhookDelivery(
        workspace_id=workspace_id,
        id=new_id(),
        endpoint_id=endpoint.id,
        event_id=event_id,
        state="pending" if endpoint.enabled else "held",
        attempts=0,
        schedule_offset=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def _row(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        c: getattr(delivery, c)
        for c in (
            "workspace_id",
            "id",
            "endpoint_id",
            "event_id",
            "state",
            "attempts",
            "schedule_offset",
            "next_attempt_at",
            "created_at",
            "updated_at",
        )
    }


def present(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "consecutive_failures": endpoint.consecutive_failures,
        "failing_since": endpoint.failing_since,
        "secret_rotating_until": secret_rotating_until(endpoint, clock.now()),
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "version": endpoint.version,
    }


def present_delivery(d: WebhookDelivery, event_type: str) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": event_type,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at if d.state == "pending" else None,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "succeeded_at": d.succeeded_at,
    }


def present_attempt(a: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "started_at": a.started_at,
        "duration_ms": a.duration_ms,
        "status_code": a.status_code,
        "error": a.error,
        "response_excerpt": a.response_excerpt,
    }
