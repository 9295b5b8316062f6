"""One delivery attempt: claim it, send it signed, record the outcome and schedule the retry.

The claim is a conditional UPDATE on (delivery, attempt number): however many workers hold a job
for the same attempt, one claims it and the others find nothing to do. The claim is a lease: a
worker that dies mid-send leaves it to expire, and the sweep makes the delivery due again."""

import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import clock
from app.access import system_caller
from app.ids import new_id
from app.jsonable import to_jsonable
from app.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.services import outbox, webhook_signing, webhook_targets
from app.services.webhook_dispatch import DueAttempt
from app.settings import Settings

# Delay before retry n (after attempt n failed): 10 attempts over about 3.5 days.
RETRY_SCHEDULE = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
RESPONSE_EXCERPT_BYTES = 2048
USER_AGENT = "Guanxi-Webhooks/1"


@dataclass(frozen=True)
class Claimed:
    due: DueAttempt
    endpoint_id: uuid.UUID
    url: str
    secrets: list[str]
    event: dict[str, Any]


@dataclass(frozen=True)
class Scheduled:
    due: DueAttempt
    delay: timedelta


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    excerpt: str | None
    duration_ms: int
    retry_after: timedelta | None
    request_headers: dict[str, str]

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def claim(session: AsyncSession, due: DueAttempt, *, now: datetime, lease: timedelta) -> Claimed | None:
    row = (
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.workspace_id == due.workspace_id,
                WebhookDelivery.id == due.delivery_id,
                WebhookDelivery.state == "pending",
                WebhookDelivery.attempts == due.attempt - 1,
                WebhookDelivery.next_attempt_at <= now,
                WebhookDelivery.endpoint_id.in_(
                    select(WebhookEndpoint.id).where(
                        WebhookEndpoint.workspace_id == due.workspace_id, WebhookEndpoint.enabled.is_(True)
                    )
                ),
            )
            .values(state="sending", attempts=due.attempt, locked_until=now + lease, updated_at=now)
            .returning(WebhookDelivery.endpoint_id, WebhookDelivery.event_id)
        )
    ).first()
    if row is None:
        return None
    endpoint_id, event_id = row
    details = (
        await session.execute(
            select(WebhookEndpoint, OutboxEvent)
            .join(
                OutboxEvent, and_(OutboxEvent.workspace_id == WebhookEndpoint.workspace_id, OutboxEvent.id == event_id)
            )
            .where(WebhookEndpoint.workspace_id == due.workspace_id, WebhookEndpoint.id == endpoint_id)
        )
    ).one()
    endpoint, event = details
    secrets = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        secrets.append(endpoint.previous_secret)
    return Claimed(due=due, endpoint_id=endpoint_id, url=endpoint.url, secrets=secrets, event=envelope(event))


def envelope(event: OutboxEvent) -> dict[str, Any]:
    """The body of every delivery, and an item of GET /api/v1/events."""
    return {
        "id": str(event.id),
        "type": event.type,
        "occurred_at": to_jsonable(event.occurred_at),
        "workspace_id": str(event.workspace_id),
        "actor": event.actor,
        "data": event.data,
    }


async def send(client: httpx.AsyncClient, claimed: Claimed, *, now: datetime, settings: Settings) -> Outcome:
    """POST the signed event. Redirects are not followed; the response body is read up to a cap."""
    body = orjson.dumps(claimed.event).decode()
    # Signed with the wall clock of the moment of sending: receivers judge freshness by it, whatever
    # time the attempt was scheduled for.
    signed_at = clock.now()
    headers = {
        **webhook_signing.headers(
            message_id=claimed.event["id"], at=signed_at, body=body, secrets_in_use=claimed.secrets
        ),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    started = time.perf_counter()

    def done(
        status: int | None, error: str | None, excerpt: str | None = None, retry_after: timedelta | None = None
    ) -> Outcome:
        elapsed = int((time.perf_counter() - started) * 1000)
        return Outcome(status, error, excerpt, elapsed, retry_after, headers)

    try:
        await webhook_targets.check_target(claimed.url, allow_private=settings.webhook_allow_private_targets)
    except webhook_targets.TargetBlocked as exc:
        return done(None, str(exc))
    timeout = httpx.Timeout(settings.webhook_timeout_seconds, connect=settings.webhook_connect_timeout_seconds)
    try:
        async with client.stream(
            "POST", claimed.url, content=body, headers=headers, timeout=timeout, follow_redirects=False
        ) as response:
            excerpt = await _read_capped(response)
            status = response.status_code
            error = f"redirect to {response.headers.get('location', '?')} not followed" if 300 <= status < 400 else None
            return done(status, error, excerpt, _retry_after(response, now))
    except httpx.TimeoutException:
        return done(None, "timed out")
    except httpx.HTTPError as exc:
        return done(None, f"{type(exc).__name__}: {exc}"[:500])


async def record(
    session: AsyncSession, claimed: Claimed, outcome: Outcome, *, now: datetime, settings: Settings
) -> Scheduled | None:
    """Log the attempt and move the delivery on; returns the next attempt when one is scheduled."""
    due = claimed.due
    session.add(
        WebhookAttempt(
            workspace_id=due.workspace_id,
            id=new_id(),
            delivery_id=due.delivery_id,
            attempt=due.attempt,
            started_at=now,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            response_excerpt=outcome.excerpt,
            request_headers=_loggable(outcome.request_headers),
        )
    )
    endpoint = await session.scalar(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.workspace_id == due.workspace_id, WebhookEndpoint.id == claimed.endpoint_id)
        .with_for_update()
    )
    delivery_values: dict[str, Any] = {
        "last_status": outcome.status_code,
        "last_error": outcome.error,
        "locked_until": None,
        "updated_at": now,
    }
    next_attempt: Scheduled | None = None
    if outcome.succeeded:
        delivery_values |= {"state": "succeeded", "succeeded_at": now}
        if endpoint is not None:
            endpoint.consecutive_failures = 0
    else:
        if endpoint is not None:
            endpoint.consecutive_failures += 1
            reason = None
            if outcome.status_code == 410:
                reason = "the endpoint answered 410 Gone"
            elif endpoint.consecutive_failures >= settings.webhook_max_consecutive_failures:
                reason = f"{endpoint.consecutive_failures} consecutive failed attempts"
            if reason and endpoint.enabled:
                _disable(session, endpoint, reason, now)
        if outcome.status_code == 410 or due.attempt >= MAX_ATTEMPTS:
            delivery_values["state"] = "failed"
        else:
            delay = retry_delay(due.attempt, outcome.retry_after)
            delivery_values |= {"state": "pending", "next_attempt_at": now + delay}
            next_attempt = Scheduled(DueAttempt(due.workspace_id, due.delivery_id, due.attempt + 1), delay)
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.workspace_id == due.workspace_id, WebhookDelivery.id == due.delivery_id)
        .values(**delivery_values)
    )
    return next_attempt


def retry_delay(failed_attempt: int, retry_after: timedelta | None) -> timedelta:
    """The schedule's delay with ±10 % jitter, or the receiver's Retry-After when that is longer."""
    base = RETRY_SCHEDULE[failed_attempt - 1]
    jittered = base * random.uniform(0.9, 1.1)
    return max(jittered, retry_after) if retry_after else jittered


async def deliver(
    sessions: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    due: DueAttempt,
    *,
    now: datetime,
    settings: Settings,
) -> Scheduled | None:
    """Claim, send and record one attempt; returns the next attempt to schedule, if any."""
    lease = timedelta(seconds=settings.webhook_timeout_seconds + settings.webhook_connect_timeout_seconds + 30)
    async with sessions() as session:
        claimed = await claim(session, due, now=now, lease=lease)
        await session.commit()
    if claimed is None:
        return None
    outcome = await send(client, claimed, now=now, settings=settings)
    async with sessions() as session:
        next_attempt = await record(session, claimed, outcome, now=now, settings=settings)
        await session.commit()
    return next_attempt


def _disable(session: AsyncSession, endpoint: WebhookEndpoint, reason: str, now: datetime) -> None:
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = now
    endpoint.version += 1
    outbox.emit(
        session,
        system_caller(endpoint.workspace_id),
        "webhook_endpoint.disabled",
        {"endpoint_id": str(endpoint.id), "url": endpoint.url, "reason": reason},
    )


async def _read_capped(response: httpx.Response) -> str:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received.extend(chunk)
        if len(received) >= RESPONSE_EXCERPT_BYTES:
            break
    return bytes(received[:RESPONSE_EXCERPT_BYTES]).decode("utf-8", errors="replace")


def _retry_after(response: httpx.Response, now: datetime) -> timedelta | None:
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return timedelta(seconds=min(int(value), 86_400))
    try:
        return max(parsedate_to_datetime(value) - now, timedelta(0))
    except (TypeError, ValueError):
        return None


def _loggable(headers: dict[str, str]) -> dict[str, str]:
    # Signatures are not secret, but there is no reason to keep them.
    return {k: v for k, v in headers.items() if k != "webhook-signature"}
