"""How many webhook attempts the worker has in flight: its configured concurrency, whether events
come one by one or in a burst, and never so many to one endpoint that the others wait for it."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.core.settings import get_settings
from app.models import WebhookDelivery
from app.workers.worker import Worker
from tests.factories import Tenant, customer_body
from tests.receiver import Answer, Receiver, running_receiver

CONCURRENCY = 4


@contextlib.asynccontextmanager
async def _running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), timeout=10)
        yield
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=20)


@contextlib.asynccontextmanager
async def _holding(receiver: Receiver) -> AsyncIterator[asyncio.Event]:
    """The receiver holds every request until the event is set, and at the latest on the way out:
    a request held for ever would keep the worker and the receiver from stopping."""
    answer = asyncio.Event()
    receiver.script = [Answer(hold=answer)]
    try:
        yield answer
    finally:
        answer.set()


def _worker(database_url: str, *, per_endpoint: int | None, sweep_seconds: float = 3600) -> Worker:
    settings = get_settings().model_copy(
        update={"worker_concurrency": CONCURRENCY, "webhook_endpoint_concurrency": per_endpoint}
    )
    # With the sweep an hour away (unless asked), jobs come only from the fan-out at each commit.
    return Worker(settings, database_url, sweep_seconds=sweep_seconds)


async def _listening(client: httpx.AsyncClient, tenant: Tenant, receiver: Receiver) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["customer.created"]},
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    receiver.secrets = [endpoint["secret"]]
    return endpoint


async def _create_customer(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
    assert response.status_code == 201, response.text


async def _states(app: FastAPI, tenant: Tenant) -> list[str]:
    async with app.state.sessions() as session:
        rows = await session.scalars(select(WebhookDelivery.state).where(WebhookDelivery.workspace_id == tenant.id))
        return sorted(rows.all())


async def test_events_committed_one_at_a_time_reach_the_worker_concurrency(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _listening(live_client, live_tenant, receiver)
    async with _running(_worker(database_url, per_endpoint=CONCURRENCY)), _holding(receiver) as answer:
        # Each event is in flight before the next is committed: every job carries one attempt.
        for sent in range(1, CONCURRENCY + 1):
            await _create_customer(live_client, live_tenant)
            await receiver.wait_for(sent)
        assert receiver.in_flight == CONCURRENCY
        # Two more while the worker is full: they wait for a slot, and go out once answers come.
        for _ in range(2):
            await _create_customer(live_client, live_tenant)
        answer.set()
        await receiver.wait_for(CONCURRENCY + 2)
    assert receiver.most_in_flight == CONCURRENCY
    assert receiver.unverified == []
    assert len({r.headers["webhook-id"] for r in receiver.received}) == CONCURRENCY + 2
    assert await _states(app, live_tenant) == ["succeeded"] * (CONCURRENCY + 2)


async def test_a_burst_keeps_the_worker_concurrency_in_flight_and_no_more(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _listening(live_client, live_tenant, receiver)
    events = 3 * CONCURRENCY
    # Committed before the worker starts: its first fan-out makes jobs of several attempts.
    for _ in range(events):
        await _create_customer(live_client, live_tenant)
    async with _running(_worker(database_url, per_endpoint=CONCURRENCY)), _holding(receiver) as answer:
        await receiver.wait_for(CONCURRENCY)
        answer.set()
        await receiver.wait_for(events)
    assert receiver.most_in_flight == CONCURRENCY
    assert len({r.headers["webhook-id"] for r in receiver.received}) == events
    assert await _states(app, live_tenant) == ["succeeded"] * events


async def test_a_slow_endpoint_does_not_stop_deliveries_to_a_fast_one(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    async with running_receiver() as slow:
        await _listening(live_client, live_tenant, slow)
        await _listening(live_client, live_tenant, receiver)
        events = 3 * CONCURRENCY
        # The default share: half the worker's slots to one endpoint. A sweep that runs often
        # queues again what the slow endpoint's jobs left while it held its share.
        worker = _worker(database_url, per_endpoint=None, sweep_seconds=0.2)
        async with _running(worker), _holding(slow) as answer:
            for _ in range(events):
                await _create_customer(live_client, live_tenant)
            # Every event reaches the fast receiver while the slow one answers none.
            await receiver.wait_for(events, limit=30)
            await slow.wait_for(CONCURRENCY // 2)
            assert slow.in_flight == CONCURRENCY // 2
            answer.set()
            # What the slow endpoint was left is sent once it answers, each event once.
            await slow.wait_for(events, limit=30)
        assert slow.most_in_flight == CONCURRENCY // 2
        assert len({r.headers["webhook-id"] for r in slow.received}) == events
    assert len({r.headers["webhook-id"] for r in receiver.received}) == events
    assert await _states(app, live_tenant) == ["succeeded"] * (2 * events)
