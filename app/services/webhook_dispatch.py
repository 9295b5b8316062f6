"""Fan-out of committed events to subscribed endpoints, and the sweep that keeps deliveries moving.

Both are set-based and safe to run in several workers at once (`FOR UPDATE SKIP LOCKED`)."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.ids import new_id
from app.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint


@dataclass(frozen=True)
class DueAttempt:
    """A job's payload: which delivery, and which attempt number it is for."""

    workspace_id: uuid.UUID
    delivery_id: uuid.UUID
    attempt: int

    @property
    def dedupe_key(self) -> str:
        return f"webhook:{self.delivery_id}:{self.attempt}"


def _subscribed() -> ColumnElement[bool]:
    """The endpoint's patterns cover the event type: exact, `family.*`, or `*`."""
    family = func.split_part(OutboxEvent.type, ".", 1) + ".*"
    return or_(
        OutboxEvent.type == func.any(WebhookEndpoint.event_types),
        family == func.any(WebhookEndpoint.event_types),
        literal("*") == func.any(WebhookEndpoint.event_types),
    )


FAN_OUT_BATCH = 500


async def fan_out(session: AsyncSession, *, now: datetime, batch: int = FAN_OUT_BATCH) -> tuple[int, list[DueAttempt]]:
    """Turn unpublished events into deliveries for every enabled, subscribed endpoint (one
    transaction; the caller commits). Events are taken in commit order. Returns how many events
    were taken, and the first attempts of the new deliveries."""
    event_ids = list(
        (
            await session.scalars(
                select(OutboxEvent.id)
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.txid, OutboxEvent.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )
    if not event_ids:
        return 0, []
    pairs = (
        await session.execute(
            select(OutboxEvent.workspace_id, OutboxEvent.id, WebhookEndpoint.id)
            .join(
                WebhookEndpoint,
                and_(WebhookEndpoint.workspace_id == OutboxEvent.workspace_id, WebhookEndpoint.enabled.is_(True)),
            )
            .where(OutboxEvent.id.in_(event_ids), _subscribed())
        )
    ).all()
    await session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(event_ids)).values(published_at=now))
    if not pairs:
        return len(event_ids), []
    rows = [
        {
            "workspace_id": workspace_id,
            "id": new_id(),
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for workspace_id, event_id, endpoint_id in pairs
    ]
    inserted = await session.execute(
        insert(WebhookDelivery)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.workspace_id, WebhookDelivery.id)
    )
    return len(event_ids), [DueAttempt(workspace_id, delivery_id, 1) for workspace_id, delivery_id in inserted.all()]


async def recover_abandoned(session: AsyncSession, *, now: datetime) -> int:
    """Deliveries whose worker died mid-send: log the lost attempt and make them due again. The
    receiver may have got the lost attempt; the same `webhook-id` lets it drop the repeat."""
    stalled = (
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.state == "sending", WebhookDelivery.locked_until < now)
            .values(state="pending", next_attempt_at=now, locked_until=None, updated_at=now,
                    last_error="the worker stopped during the attempt")
            .returning(WebhookDelivery.workspace_id, WebhookDelivery.id, WebhookDelivery.attempts)
        )
    ).all()  # fmt: skip
    if stalled:
        await session.execute(
            insert(WebhookAttempt)
            .values(
                [
                    {
                        "workspace_id": workspace_id,
                        "id": new_id(),
                        "delivery_id": delivery_id,
                        "attempt": attempts,
                        "started_at": now,
                        "error": "the worker stopped during the attempt",
                        "request_headers": {},
                    }
                    for workspace_id, delivery_id, attempts in stalled
                ]
            )
            .on_conflict_do_nothing()
        )
    return len(stalled)


async def due_attempts(session: AsyncSession, *, now: datetime, limit: int = 1000) -> list[DueAttempt]:
    """Pending deliveries whose time has come, on enabled endpoints."""
    rows = (
        await session.execute(
            select(WebhookDelivery.workspace_id, WebhookDelivery.id, WebhookDelivery.attempts)
            .join(
                WebhookEndpoint,
                and_(
                    WebhookEndpoint.workspace_id == WebhookDelivery.workspace_id,
                    WebhookEndpoint.id == WebhookDelivery.endpoint_id,
                ),
            )
            .where(
                WebhookDelivery.state == "pending",
                WebhookDelivery.next_attempt_at <= now,
                WebhookEndpoint.enabled.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    ).all()
    return [DueAttempt(workspace_id, delivery_id, attempts + 1) for workspace_id, delivery_id, attempts in rows]
