"""Domain events, written to the outbox in the transaction of the change they describe: `emit` for
one event through the session, `emit_rows_sql` for the events of a set-based statement, as SQL it runs
(alone or as one of its CTEs). Their `data` comes from the type's serialiser (`payloads.Payload`)."""

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.models import OutboxEvent

# The actor of the worker's own jobs (SLA checks, endpoint disabling, segment refreshes), as SQL.
SYSTEM_ACTOR_SQL = """'{"type": "system", "id": null}'::jsonb"""


def emit(session: AsyncSession, ctx: Caller, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    event = OutboxEvent(
        workspace_id=ctx.workspace_id, type=event_type, occurred_at=clock.now(), actor=ctx.actor, data=data
    )
    session.add(event)
    return event


# The worker listens here. A trigger on the outbox notifies at the commit of every transaction that
# wrote events; work with no event to announce it (a queued import, a requested recompute) calls
# `wake_workers` in its own transaction.
CHANNEL = "guanxi_outbox"


async def wake_workers(session: AsyncSession) -> None:
    """Delivered at commit, and dropped with a rollback: the workers take the work at once instead
    of at their next sweep or schedule tick."""
    await session.execute(select(func.pg_notify(CHANNEL, "")))


def published_unless_heard(workspace_id: str, event_type: str, at: str) -> str:
    """SQL for `published_at` of the events a bulk statement writes (its arguments are SQL
    expressions): `at` when no enabled endpoint of the workspace subscribes to the type, so the
    fan-out has nothing to do for them and never reads or updates them; NULL otherwise. An
    uncorrelated subquery, so PostgreSQL evaluates it once per statement."""
    return (
        f"(SELECT CASE WHEN EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.workspace_id = {workspace_id} "
        f"AND e.enabled AND ({event_type} = ANY (e.event_types) "
        f"OR split_part({event_type}, '.', 1) || '.*' = ANY (e.event_types) OR '*' = ANY (e.event_types))) "
        f"THEN NULL ELSE {at} END)"
    )


def emit_rows_sql(
    events: str, *, workspace_id: str, event_type: str, at: str, actor: str, returning: str | None = None
) -> str:
    """SQL of `emit` for many events of one type in one statement: an event per row of `events` (a
    SELECT, or a CTE's name, with the columns id and data; `new_events` in the other arguments); the
    other arguments are SQL expressions. Written as fanned out already when no endpoint hears the
    type (`published_unless_heard`). `returning` for a statement that counts what it wrote."""
    return (
        "INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data, published_at) "
        f"SELECT {workspace_id}, new_events.id, {event_type}, {at}, {actor}, new_events.data, "
        f"{published_unless_heard(workspace_id, event_type, at)} FROM {events} AS new_events"
        + (f" RETURNING {returning}" if returning else "")
    )
