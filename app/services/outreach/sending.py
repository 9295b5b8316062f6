"""Sending queued messages, at most once each.

The sweep (`dispatch_due`) hands due messages to jobs of the queue; a job claims its messages
(`queued` → `sending`, committed before any provider is called, with a lease), sends them side by
side within the worker's bound, and records each outcome: `sent`, a retry (`queued` again, later)
when the provider said it did not take the message and the error is transient, `failed`, or
`unknown` when the request went out and no answer came. A `sending` message whose lease ran out (its
worker died mid-send) becomes `unknown` and is never sent again by itself: a duplicate SMS is worse
than a missing one."""

import asyncio
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.secret_box import InvalidToken, SecretBox, SecretKeysMissing
from app.core.settings import Settings
from app.models import Channel, Message
from app.services.events import outbox
from app.services.outreach import messages
from app.services.outreach.providers import Account, Outgoing, Provider, Result, provider

MESSAGES_PER_JOB = 50
DISPATCH_BATCH = 1000
# A job carries its messages this long; after that the sweep hands them to another.
JOB_LEASE = timedelta(minutes=2)
# Delay before retry n (after attempt n was refused for a transient reason).
RETRY_SCHEDULE = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=2),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
# SMTP connections one job opens to one channel: each sends its share in turn, so a batch pays the
# handshake (and TLS, and login) a few times, not once per message.
SMTP_CONNECTIONS = 4


class Connections:
    """SMTP connections kept open between jobs, per channel and its version (a changed host or
    password opens new ones): messages committed one at a time, each its own job, still go out on
    a connection that is already open. Adapters of other kinds hold nothing and are not kept."""

    def __init__(self) -> None:
        self.idle: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, list[Provider]]] = {}

    def take(self, channel: Channel, account: Account, http: aiohttp.ClientSession) -> Provider:
        key = (channel.workspace_id, channel.id)
        version, idle = self.idle.get(key, (channel.version, []))
        if version == channel.version and idle:
            return idle.pop()
        return provider(account, http)

    async def give_back(self, channel: Channel, adapter: Provider) -> None:
        key = (channel.workspace_id, channel.id)
        version, idle = self.idle.get(key, (channel.version, []))
        if channel.kind != "email" or version > channel.version or len(idle) >= SMTP_CONNECTIONS:
            await adapter.close()
            return
        if version < channel.version:
            for stale in idle:
                await stale.close()
            idle = []
        idle.append(adapter)
        self.idle[key] = (channel.version, idle)

    async def close(self) -> None:
        for _, idle in self.idle.values():
            for adapter in idle:
                await adapter.close()
        self.idle.clear()


@dataclass(frozen=True)
class Job:
    key: str
    messages: list[tuple[uuid.UUID, uuid.UUID]]


async def expire_leases(session: AsyncSession, *, now: datetime) -> int:
    """`sending` messages whose claim ran out: their worker is gone, mid-send or not; `unknown`."""
    result = await session.execute(
        update(Message)
        .where(Message.status == "sending", Message.locked_until < now)
        .values(
            status="unknown",
            locked_until=None,
            updated_at=now,
            error_code="lease_expired",
            error_message="the worker sending it stopped before recording an outcome; not sent again",
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def dispatch_due(session: AsyncSession, *, now: datetime, batch: int = DISPATCH_BATCH) -> list[Job]:
    """Due queued messages that no job carries, marked as carried for JOB_LEASE, in jobs of
    MESSAGES_PER_JOB (the caller commits, then queues them)."""
    rows = (
        await session.execute(
            select(Message.workspace_id, Message.id)
            .where(
                Message.status == "queued",
                Message.send_after <= now,
                (Message.queued_until.is_(None)) | (Message.queued_until < now),
            )
            .order_by(Message.send_after)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not rows:
        return []
    pairs = [(w, i) for w, i in rows]
    await session.execute(
        update(Message)
        .where(tuple_(Message.workspace_id, Message.id).in_(pairs))
        .values(queued_until=now + JOB_LEASE)
        .execution_options(synchronize_session=False)
    )
    chunks = [pairs[i : i + MESSAGES_PER_JOB] for i in range(0, len(pairs), MESSAGES_PER_JOB)]
    # The job's key names this hand-over: a job picked by a worker that died before claiming keeps
    # its key on pgqueuer's queue (`picked`), and a key reused when the lease runs out would be
    # skipped as a duplicate, leaving its messages queued for good.
    until = int((now + JOB_LEASE).timestamp())
    return [Job(f"messages:{chunk[0][1]}:{until}", chunk) for chunk in chunks]


@dataclass
class Claimed:
    workspace_id: uuid.UUID
    id: uuid.UUID
    attempt: int
    channel_id: uuid.UUID
    outgoing: Outgoing


async def claim(
    session: AsyncSession, pairs: list[tuple[uuid.UUID, uuid.UUID]], *, now: datetime, lease: timedelta
) -> tuple[list[Claimed], dict[tuple[uuid.UUID, uuid.UUID], Channel]]:
    """`queued` → `sending` for those still queued and due (the caller commits before sending)."""
    claimed_rows = (
        await session.execute(
            update(Message)
            .where(
                tuple_(Message.workspace_id, Message.id).in_(pairs),
                Message.status == "queued",
                Message.send_after <= now,
            )
            .values(status="sending", attempts=Message.attempts + 1, locked_until=now + lease, updated_at=now)
            .returning(
                Message.workspace_id,
                Message.id,
                Message.attempts,
                Message.channel_id,
                Message.recipient,
                Message.content,
            )
            .execution_options(synchronize_session=False)
        )
    ).all()
    claimed = [
        Claimed(w, i, attempt, channel_id, Outgoing(to=recipient, content=content, reference=str(i)))
        for w, i, attempt, channel_id, recipient, content in claimed_rows
    ]
    keys = {(c.workspace_id, c.channel_id) for c in claimed}
    found = (
        (await session.scalars(select(Channel).where(tuple_(Channel.workspace_id, Channel.id).in_(keys)))).all()
        if keys
        else []
    )
    return claimed, {(c.workspace_id, c.id): c for c in found}


async def send_all(
    claimed: list[Claimed],
    channels_by_key: dict[tuple[uuid.UUID, uuid.UUID], Channel],
    *,
    http: aiohttp.ClientSession,
    secret_box: SecretBox,
    time_limit: float,
    connections: Connections | None = None,
) -> list[tuple[Claimed, Result]]:
    """Every claimed message sent, each channel's side by side with the others'; SMTP connections
    are taken from `connections` and given back (without it, opened for this call and closed)."""
    kept = connections or Connections()
    by_channel: dict[tuple[uuid.UUID, uuid.UUID], list[Claimed]] = defaultdict(list)
    for c in claimed:
        by_channel[(c.workspace_id, c.channel_id)].append(c)
    try:
        results = await asyncio.gather(
            *(
                _send_channel(
                    channels_by_key.get(key),
                    items,
                    http=http,
                    secret_box=secret_box,
                    time_limit=time_limit,
                    connections=kept,
                )
                for key, items in by_channel.items()
            )
        )
    finally:
        if connections is None:
            await kept.close()
    return [pair for group in results for pair in group]


async def _send_channel(
    channel: Channel | None,
    items: list[Claimed],
    *,
    http: aiohttp.ClientSession,
    secret_box: SecretBox,
    time_limit: float,
    connections: Connections,
) -> list[tuple[Claimed, Result]]:
    if channel is None or channel.deleted_at is not None:
        return [(c, Result.rejected("channel_deleted", "the channel was deleted", retryable=False)) for c in items]
    try:
        account = Account(channel.kind, channel.settings, secret_box.open(channel.sealed_secrets))
    except InvalidToken:
        failure = Result.rejected(
            "secrets_unreadable", "no key of GUANXI_SECRET_KEYS opens the channel's secrets", retryable=True
        )
        return [(c, failure) for c in items]
    except SecretKeysMissing:
        failure = Result.rejected("secrets_unreadable", "GUANXI_SECRET_KEYS is not set", retryable=True)
        return [(c, failure) for c in items]
    # SMTP: a few kept connections, each sending its share in turn; HTTP providers: one request each.
    lanes = min(SMTP_CONNECTIONS, len(items)) if channel.kind == "email" else len(items)
    queues = [items[i::lanes] for i in range(lanes)]
    done: list[tuple[Claimed, Result]] = []

    async def lane(queue: list[Claimed]) -> None:
        adapter = connections.take(channel, account, http)
        try:
            for c in queue:
                done.append((c, await _send_one(adapter, c, time_limit)))
        finally:
            await connections.give_back(channel, adapter)

    await asyncio.gather(*(lane(q) for q in queues))
    return done


async def _send_one(adapter: Provider, claimed: Claimed, time_limit: float) -> Result:
    """Never raises: one message's trouble is its own outcome."""
    try:
        async with asyncio.timeout(time_limit):
            return await adapter.send(claimed.outgoing)
    except TimeoutError:
        return Result.unknown(f"no answer within {time_limit:g} s")
    except Exception as exc:  # the request may have gone out: nobody knows
        return Result.unknown(f"{type(exc).__name__}")


def retry_delay(attempt: int) -> timedelta:
    return RETRY_SCHEDULE[attempt - 1] * random.uniform(0.9, 1.1)


# Each outcome on its message and, for `sent` and `failed`, its event, in one statement per batch.
# A message whose lease ran out meanwhile (`unknown`: its worker was alive but slower than the
# lease) takes the outcome that came, since it is the truth, with one exception: a transient refusal
# does not put it back on the queue but fails it. Once a message has been shown `unknown`, someone
# may have acted on it (sent it again by hand), so nothing sends it again by itself. The SET
# expressions read `m.status` of the row as locked, so a sweep committed meanwhile is seen.
# Events are written as fanned out already when no webhook endpoint hears them.
LATE_RETRY = "(m.status = 'unknown' AND o.status = 'queued')"
# A message an automation rule queued keeps the rule and its chain depth as the actor of its outcome,
# so that rules reacting to it are stopped at the depth limit like any other chain; others are the
# system's.
_OUTCOME_ACTOR = f"CASE WHEN u.actor ->> 'type' = 'automation' THEN u.actor ELSE {outbox.SYSTEM_ACTOR_SQL} END"

RECORD_SQL = f"""
WITH outcome AS (
    SELECT * FROM unnest(CAST(:workspace_ids AS uuid[]), CAST(:ids AS uuid[]), CAST(:attempts AS int[]),
                         CAST(:statuses AS text[]), CAST(:provider_ids AS text[]), CAST(:codes AS text[]),
                         CAST(:texts AS text[]), CAST(:retry_at AS timestamptz[]))
        AS t(workspace_id, id, attempt, status, provider_message_id, error_code, error_message, retry_at)
),
updated AS (
    UPDATE messages m
    SET status = CASE WHEN {LATE_RETRY} THEN 'failed' ELSE o.status END,
        locked_until = NULL, updated_at = :now,
        provider_message_id = coalesce(o.provider_message_id, m.provider_message_id),
        error_code = o.error_code, error_message = o.error_message,
        sent_at = CASE WHEN o.status = 'sent' THEN CAST(:now AS timestamptz) ELSE m.sent_at END,
        failed_at = CASE WHEN o.status = 'failed' OR {LATE_RETRY} THEN CAST(:now AS timestamptz)
                         ELSE m.failed_at END,
        send_after = CASE WHEN {LATE_RETRY} THEN m.send_after ELSE coalesce(o.retry_at, m.send_after) END,
        queued_until = CASE WHEN o.status = 'queued' AND NOT {LATE_RETRY} THEN NULL ELSE m.queued_until END
    FROM outcome o
    WHERE m.workspace_id = o.workspace_id AND m.id = o.id AND m.status IN ('sending', 'unknown')
      AND m.attempts = o.attempt
    RETURNING m.*
)
{
    outbox.emit_rows_sql(
        "(SELECT guanxi_uuid7() AS id, u.workspace_id, 'message.' || u.status AS type, "
        f"{messages.MESSAGE_EVENT.sql('u')} AS data, {_OUTCOME_ACTOR} AS actor "
        "FROM updated u WHERE u.status IN ('sent', 'failed'))",
        workspace_id="new_events.workspace_id",
        event_type="new_events.type",
        at="CAST(:now AS timestamptz)",
        actor="new_events.actor",
    )
}
"""


def _next_status(claimed: Claimed, result: Result) -> str:
    if result.status == "accepted":
        return "sent"
    if result.status == "unknown":
        return "unknown"
    return "queued" if result.retryable and claimed.attempt < MAX_ATTEMPTS else "failed"


async def record(session: AsyncSession, outcomes: list[tuple[Claimed, Result]], *, now: datetime) -> None:
    """Each outcome on its message, with its event, in the caller's transaction (one statement)."""
    if not outcomes:
        return
    statuses = [_next_status(c, r) for c, r in outcomes]
    await session.execute(
        text(RECORD_SQL),
        {
            "workspace_ids": [c.workspace_id for c, _ in outcomes],
            "ids": [c.id for c, _ in outcomes],
            "attempts": [c.attempt for c, _ in outcomes],
            "statuses": statuses,
            "provider_ids": [r.provider_message_id for _, r in outcomes],
            "codes": [None if s == "sent" else r.code for s, (_, r) in zip(statuses, outcomes, strict=True)],
            "texts": [None if s == "sent" else r.message for s, (_, r) in zip(statuses, outcomes, strict=True)],
            "retry_at": [
                now + retry_delay(c.attempt) if s == "queued" else None
                for s, (c, _) in zip(statuses, outcomes, strict=True)
            ],
            "now": now,
        },
    )


def encode(job: Job) -> list[list[str]]:
    return [[str(w), str(i)] for w, i in job.messages]


def decode(data: Any) -> list[tuple[uuid.UUID, uuid.UUID]]:
    return [(uuid.UUID(w), uuid.UUID(i)) for w, i in data]


def lease(settings: Settings) -> timedelta:
    """A claim outlives the longest a job's sends can take (an SMTP connection sends its share one
    after another, each within the time limit) by a margin, so only a dead worker lets it run out."""
    in_turn = -(-MESSAGES_PER_JOB // SMTP_CONNECTIONS)
    return timedelta(seconds=settings.outreach_send_timeout_seconds * in_turn + 60)


def jobs_at_once(settings: Settings) -> int:
    """Jobs one worker runs at once: OUTREACH_CONCURRENCY messages in flight, a job's worth each."""
    return max(1, settings.outreach_concurrency // MESSAGES_PER_JOB)
