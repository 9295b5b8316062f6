"""Fan-out of committed events to subscribed endpoints, and the sweep that keeps deliveries moving.

Both are set-based and safe to run in several workers at once (`FOR UPDATE SKIP LOCKED`). Attempts
go to the job queue in batches: one job carries up to ATTEMPTS_PER_JOB of them, so the queue's
per-job statements and the worker's claim and record are paid once per batch, not per delivery."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, literal, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.ids import new_id
from app.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint

ATTEMPTS_PER_JOB = 10


@dataclass(frozen=True)
class DueAttempt:
    """Which delivery, and which attempt number a job is for."""

    workspace_id: uuid.UUID
    delivery_id: uuid.UUID
    attempt: int


@dataclass(frozen=True)
class AttemptBatch:
    """A job's payload, and its dedupe key (stored on each of its deliveries as `job_key`)."""

    key: str
    attempts: list[DueAttempt]


def batches(attempts: Sequence[DueAttempt]) -> list[AttemptBatch]:
    """Consecutive attempts in jobs of up to ATTEMPTS_PER_JOB, each keyed by its first attempt."""
    chunks = [list(attempts[i : i + ATTEMPTS_PER_JOB]) for i in range(0, len(attempts), ATTEMPTS_PER_JOB)]
    return [AttemptBatch(f"webhook:{chunk[0].delivery_id}:{chunk[0].attempt}", chunk) for chunk in chunks]


def _subscribed() -> ColumnElement[bool]:
    """The endpoint's patterns cover the event type: exact, `family.*`, or `*`."""
    family = func.split_part(OutboxEvent.type, ".", 1) + ".*"
    return or_(
        OutboxEvent.type == func.any(WebhookEndpoint.event_types),
        family == func.any(WebhookEndpoint.event_types),
        literal("*") == func.any(WebhookEndpoint.event_types),
    )


FAN_OUT_BATCH = 500


async def fan_out(
    session: AsyncSession, *, now: datetime, batch: int = FAN_OUT_BATCH
) -> tuple[int, list[AttemptBatch]]:
    """Turn unpublished events into deliveries for every subscribed endpoint (one transaction; the
    caller commits, then queues the returned jobs): pending for an enabled endpoint, held for a
    disabled one until it is enabled again. Events are taken in commit order. Returns how many
    events were taken, and the jobs carrying the new pending deliveries' first attempts."""
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
            select(OutboxEvent.workspace_id, OutboxEvent.id, WebhookEndpoint.id, WebhookEndpoint.enabled)
            .join(WebhookEndpoint, WebhookEndpoint.workspace_id == OutboxEvent.workspace_id)
            .where(OutboxEvent.id.in_(event_ids), _subscribed())
            .order_by(OutboxEvent.txid, OutboxEvent.id)
        )
    ).all()
    await session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(event_ids)).values(published_at=now))
    if not pairs:
        return len(event_ids), []
    held_for = await _still_disabled(session, {(w, e) for w, _, e, enabled in pairs if not enabled})
    firsts = [DueAttempt(workspace_id, new_id(), 1) for workspace_id, _, _, _ in pairs]
    # A job carries attempts to one endpoint: a slow receiver does not delay other partners' records.
    by_endpoint: dict[uuid.UUID, list[DueAttempt]] = {}
    for (_, _, endpoint_id, _), first in zip(pairs, firsts, strict=True):
        if endpoint_id not in held_for:
            by_endpoint.setdefault(endpoint_id, []).append(first)
    jobs = [job for attempts in by_endpoint.values() for job in batches(attempts)]
    job_key = {a.delivery_id: job.key for job in jobs for a in job.attempts}
    rows = [
        {
            "workspace_id": workspace_id,
            "id": first.delivery_id,
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "state": "held" if endpoint_id in held_for else "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "job_key": job_key.get(first.delivery_id),
            "created_at": now,
            "updated_at": now,
        }
        for (workspace_id, event_id, endpoint_id, _), first in zip(pairs, firsts, strict=True)
    ]
    inserted = set(
        (
            await session.scalars(
                insert(WebhookDelivery).values(rows).on_conflict_do_nothing().returning(WebhookDelivery.id)
            )
        ).all()
    )
    kept = [AttemptBatch(job.key, [a for a in job.attempts if a.delivery_id in inserted]) for job in jobs]
    return len(event_ids), [job for job in kept if job.attempts]


async def _still_disabled(session: AsyncSession, endpoints: set[tuple[uuid.UUID, uuid.UUID]]) -> set[uuid.UUID]:
    """Of these endpoints, read as disabled, those still disabled, locked (FOR KEY SHARE, which a
    delivery's record does not wait for) until the fan-out commits: a re-enable waits for it and
    then releases the deliveries held here, and one that committed first leaves the endpoint out."""
    if not endpoints:
        return set()
    locked = (
        select(WebhookEndpoint.id)
        .where(
            tuple_(WebhookEndpoint.workspace_id, WebhookEndpoint.id).in_(endpoints), WebhookEndpoint.enabled.is_(False)
        )
        .with_for_update(read=True, key_share=True)
    )
    return set((await session.scalars(locked)).all())


async def recover_abandoned(session: AsyncSession, *, now: datetime) -> int:
    """Deliveries whose worker died mid-send: log the lost attempt and make them due again. The
    receiver may have got the lost attempt; the same `webhook-id` lets it drop the repeat."""
    stalled = (
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.state == "sending", WebhookDelivery.locked_until < now)
            .values(state="pending", next_attempt_at=now, locked_until=None, updated_at=now, job_key=None,
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


QUEUE_DUE_SQL = text("""
WITH oldest AS (
    SELECT d.workspace_id, d.id, d.job_key
    FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.workspace_id = d.workspace_id AND e.id = d.endpoint_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= :now AND e.enabled
    ORDER BY d.next_attempt_at
    LIMIT :limit
),
stranded AS (
    SELECT o.* FROM oldest o
    -- The job queue's table (its schema is frozen in the webhooks migration).
    WHERE NOT EXISTS (SELECT 1 FROM pgqueuer q
                      WHERE q.dedupe_key = o.job_key AND q.status IN ('queued', 'picked'))
),
taken AS (
    -- Rows locked elsewhere (another sweep, a redelivery) are left to the next sweep, never waited
    -- for; one re-keyed by a sweep that committed meanwhile no longer has the key read here.
    SELECT d.workspace_id, d.id, d.endpoint_id, d.next_attempt_at
    FROM webhook_deliveries d
    JOIN stranded s ON d.workspace_id = s.workspace_id AND d.id = s.id
    WHERE d.state = 'pending' AND d.job_key IS NOT DISTINCT FROM s.job_key
    FOR UPDATE OF d SKIP LOCKED
),
keyed AS (
    SELECT t.workspace_id, t.id,
           CAST(:sweep AS text) || t.endpoint_id || ':'
           || ((row_number() OVER (PARTITION BY t.endpoint_id ORDER BY t.next_attempt_at, t.id) - 1) / :per_job)
           AS new_key
    FROM taken t
)
UPDATE webhook_deliveries d SET job_key = k.new_key
FROM keyed k
WHERE d.workspace_id = k.workspace_id AND d.id = k.id
RETURNING d.workspace_id, d.id, d.attempts, d.job_key
""")


async def queue_due(session: AsyncSession, *, now: datetime, limit: int = 1000) -> list[AttemptBatch]:
    """Due pending deliveries on enabled endpoints that no waiting or running job carries: retries
    whose time has come, and deliveries whose job was lost (a crash between commit and enqueue) or
    ended without taking them (the endpoint was disabled then). Keys them to new jobs, one
    endpoint's to a job, which the caller queues after commit. Only the oldest `limit` due are
    looked at, so a backlog costs the sweep no more; a delivery nobody carries stays due and is
    queued once the deliveries due before it have gone out."""
    rows = (
        await session.execute(
            QUEUE_DUE_SQL, {"now": now, "limit": limit, "per_job": ATTEMPTS_PER_JOB, "sweep": f"webhook:{new_id()}:"}
        )
    ).all()
    grouped: dict[str, list[DueAttempt]] = {}
    for workspace_id, delivery_id, attempts, key in rows:
        grouped.setdefault(key, []).append(DueAttempt(workspace_id, delivery_id, attempts + 1))
    return [AttemptBatch(key, attempts) for key, attempts in grouped.items()]


SETTLE_BATCH = 2000
# Batches a dispatch pass settles at most before it goes on to fan-out's and the sweep's work; the
# next pass goes on with the rest.
SETTLE_ROUNDS = 25


async def settle(session: AsyncSession, *, now: datetime, batch: int = SETTLE_BATCH) -> int:
    """One batch for each endpoint whose deliveries are to move (`settling`): a disabled endpoint's
    pending deliveries become held; an enabled one's held deliveries become due now, each starting
    its retry schedule afresh. An endpoint whose batch comes up short is settled. The endpoint's row
    is locked, so an owner's enable or disable waits for the batch (and a settle in another worker
    passes it over). Batches keep each statement short whatever an outage left behind. Returns how
    many deliveries moved; the caller commits, and calls again while that is a batch or more."""
    endpoints = (
        await session.execute(
            select(WebhookEndpoint.workspace_id, WebhookEndpoint.id, WebhookEndpoint.enabled)
            .where(WebhookEndpoint.settling.is_(True))
            .limit(100)
            .with_for_update(skip_locked=True)
        )
    ).all()
    moved = 0
    for workspace_id, endpoint_id, enabled in endpoints:
        # Picked once (a materialised CTE): as a subquery of the UPDATE, the batch's LIMIT did not
        # bound what the statement updated.
        picked = (
            select(WebhookDelivery.workspace_id, WebhookDelivery.id)
            .where(
                WebhookDelivery.workspace_id == workspace_id,
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.state == ("held" if enabled else "pending"),
            )
            .limit(batch)
            .with_for_update()
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        released = {"state": "pending", "next_attempt_at": now, "schedule_offset": WebhookDelivery.attempts}
        result = await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.workspace_id == picked.c.workspace_id, WebhookDelivery.id == picked.c.id)
            .values(job_key=None, updated_at=now, **(released if enabled else {"state": "held"}))
            .execution_options(synchronize_session=False)
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count < batch:
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.id == endpoint_id)
                .values(settling=False)
            )
        moved += count
    return moved
