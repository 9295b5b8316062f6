"""Driving webhook delivery step by step with a controlled clock, as the worker would."""

import uuid
from datetime import datetime

import asyncpg
from fastapi import FastAPI
from sqlalchemy import select

from app.core.settings import Settings, get_settings
from app.models import WebhookAttempt, WebhookDelivery
from app.services.events import webhook_delivery, webhook_dispatch
from app.services.events.webhook_dispatch import AttemptBatch, DueAttempt
from app.workers import deliveries as delivery_jobs


def fast_settings(**overrides: object) -> Settings:
    return get_settings().model_copy(update={"webhook_timeout_seconds": 2.0, **overrides})


async def fan_out(app: FastAPI, now: datetime) -> list[AttemptBatch]:
    """Fan-out as the worker runs it; returns the jobs it made, which nobody queues here."""
    async with app.state.sessions() as session:
        _, jobs = await webhook_dispatch.fan_out(session, now=now)
        await session.commit()
    return jobs


async def settle(app: FastAPI, now: datetime) -> None:
    """Hold or release the deliveries of endpoints disabled or enabled again, as the worker does."""
    async with app.state.sessions() as session:
        while await webhook_dispatch.settle(session, now=now) >= webhook_dispatch.SETTLE_BATCH:
            await session.commit()
        await session.commit()


async def jobs_for(app: FastAPI, workspace_id: uuid.UUID, now: datetime) -> list[AttemptBatch]:
    """The jobs a fan-out at `now` makes for one workspace."""
    return [job for job in await fan_out(app, now) if job.attempts[0].workspace_id == workspace_id]


async def due_for(app: FastAPI, workspace_id: uuid.UUID, now: datetime) -> list[DueAttempt]:
    """What the sweep queues at `now` (keyed to jobs nobody runs here), for one workspace."""
    async with app.state.sessions() as session:
        jobs = await webhook_dispatch.queue_due(session, now=now)
        await session.commit()
    return [a for job in jobs for a in job.attempts if a.workspace_id == workspace_id]


async def run_due(
    app: FastAPI, pool: asyncpg.Pool, workspace_id: uuid.UUID, now: datetime, settings: Settings | None = None
) -> list[webhook_delivery.Scheduled | None]:
    """One worker pass for one workspace: fan out, then send every due attempt as one job, through
    the job's own entrypoint function and payload."""
    await fan_out(app, now)
    await settle(app, now)
    due = await due_for(app, workspace_id, now)
    if not due:
        return []
    settings = settings or fast_settings()
    async with webhook_delivery.http_client(10, allow_private=settings.webhook_allow_private_targets) as client:
        return await delivery_jobs.deliver(pool, client, delivery_jobs.encode(due), now=now, settings=settings)


async def deliveries(app: FastAPI, workspace_id: uuid.UUID) -> list[WebhookDelivery]:
    async with app.state.sessions() as session:
        rows = await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.workspace_id == workspace_id).order_by(WebhookDelivery.id)
        )
        return list(rows.all())


async def attempts(app: FastAPI, delivery_id: uuid.UUID) -> list[WebhookAttempt]:
    async with app.state.sessions() as session:
        rows = await session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.attempt)
        )
        return list(rows.all())
