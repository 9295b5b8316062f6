"""The polled event stream, endpoint management, SSRF refusals, and the worker end to end."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from pgqueuer import AsyncpgDriver, Queries
from sqlalchemy import delete, select, update
from standardwebhooks.webhooks import Webhook

from app.core import clock
from app.core.db import asyncpg_dsn
from app.core.settings import get_settings
from app.models import WebhookDelivery, Workspace
from app.services.events import webhook_dispatch, webhook_targets
from app.services.events.event_catalogue import CATALOGUE
from app.services.events.webhook_dispatch import DueAttempt
from app.workers import deliveries
from app.workers.worker import Worker
from tests.factories import Tenant, customer_body, make_tenant
from tests.receiver import Answer, Receiver
from tests.webhook_helpers import jobs_for


async def _settled(
    client: httpx.AsyncClient, tenant: Tenant, expected: int, **params: str | int
) -> list[dict[str, object]]:
    """The stream shows an event once every older transaction in the cluster has ended, so a
    transaction elsewhere can hold it back for a moment: poll until all `expected` are there."""
    async with asyncio.timeout(15):
        while True:
            page = (
                await client.get("/api/v1/events", params={"limit": 100, **params}, headers=tenant.headers())
            ).json()
            if len(page["items"]) >= expected:
                return list(page["items"])
            await asyncio.sleep(0.1)


async def test_event_stream_pages_in_commit_order(live_client: httpx.AsyncClient, live_tenant: Tenant) -> None:
    ids = []
    for i in range(5):
        created = await live_client.post(
            "/api/v1/customers", json=customer_body(name=f"客户{i}"), headers=live_tenant.headers()
        )
        ids.append(created.json()["id"])
    await _settled(live_client, live_tenant, 5)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await live_client.get("/api/v1/events", params=params, headers=live_tenant.headers())).json()
        seen += [e["data"]["id"] for e in page["items"]]
        assert all(e["type"] == "customer.created" for e in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    whole = (await live_client.get("/api/v1/events", params={"limit": 100}, headers=live_tenant.headers())).json()
    assert len(whole["items"]) == 5 and whole["next_cursor"] is None


async def test_event_stream_filters_by_type_and_never_crosses_workspaces(
    live_client: httpx.AsyncClient, live_tenant: Tenant, app: FastAPI
) -> None:
    async with app.state.sessions() as session:
        other = await make_tenant(session)
        await session.commit()
    try:
        created = (
            await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
        ).json()
        await live_client.patch(
            f"/api/v1/customers/{created['id']}",
            json={"title": "x"},
            headers={**live_tenant.headers(), "If-Match": '"1"'},
        )
        await live_client.post("/api/v1/customers", json=customer_body(), headers=other.headers())
        everything = await _settled(live_client, live_tenant, 2, type="customer.*")
        assert {e["workspace_id"] for e in everything} == {str(live_tenant.id)}
        assert len(everything) == 2
        page = (
            await live_client.get("/api/v1/events", params={"type": "customer.updated"}, headers=live_tenant.headers())
        ).json()
        assert [e["type"] for e in page["items"]] == ["customer.updated"]
    finally:
        async with app.state.sessions() as session:
            await session.execute(delete(Workspace).where(Workspace.id == other.id))
            await session.commit()


@pytest.mark.parametrize(
    "query", ["cursor=garbage", "type=nonsense.event", "limit=500", "cursor=WzEsIm5vdC1hLXV1aWQiXQ"]
)
async def test_event_stream_rejects_bad_queries(client: httpx.AsyncClient, tenant: Tenant, query: str) -> None:
    response = await client.get(f"/api/v1/events?{query}", headers=tenant.headers())
    assert response.status_code == 422


async def test_event_catalogue_is_served_and_in_openapi(client: httpx.AsyncClient, tenant: Tenant) -> None:
    served = (await client.get("/api/v1/events/types", headers=tenant.headers())).json()
    assert {t["name"] for t in served["items"]} == {e.name for e in CATALOGUE}
    created = next(t for t in served["items"] if t["name"] == "customer.created")
    assert "code" in created["schema"]["properties"]
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["webhooks"]) == {e.name for e in CATALOGUE}


async def test_events_and_webhooks_need_their_scopes(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for role in ("manager", "sales", "support", "readonly"):
        headers = tenant.headers(role)
        assert (await client.get("/api/v1/events", headers=headers)).status_code == 403
        assert (await client.get("/api/v1/webhook-endpoints", headers=headers)).status_code == 403


async def test_endpoint_crud_shows_the_secret_once(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = await client.post(
        "/api/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["customer.*", "webhook.ping"], "description": "ERP"},
        headers=tenant.headers(),
    )
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("whsec_")
    url = f"/api/v1/webhook-endpoints/{body['id']}"
    read = await client.get(url, headers=tenant.headers())
    assert "secret" not in read.json() and read.headers["etag"] == '"1"'
    listed = (await client.get("/api/v1/webhook-endpoints", headers=tenant.headers())).json()
    assert all("secret" not in e for e in listed["items"])
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404
    patched = await client.patch(
        url, json={"event_types": ["customer.created"]}, headers={**tenant.headers(), "If-Match": '"1"'}
    )
    assert patched.json()["event_types"] == ["customer.created"]
    assert (
        await client.patch(url, json={"enabled": False}, headers={**tenant.headers(), "If-Match": '"1"'})
    ).status_code == 412
    assert (await client.delete(url, headers={**tenant.headers(), "If-Match": '"2"'})).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/x", "event_types": ["customer.*"]},
        {"url": "not a url", "event_types": ["customer.*"]},
        {"url": "http://127.0.0.1/x", "event_types": []},
        {"url": "http://127.0.0.1/x", "event_types": ["customer.exploded"]},
        {"url": "http://127.0.0.1/x", "event_types": ["nothing.*"]},
        {"url": "http://user:pw@127.0.0.1/x", "event_types": ["*"]},
        {"url": "http://127.0.0.1/x", "event_types": ["*"], "secret": "mine"},
    ],
)
async def test_bad_endpoints_are_422(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object]) -> None:
    assert (await client.post("/api/v1/webhook-endpoints", json=body, headers=tenant.headers())).status_code == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://0/hook",
        "http://[::127.0.0.1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[::ffff:0:7f00:1]/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[2002:a00:1::1]/hook",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",
        "http://[64:ff9b:1::a00:1]/hook",
        "http://[::10.0.0.1]/hook",
    ],
)
async def test_private_and_metadata_targets_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setattr(get_settings(), "webhook_allow_private_targets", False)
    response = await client.post(
        "/api/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]}, headers=tenant.headers()
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] == "blocked_target"
    # The refusal names the setting that lets a private network's receiver in.
    assert "GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS=true" in response.json()["errors"][0]["msg"]
    with pytest.raises(webhook_targets.TargetBlocked):
        await webhook_targets.check_target(url, allow_private=False)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("::127.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::808:808", True),
        ("::ffff:169.254.169.254", False),
        ("::ffff:0:a00:1", False),
        ("2002:c0a8:101::1", False),
        ("2002:808:808::1", True),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),
        ("64:ff9b:1::808:808", False),
        ("::", False),
        ("::1", False),
        ("2606:4700::1111", True),
        ("8.8.8.8", True),
    ],
)
def test_targets_are_judged_by_the_ipv4_address_they_embed(address: str, public: bool) -> None:
    assert webhook_targets.is_public(address) is public


async def _listening(client: httpx.AsyncClient, tenant: Tenant, receiver: Receiver) -> dict[str, Any]:
    """An endpoint at the receiver for customer.created; the receiver verifies with its secret."""
    response = await client.post(
        "/api/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["customer.created"]},
        headers=tenant.headers(),
    )
    endpoint: dict[str, Any] = response.json()
    receiver.secrets = [endpoint["secret"]]
    return endpoint


@asynccontextmanager
async def _running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=20)


async def test_worker_delivers_a_committed_event_end_to_end(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await _listening(live_client, live_tenant, receiver)
    # With the periodic sweep an hour away, only the NOTIFY sent at commit can wake the worker.
    worker = Worker(get_settings(), database_url, sweep_seconds=3600)
    async with _running(worker):
        await asyncio.wait_for(worker.ready.wait(), timeout=10)
        created = (
            await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
        ).json()
        await receiver.wait_for(1, limit=10)
    payload = Webhook(endpoint["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["data"]["id"] == created["id"]


async def test_worker_sends_a_backlog_in_batched_jobs_and_retries_when_due(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _listening(live_client, live_tenant, receiver)
    receiver.script = [Answer(500), Answer(200)]
    for _ in range(25):
        response = await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
        assert response.status_code == 201
    # The worker's clock, moved forward by the test to make the retry due.
    ahead = [timedelta(0)]
    worker = Worker(get_settings(), database_url, now=lambda: clock.now() + ahead[0], sweep_seconds=0.2)
    async with _running(worker):
        await receiver.wait_for(25, limit=20)
        # The failed attempt's retry is five seconds away on the worker's clock: nothing more is sent.
        await asyncio.sleep(1)
        assert len(receiver.received) == 25
        ahead[0] = timedelta(seconds=10)
        await receiver.wait_for(26, limit=20)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 25
    async with app.state.sessions() as session:
        done = (
            await session.scalars(select(WebhookDelivery).where(WebhookDelivery.workspace_id == live_tenant.id))
        ).all()
    assert sorted((d.state, d.attempts) for d in done) == [("succeeded", 1)] * 24 + [("succeeded", 2)]
    # Three jobs of up to ATTEMPTS_PER_JOB carried the first attempts (the retried delivery's key is
    # its retry's job now).
    first_jobs = Counter(d.job_key for d in done if d.attempts == 1)
    assert len(first_jobs) == 3 and max(first_jobs.values()) <= webhook_dispatch.ATTEMPTS_PER_JOB


def test_jobs_of_one_attempt_from_workers_before_batching_are_read() -> None:
    attempts = [DueAttempt(uuid.uuid4(), uuid.uuid4(), 3), DueAttempt(uuid.uuid4(), uuid.uuid4(), 1)]
    assert deliveries.decode(deliveries.encode(attempts)) == attempts
    old = {"w": str(attempts[0].workspace_id), "d": str(attempts[0].delivery_id), "a": 3}
    assert deliveries.decode(orjson.dumps(old)) == attempts[:1]


async def test_the_worker_runs_a_job_of_one_attempt_queued_before_batching(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await _listening(live_client, live_tenant, receiver)
    await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    [job] = await jobs_for(app, live_tenant.id, clock.now())
    [due] = job.attempts
    # Queued as a worker from before batching queued it: its own name, its payload, its key.
    old_key = f"webhook:{due.delivery_id}:1"
    async with app.state.sessions() as session:
        await session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == due.delivery_id).values(job_key=old_key)
        )
        await session.commit()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    payload = {"w": str(due.workspace_id), "d": str(due.delivery_id), "a": 1}
    await Queries(AsyncpgDriver(conn)).enqueue(
        [deliveries.DELIVER_ONE], [orjson.dumps(payload)], [0], dedupe_key=[old_key]
    )
    try:
        async with _running(Worker(get_settings(), database_url, sweep_seconds=3600)):
            await receiver.wait_for(1, limit=10)
    finally:
        await conn.execute("DELETE FROM pgqueuer WHERE dedupe_key = $1", old_key)
        await conn.close()
    assert Webhook(endpoint["secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
