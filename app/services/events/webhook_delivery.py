"""Delivery attempts: claim a job's batch, send each signed, record the outcomes.

The claim is a conditional UPDATE on (delivery, attempt number): however many workers hold a job
for the same attempt, one claims it and the others find nothing to do. The claim is a lease: a
worker that dies mid-send leaves it to expire, and the sweep makes the delivery due again."""

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import asyncpg
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from app.core import clock
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.settings import Settings
from app.models import OutboxEvent, WebhookEndpoint
from app.services.events import outbox, webhook_signing, webhook_targets
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, timestamp
from app.services.events.webhook_dispatch import DueAttempt
from app.services.events.webhook_slots import Slots

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
# A send may take its connect and read timeouts and this much more in all (a receiver that answers a
# byte at a time passes every read timeout); the claim's lease is 30 s longer than both timeouts.
SEND_MARGIN_SECONDS = 5.0
# How long a job waits for a slot of an endpoint that holds its whole share before it leaves the
# attempts to the sweep: long enough for a fast receiver's slots to turn over, short enough that
# jobs for a slow one do not sit on the job queue's places that other endpoints' jobs need.
ENDPOINT_PATIENCE_SECONDS = 1.0
USER_AGENT = "Guanxi-Webhooks/1"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    due: DueAttempt
    # Attempts before the delivery's current retry schedule began.
    schedule_offset: int
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


CLAIM_SQL = """
WITH due AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS t(workspace_id, id, attempt)
),
taken AS (
    -- Rows another claim holds are skipped, not waited for: that claim takes them.
    SELECT d.workspace_id, d.id, due.attempt
    FROM webhook_deliveries d
    JOIN due ON d.workspace_id = due.workspace_id AND d.id = due.id
    WHERE d.state = 'pending' AND d.attempts = due.attempt - 1 AND d.next_attempt_at <= $4
      AND EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.workspace_id = d.workspace_id AND e.id = d.endpoint_id AND e.enabled)
    FOR UPDATE OF d SKIP LOCKED
),
claimed AS (
    UPDATE webhook_deliveries d
    SET state = 'sending', attempts = taken.attempt, locked_until = $5, updated_at = $4
    FROM taken
    WHERE d.workspace_id = taken.workspace_id AND d.id = taken.id
    RETURNING d.workspace_id, d.id, d.attempts, d.schedule_offset, d.endpoint_id, d.event_id
)
SELECT c.workspace_id, c.id, c.attempts, c.schedule_offset, c.endpoint_id, e.url, e.secret,
       ARRAY(SELECT s->>'secret' FROM jsonb_array_elements(e.previous_secrets) AS s
             WHERE (s->>'expires_at')::timestamptz > $4) AS previous_secrets,
       ev.id AS event_id, ev.type, ev.occurred_at, ev.actor, ev.data
FROM claimed c
JOIN webhook_endpoints e ON e.workspace_id = c.workspace_id AND e.id = c.endpoint_id
JOIN outbox_events ev ON ev.workspace_id = c.workspace_id AND ev.id = c.event_id
"""


async def claim(
    conn: asyncpg.Connection, attempts: list[DueAttempt], *, now: datetime, lease: timedelta
) -> list[Claimed]:
    """One statement: take the attempts that are still due and nobody took, and read what to send."""
    rows = await conn.fetch(
        CLAIM_SQL,
        [a.workspace_id for a in attempts],
        [a.delivery_id for a in attempts],
        [a.attempt for a in attempts],
        now,
        now + lease,
    )
    claimed = []
    for row in rows:
        secrets = [row["secret"], *row["previous_secrets"]]
        event = {
            "id": str(row["event_id"]),
            "type": row["type"],
            "occurred_at": to_jsonable(row["occurred_at"]),
            "workspace_id": str(row["workspace_id"]),
            "actor": row["actor"],
            "data": row["data"],
        }
        due = DueAttempt(row["workspace_id"], row["id"], row["attempts"])
        claimed.append(
            Claimed(
                due=due,
                schedule_offset=row["schedule_offset"],
                endpoint_id=row["endpoint_id"],
                url=row["url"],
                secrets=secrets,
                event=event,
            )
        )
    return claimed


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


def http_client(max_connections: int, *, allow_private: bool) -> httpx.AsyncClient:
    """The client deliveries go out on: httpx over aiohttp's transport. httpx's own transport parses
    HTTP in Python (h11); through aiohttp's C parser a delivery costs the worker less CPU
    (docs/decisions.md). Proxies from the environment are not used. Unless private targets are
    allowed, its connections resolve names through `PublicOnlyResolver`."""
    limits = httpx.Limits(max_connections=max_connections)
    if allow_private:
        return httpx.AsyncClient(trust_env=False, transport=AiohttpTransport(limits=limits, trust_env=False))
    ssl_context = httpx.create_ssl_context(trust_env=False)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=ssl_context,
            resolver=webhook_targets.PublicOnlyResolver(),
        )
        return aiohttp.ClientSession(connector=connector)

    return httpx.AsyncClient(
        trust_env=False, transport=AiohttpTransport(limits=limits, trust_env=False, client=session)
    )


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
    except httpx.TimeoutException as exc:
        # The transport reports a dropped connection as a connect timeout: name what happened.
        if exc.__cause__ is None or isinstance(exc.__cause__, TimeoutError):
            return done(None, "timed out")
        return done(None, f"{type(exc.__cause__).__name__}: {exc}"[:500])
    except httpx.HTTPError as exc:
        return done(None, f"{type(exc).__name__}: {exc}"[:500])
    except aiohttp.ClientError as exc:
        # What the transport does not map to httpx's errors: a malformed response, for one.
        return done(None, f"{type(exc).__name__}: {exc}"[:500])


SUCCEEDED_SQL = """
WITH done AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::int[], $6::int[], $7::text[],
                         $8::text[], $9::uuid[])
        AS t(workspace_id, delivery_id, id, attempt, duration_ms, status_code, excerpt, request_headers, endpoint_id)
),
attempt AS (
    INSERT INTO webhook_attempts (workspace_id, id, delivery_id, attempt, started_at, duration_ms, status_code, error,
                                  response_excerpt, request_headers)
    SELECT workspace_id, id, delivery_id, attempt, $10, duration_ms, status_code, NULL, excerpt, request_headers::jsonb
    FROM done
    ON CONFLICT DO NOTHING
),
delivery AS (
    UPDATE webhook_deliveries d
    SET state = 'succeeded', last_status = done.status_code, last_error = NULL, locked_until = NULL,
        updated_at = $10, succeeded_at = $10
    FROM done
    -- A record that comes after the lease ran out (the attempt was logged as lost) changes nothing.
    WHERE d.workspace_id = done.workspace_id AND d.id = done.delivery_id AND d.state = 'sending'
      AND d.attempts = done.attempt
)
-- Touched only when the count changes: a healthy endpoint's row is never locked by deliveries.
UPDATE webhook_endpoints e SET consecutive_failures = 0, failing_since = NULL
WHERE (e.workspace_id, e.id) IN (SELECT DISTINCT workspace_id, endpoint_id FROM done) AND e.consecutive_failures <> 0
"""


async def record_succeeded(conn: asyncpg.Connection, sent: list[tuple[Claimed, Outcome]], *, now: datetime) -> None:
    """Log the successful attempts and close their deliveries, in one statement for the batch."""
    await conn.execute(
        SUCCEEDED_SQL,
        [c.due.workspace_id for c, _ in sent],
        [c.due.delivery_id for c, _ in sent],
        [new_id() for _ in sent],
        [c.due.attempt for c, _ in sent],
        [o.duration_ms for _, o in sent],
        [o.status_code for _, o in sent],
        [o.excerpt for _, o in sent],
        [orjson.dumps(_loggable(o.request_headers)).decode() for _, o in sent],
        [c.endpoint_id for c, _ in sent],
        now,
    )


RECORD_SQL = """
WITH attempt AS (
    INSERT INTO webhook_attempts (workspace_id, id, delivery_id, attempt, started_at, duration_ms, status_code, error,
                                  response_excerpt, request_headers)
    VALUES ($1, $3, $2, $4, $5, $6, $7, $8, $9, $10::jsonb)
    ON CONFLICT DO NOTHING
    RETURNING 1
),
endpoint AS (
    -- Touched only when the count changes: a healthy endpoint's row is never locked by deliveries.
    UPDATE webhook_endpoints
    SET consecutive_failures = CASE WHEN $11::text = 'succeeded' THEN 0 ELSE consecutive_failures + 1 END,
        failing_since = CASE WHEN $11::text = 'succeeded' THEN NULL ELSE coalesce(failing_since, $5) END
    WHERE workspace_id = $1 AND id = $13 AND ($11::text <> 'succeeded' OR consecutive_failures <> 0)
    RETURNING failing_since, enabled
),
delivery AS (
    UPDATE webhook_deliveries
    -- A retry whose endpoint was disabled meanwhile (the endpoint's row, updated above, is read as
    -- committed) is held with the endpoint's other deliveries.
    SET state = CASE WHEN $11::text = 'pending' AND (SELECT NOT enabled FROM endpoint) THEN 'held' ELSE $11::text END,
        next_attempt_at = coalesce($12, next_attempt_at), last_status = $7, last_error = $8,
        locked_until = NULL, updated_at = $5, succeeded_at = CASE WHEN $11::text = 'succeeded' THEN $5 END,
        -- Its job has done its claim: the retry is the sweep's to queue, even while that job still
        -- runs the other attempts it carries.
        job_key = NULL
    WHERE workspace_id = $1 AND id = $2 AND state = 'sending' AND attempts = $4
    RETURNING 1
)
SELECT (SELECT count(*) FROM attempt) + (SELECT count(*) FROM delivery) AS written,
       (SELECT failing_since FROM endpoint) AS failing_since,
       (SELECT enabled FROM endpoint) AS enabled
"""

# `webhook_endpoint.disabled`, over the endpoint's row.
ENDPOINT_DISABLED: Payload[WebhookEndpoint] = Payload(
    (
        Field("endpoint_id", lambda endpoint: endpoint.id, lambda alias: f"{alias}.id"),
        column("url"),
        Field("reason", lambda endpoint: endpoint.disabled_reason, lambda alias: f"{alias}.disabled_reason"),
        timestamp("failing_since"),
    ),
    model=data_model("webhook_endpoint.disabled"),
)
DISABLE_SQL = f"""
WITH disabled AS (
    -- Its pending deliveries are held by the workers (`webhook_dispatch.settle`): nothing waiting is
    -- lost, it goes out when the endpoint is enabled again.
    UPDATE webhook_endpoints
    SET enabled = false, disabled_reason = $3, settling = true, updated_at = $4, version = version + 1
    WHERE workspace_id = $1 AND id = $2 AND enabled
    RETURNING id, url, disabled_reason, failing_since
),
held AS (
    -- The delivery ($5) whose failed attempt disabled the endpoint is held at once, even when that
    -- was its last attempt.
    UPDATE webhook_deliveries d SET state = 'held', job_key = NULL, updated_at = $4
    FROM disabled
    WHERE d.workspace_id = $1 AND d.id = $5 AND d.state IN ('pending', 'failed')
)
{
    outbox.emit_rows_sql(
        f"(SELECT guanxi_uuid7() AS id, {ENDPOINT_DISABLED.sql('d')} AS data FROM disabled d)",
        workspace_id="$1",
        event_type="'webhook_endpoint.disabled'",
        at="$4",
        actor=outbox.SYSTEM_ACTOR_SQL,
    )
}
"""


async def record(
    conn: asyncpg.Connection, claimed: Claimed, outcome: Outcome, *, now: datetime, settings: Settings
) -> Scheduled | None:
    """Log the attempt and move the delivery on, in one statement; returns the next attempt, if any.
    A failure that ends a failing streak of `webhook_disable_after_hours` disables the endpoint."""
    due = claimed.due
    in_schedule = due.attempt - claimed.schedule_offset
    next_attempt: Scheduled | None = None
    if outcome.succeeded:
        state, next_at = "succeeded", None
    elif outcome.status_code == 410 or in_schedule >= MAX_ATTEMPTS:
        state, next_at = "failed", None
    else:
        delay = retry_delay(in_schedule, outcome.retry_after)
        state, next_at = "pending", now + delay
        next_attempt = Scheduled(DueAttempt(due.workspace_id, due.delivery_id, due.attempt + 1), delay)
    async with conn.transaction():
        row = await conn.fetchrow(
            RECORD_SQL,
            due.workspace_id,
            due.delivery_id,
            new_id(),
            due.attempt,
            now,
            outcome.duration_ms,
            outcome.status_code,
            outcome.error,
            outcome.excerpt,
            orjson.dumps(_loggable(outcome.request_headers)).decode(),
            state,
            next_at,
            claimed.endpoint_id,
        )
        if row is not None and row["enabled"] is False:
            next_attempt = None
        reason, holds = None, None
        failing_since = row["failing_since"] if row is not None else None
        if outcome.status_code == 410:
            reason = "the endpoint answered 410 Gone"
        elif failing_since is not None and now - failing_since >= timedelta(hours=settings.webhook_disable_after_hours):
            reason = f"every attempt failed for {settings.webhook_disable_after_hours:g} hours"
            holds = due.delivery_id
        if reason and row is not None and row["enabled"] is not False:
            await conn.execute(DISABLE_SQL, due.workspace_id, claimed.endpoint_id, reason, now, holds)
            # Its delivery is held with the endpoint's others: no retry is scheduled.
            next_attempt = None
    return next_attempt


def retry_delay(failed_attempt: int, retry_after: timedelta | None) -> timedelta:
    """The schedule's delay with ±10 % jitter, or the receiver's Retry-After when that is longer."""
    base = RETRY_SCHEDULE[failed_attempt - 1]
    jittered = base * random.uniform(0.9, 1.1)
    return max(jittered, retry_after) if retry_after else jittered


ENDPOINTS_SQL = """
SELECT d.id, d.endpoint_id
FROM webhook_deliveries d
JOIN unnest($1::uuid[], $2::uuid[]) AS t(workspace_id, id) ON d.workspace_id = t.workspace_id AND d.id = t.id
"""


async def deliver(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    attempts: list[DueAttempt],
    *,
    now: datetime,
    settings: Settings,
    slots: Slots | None = None,
) -> list[Scheduled | None]:
    """Send a job's attempts within the worker's `slots` (without them, all at once), each
    endpoint's side by side with the others': for each attempt claimed, the retry it scheduled
    (None when its delivery is done). Attempts an endpoint had no slot for within
    ENDPOINT_PATIENCE_SECONDS are left to the sweep, which queues them again."""
    slots = slots or Slots(max(len(attempts), 1), max(len(attempts), 1))
    # Counted from the start: the worker does not take more jobs on the strength of this one's
    # attempts being unknown yet.
    slots.wait(None, len(attempts))
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                ENDPOINTS_SQL, [a.workspace_id for a in attempts], [a.delivery_id for a in attempts]
            )
    finally:
        slots.wait(None, -len(attempts))
    endpoint_of = {row["id"]: row["endpoint_id"] for row in rows}
    by_endpoint: dict[uuid.UUID, list[DueAttempt]] = {}
    for attempt in attempts:
        if attempt.delivery_id in endpoint_of:
            by_endpoint.setdefault(endpoint_of[attempt.delivery_id], []).append(attempt)
    done = await asyncio.gather(
        *(
            _deliver_to(pool, client, endpoint, due, slots=slots, now=now, settings=settings)
            for endpoint, due in by_endpoint.items()
        )
    )
    return [scheduled for results in done for scheduled in results]


async def _deliver_to(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    endpoint: uuid.UUID,
    attempts: list[DueAttempt],
    *,
    slots: Slots,
    now: datetime,
    settings: Settings,
) -> list[Scheduled | None]:
    """One endpoint's attempts of a job: claimed as slots free up, a few at a time, each sent at
    once and recorded as soon as its outcome is in. Successes that finish together are recorded in
    one statement, failures one by one (each may disable its endpoint); no statement is held open
    while requests are in flight."""
    lease = timedelta(seconds=settings.webhook_timeout_seconds + settings.webhook_connect_timeout_seconds + 30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    remaining = list(attempts)
    sends: dict[asyncio.Future[Outcome], tuple[Claimed, datetime]] = {}
    scheduled: dict[DueAttempt, Scheduled | None] = {}
    claimed_in_order: list[Claimed] = []
    taking: asyncio.Task[int] | None = None
    blocked = False
    slots.wait(endpoint, len(remaining))
    try:
        while remaining or sends:
            if remaining and taking is None:
                blocked = slots.free(endpoint) <= 0
                taking = asyncio.create_task(slots.take(endpoint, len(remaining), patience=ENDPOINT_PATIENCE_SECONDS))
            waits: list[asyncio.Future[Any]] = [*sends, *([taking] if taking is not None else [])]
            finished, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            outcomes = [(*sends.pop(task), task.result()) for task in finished if task in sends]
            if outcomes:
                slots.release(endpoint, len(outcomes))
                async with pool.acquire() as conn:
                    for at in sorted({at for _, at, _ in outcomes}):
                        succeeded = [(c, o) for c, t, o in outcomes if t == at and o.succeeded]
                        if succeeded:
                            await record_succeeded(conn, succeeded, now=at)
                    for c, at, o in outcomes:
                        scheduled[c.due] = None if o.succeeded else await record(conn, c, o, now=at, settings=settings)
            if taking is None or taking not in finished:
                continue
            count = taking.result()
            taking = None
            if count == 0:
                # The endpoint held its whole share all along; with nothing of this job in flight to
                # free one, the rest is the sweep's to queue again.
                if not sends:
                    break
                continue
            # A job that waited for slots claims at the time it sends: its lease runs from then.
            at = now + timedelta(seconds=loop.time() - started) if blocked else now
            batch, remaining = remaining[:count], remaining[count:]
            slots.wait(endpoint, -count)
            try:
                async with pool.acquire() as conn:
                    claimed = await claim(conn, batch, now=at, lease=lease)
            except BaseException:
                slots.release(endpoint, count)
                raise
            slots.release(endpoint, count - len(claimed))
            claimed_in_order.extend(claimed)
            for c in claimed:
                sends[asyncio.ensure_future(_send_bounded(client, c, now=at, settings=settings))] = (c, at)
    finally:
        slots.wait(endpoint, -len(remaining))
        if taking is not None:
            # Waited for, not only cancelled: a take that got its slots as it was cancelled gives them back.
            taking.cancel()
            await asyncio.wait([taking])
            if not taking.cancelled() and taking.exception() is None:
                slots.release(endpoint, taking.result())
        # Only when recording failed or the job was stopped: the sends still out are left to their lease.
        for task in sends:
            task.cancel()
        slots.release(endpoint, len(sends))
    return [scheduled[c.due] for c in claimed_in_order]


async def _send_bounded(client: httpx.AsyncClient, claimed: Claimed, *, now: datetime, settings: Settings) -> Outcome:
    """send(), within a total time shorter than the claim's lease, and never raising: whatever one
    receiver does must not keep the other attempts of its job from being recorded."""
    started = time.perf_counter()
    limit = settings.webhook_timeout_seconds + settings.webhook_connect_timeout_seconds + SEND_MARGIN_SECONDS
    try:
        async with asyncio.timeout(limit):
            return await send(client, claimed, now=now, settings=settings)
    except TimeoutError:
        error = f"timed out: no complete answer within {limit:g} s"
    except Exception as exc:  # any failure is this attempt's own, and logged as its outcome
        logger.exception("webhook attempt failed unexpectedly", extra={"delivery_id": str(claimed.due.delivery_id)})
        error = f"{type(exc).__name__}: {exc}"[:500]
    return Outcome(None, error, None, int((time.perf_counter() - started) * 1000), None, {})


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
    # isdigit() alone accepts digits int() refuses, such as '²'.
    if value.isascii() and value.isdigit():
        return timedelta(seconds=min(int(value), 86_400))
    try:
        return max(parsedate_to_datetime(value) - now, timedelta(0))
    except (TypeError, ValueError):
        return None


def _loggable(headers: dict[str, str]) -> dict[str, str]:
    # Signatures are not secret, but there is no reason to keep them.
    return {k: v for k, v in headers.items() if k != "webhook-signature"}
