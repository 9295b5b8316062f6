"""Domain events, written to the outbox in the transaction of the change they describe."""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.access import Caller
from app.models import OutboxEvent


def emit(session: AsyncSession, ctx: Caller, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    event = OutboxEvent(
        workspace_id=ctx.workspace_id, type=event_type, occurred_at=clock.now(), actor=ctx.actor, data=data
    )
    session.add(event)
    return event
