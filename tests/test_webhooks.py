"""Signed webhook delivery to a real receiver: signatures, retries, failures and concurrency."""

import asyncio
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from pgqueuer import AsyncpgDriver, Queries
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core import clock
from app.core.settings import Settings
from app.core.wire import utc_text
from app.models import OutboxEvent, WebhookDelivery
from app.services.events import webhook_delivery, webhook_dispatch, webhook_endpoints, webhook_targets
from app.workers.deliveries import DELIVER
from tests.factories import Tenant, customer_body
from tests.receiver import Answer, Receiver, free_port, running_receiver
from tests.webhook_helpers import attempts, deliveries, due_for, fan_out, fast_settings, jobs_for, run_due


async def _endpoint(
    client: httpx.AsyncClient, tenant: Tenant, url: str, types: list[str] | None = None
) -> dict[str, object]:
    response = await client.post(
        "/api/v1/webhook-endpoints", json={"url": url, "event_types": types or ["customer.*"]}, headers=tenant.headers()
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _verified_endpoint(
    client: httpx.AsyncClient, tenant: Tenant, receiver: Receiver, types: list[str] | None = None
) -> dict[str, object]:
    """An endpoint at the receiver, which then verifies every delivery with its secret."""
    endpoint = await _endpoint(client, tenant, receiver.url, types)
    receiver.secrets = [str(endpoint["secret"])]
    return endpoint


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> dict[str, object]:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_delivery_is_signed_per_standard_webhooks(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    customer = await _customer(live_client, live_tenant, name="张伟")
    await run_due(app, pool, live_tenant.id, clock.now())
    assert len(receiver.received) == 1
    delivered = receiver.received[0]
    payload = Webhook(str(endpoint["secret"])).verify(delivered.body, delivered.headers)
    assert payload["type"] == "customer.created"
    assert payload["data"]["id"] == customer["id"]
    assert payload["workspace_id"] == str(live_tenant.id)
    assert delivered.headers["webhook-id"] == payload["id"]
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.state == "succeeded"


async def test_wrong_secret_does_not_verify(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    await run_due(app, pool, live_tenant.id, clock.now())
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(receiver.received[0].body, receiver.received[0].headers)


async def test_only_subscribed_types_are_delivered(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _verified_endpoint(live_client, live_tenant, receiver, ["customer.updated"])
    created = await _customer(live_client, live_tenant)
    await live_client.patch(
        f"/api/v1/customers/{created['id']}",
        json={"title": "CEO"},
        headers={**live_tenant.headers(), "If-Match": '"1"'},
    )
    await run_due(app, pool, live_tenant.id, clock.now())
    assert [orjson.loads(r.body)["type"] for r in receiver.received] == ["customer.updated"]


async def test_a_rolled_back_change_emits_nothing(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    await _customer(live_client, live_tenant, emails=["taken@example.com"])
    refused = await live_client.post(
        "/api/v1/customers", json=customer_body(emails=["taken@example.com"]), headers=live_tenant.headers()
    )
    assert refused.status_code == 409
    async with app.state.sessions() as session:
        count = await session.scalar(select(func.count()).where(OutboxEvent.workspace_id == live_tenant.id))
    assert count == 1


async def test_receiver_failing_three_times_then_succeeding_follows_the_schedule(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(500), Answer(502), Answer(503), Answer(200)]
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    now = clock.now()
    for expected_delay in (timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30)):
        [scheduled] = await run_due(app, pool, live_tenant.id, now)
        assert scheduled is not None
        assert expected_delay * 0.9 <= scheduled.delay <= expected_delay * 1.1
        # Not due yet a moment before the delay ends: nothing is sent.
        assert await run_due(app, pool, live_tenant.id, now + scheduled.delay * 0.5) == []
        now += scheduled.delay
    assert await run_due(app, pool, live_tenant.id, now) == [None]
    assert len(receiver.received) == 4
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.state == "succeeded" and delivery.attempts == 4
    assert [a.status_code for a in await attempts(app, delivery.id)] == [500, 502, 503, 200]


async def test_receiver_down_schedules_a_retry(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    await _endpoint(live_client, live_tenant, f"http://127.0.0.1:{free_port()}/down")
    await _customer(live_client, live_tenant)
    [scheduled] = await run_due(app, pool, live_tenant.id, clock.now())
    assert scheduled is not None and scheduled.due.attempt == 2
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.state == "pending"
    # Refused: the log names the connection that could not be made, not a timeout.
    assert "ClientConnectorError" in (delivery.last_error or "") and "Connect call failed" in (
        delivery.last_error or ""
    )


async def test_retry_after_on_429_is_honoured(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(429, headers={"Retry-After": "3600"})]
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    [scheduled] = await run_due(app, pool, live_tenant.id, clock.now())
    assert scheduled is not None
    assert scheduled.delay == timedelta(seconds=3600)


async def test_410_disables_the_endpoint_and_emits_an_event(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(410)]
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    assert await run_due(app, pool, live_tenant.id, clock.now()) == [None]
    seen = (await live_client.get(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=live_tenant.headers())).json()
    assert seen["enabled"] is False
    assert "410" in seen["disabled_reason"]
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.state == "failed"
    async with app.state.sessions() as session:
        types = (
            await session.scalars(select(OutboxEvent.type).where(OutboxEvent.workspace_id == live_tenant.id))
        ).all()
    assert "webhook_endpoint.disabled" in types


async def test_an_endpoint_failing_for_the_threshold_is_disabled_and_its_deliveries_held(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(500)]
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    for _ in range(3):
        await _customer(live_client, live_tenant)
    start = clock.now()
    settings = fast_settings(webhook_disable_after_hours=1)
    await run_due(app, pool, live_tenant.id, start, settings)
    seen = (await live_client.get(base, headers=live_tenant.headers())).json()
    # Failing, but not for an hour yet: still enabled, however many attempts failed.
    assert seen["enabled"] is True and seen["consecutive_failures"] == 3
    assert seen["failing_since"] == utc_text(start)
    # The retries fail an hour later: the streak disables the endpoint and holds its deliveries.
    assert await run_due(app, pool, live_tenant.id, start + timedelta(hours=1), settings) == [None, None, None]
    seen = (await live_client.get(base, headers=live_tenant.headers())).json()
    assert seen["enabled"] is False
    assert seen["disabled_reason"] == "every attempt failed for 1 hours"
    assert {d.state for d in await deliveries(app, live_tenant.id)} == {"held"}
    async with app.state.sessions() as session:
        [disabled] = (
            await session.scalars(
                select(OutboxEvent.data).where(
                    OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "webhook_endpoint.disabled"
                )
            )
        ).all()
    assert disabled["failing_since"] == utc_text(start) and disabled["endpoint_id"] == endpoint["id"]
    # Re-enabling clears the streak and sends the held deliveries.
    receiver.script = [Answer(200)]
    patched = await live_client.patch(
        base, json={"enabled": True}, headers={**live_tenant.headers(), "If-Match": f'"{seen["version"]}"'}
    )
    assert patched.json()["consecutive_failures"] == 0 and patched.json()["failing_since"] is None
    await run_due(app, pool, live_tenant.id, start + timedelta(hours=1, minutes=1))
    assert all(d.state == "succeeded" for d in await deliveries(app, live_tenant.id))


async def test_slow_receiver_times_out(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(200, delay=3.0)]
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    [scheduled] = await run_due(app, pool, live_tenant.id, clock.now(), fast_settings(webhook_timeout_seconds=0.5))
    assert scheduled is not None
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.last_error == "timed out"
    [attempt] = await attempts(app, delivery.id)
    assert attempt.duration_ms is not None and attempt.duration_ms < 2000


async def test_redirects_are_not_followed(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(302, headers={"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})]
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    [scheduled] = await run_due(app, pool, live_tenant.id, clock.now())
    assert scheduled is not None
    assert len(receiver.received) == 1
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.last_status == 302 and "not followed" in (delivery.last_error or "")


async def test_large_response_bodies_are_cut(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(200, body=b"x" * 1_000_000)]
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    await run_due(app, pool, live_tenant.id, clock.now())
    [delivery] = await deliveries(app, live_tenant.id)
    [attempt] = await attempts(app, delivery.id)
    assert len(attempt.response_excerpt or "") == webhook_delivery.RESPONSE_EXCERPT_BYTES


async def test_concurrent_workers_never_send_one_attempt_twice(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    now = clock.now()
    await fan_out(app, now)
    [due] = await due_for(app, live_tenant.id, now)
    async with webhook_delivery.http_client(10, allow_private=True) as client:
        await asyncio.gather(
            *(webhook_delivery.deliver(pool, client, [due], now=now, settings=fast_settings()) for _ in range(10))
        )
    assert len(receiver.received) == 1
    [delivery] = await deliveries(app, live_tenant.id)
    assert len(await attempts(app, delivery.id)) == 1


async def test_a_worker_killed_mid_send_leads_to_a_redelivery(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    now = clock.now()
    await fan_out(app, now)
    [due] = await due_for(app, live_tenant.id, now)
    lease = timedelta(seconds=30)
    async with pool.acquire() as conn:
        # The worker claims the attempt and dies before it records anything.
        assert await webhook_delivery.claim(conn, [due], now=now, lease=lease) != []
    assert await run_due(app, pool, live_tenant.id, now + timedelta(seconds=10)) == []
    later = now + lease + timedelta(seconds=1)
    async with app.state.sessions() as session:
        assert await webhook_dispatch.recover_abandoned(session, now=later) >= 1
        await session.commit()
    assert await run_due(app, pool, live_tenant.id, later) == [None]
    assert len(receiver.received) == 1
    [delivery] = await deliveries(app, live_tenant.id)
    logged = await attempts(app, delivery.id)
    assert [a.attempt for a in logged] == [1, 2]
    assert logged[0].error == "the worker stopped during the attempt"
    assert delivery.state == "succeeded"


async def test_rotated_secret_signs_with_both_during_the_overlap(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    rotated = await live_client.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=live_tenant.headers()
    )
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != endpoint["secret"]
    assert rotated.json()["secret_rotating_until"] is not None
    await _customer(live_client, live_tenant)
    await run_due(app, pool, live_tenant.id, clock.now())
    delivered = receiver.received[0]
    assert len(delivered.headers["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], rotated.json()["secret"]):
        Webhook(str(secret)).verify(delivered.body, delivered.headers)


async def test_ping_and_manual_redelivery(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    ping = await live_client.post(f"{base}/ping", headers=live_tenant.headers())
    assert ping.status_code == 202
    await run_due(app, pool, live_tenant.id, clock.now())
    assert orjson.loads(receiver.received[0].body)["type"] == "webhook.ping"
    event_id = ping.json()["event_id"]
    again = await live_client.post(f"{base}/redeliver", json={"event_id": event_id}, headers=live_tenant.headers())
    assert again.json() == {"scheduled": 1}
    await run_due(app, pool, live_tenant.id, clock.now())
    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id, event_id]
    log = (await live_client.get(f"{base}/deliveries", headers=live_tenant.headers())).json()
    [item] = log["items"]
    assert item["state"] == "succeeded" and item["attempts"] == 2
    tries = (await live_client.get(f"{base}/deliveries/{item['id']}/attempts", headers=live_tenant.headers())).json()
    assert [a["status_code"] for a in tries["items"]] == [200, 200]


async def test_redeliver_a_time_range(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    start = clock.now()
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    for _ in range(3):
        await _customer(live_client, live_tenant)
    await run_due(app, pool, live_tenant.id, clock.now())
    response = await live_client.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/redeliver",
        json={"since": start.isoformat()},
        headers=live_tenant.headers(),
    )
    assert response.json() == {"scheduled": 3}
    await run_due(app, pool, live_tenant.id, clock.now())
    assert len(receiver.received) == 6


async def test_one_job_sends_its_batch_and_records_each_outcome(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(200), Answer(500), Answer(200)]
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    for _ in range(3):
        await _customer(live_client, live_tenant)
    now = clock.now()
    results = await run_due(app, pool, live_tenant.id, now)
    assert len(receiver.received) == 3
    [retry] = [r for r in results if r is not None]
    assert retry.due.attempt == 2 and len(results) == 3
    by_state = {d.state: d for d in await deliveries(app, live_tenant.id)}
    assert sorted(d.state for d in await deliveries(app, live_tenant.id)) == ["pending", "succeeded", "succeeded"]
    for delivery in await deliveries(app, live_tenant.id):
        [logged] = await attempts(app, delivery.id)
        assert delivery.attempts == 1 and delivery.last_status == logged.status_code
        assert (delivery.succeeded_at is not None) == (delivery.state == "succeeded")
        assert delivery.locked_until is None
    assert by_state["pending"].last_status == 500
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    assert (await live_client.get(base, headers=live_tenant.headers())).json()["consecutive_failures"] == 1
    # The retry succeeds in a batch of its own, which resets the endpoint's failure count.
    assert await run_due(app, pool, live_tenant.id, now + retry.delay) == [None]
    assert (await live_client.get(base, headers=live_tenant.headers())).json()["consecutive_failures"] == 0
    assert sorted(d.state for d in await deliveries(app, live_tenant.id)) == ["succeeded"] * 3


async def test_overlapping_jobs_send_each_attempt_once(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    await _verified_endpoint(live_client, live_tenant, receiver)
    for _ in range(5):
        await _customer(live_client, live_tenant)
    now = clock.now()
    await fan_out(app, now)
    due = await due_for(app, live_tenant.id, now)
    assert len(due) == 5
    async with webhook_delivery.http_client(10, allow_private=True) as client:
        await asyncio.gather(
            *(
                webhook_delivery.deliver(pool, client, batch, now=now, settings=fast_settings())
                for batch in (due[:4], due[1:], list(reversed(due)), due)
            )
        )
    assert len(receiver.received) == 5
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 5
    for delivery in await deliveries(app, live_tenant.id):
        assert delivery.state == "succeeded"
        assert len(await attempts(app, delivery.id)) == 1


async def test_the_sweep_leaves_deliveries_that_a_queued_job_carries(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    await _endpoint(live_client, live_tenant, "http://127.0.0.1:9/unused")
    for _ in range(3):
        await _customer(live_client, live_tenant)
    now = clock.now()
    [job] = await jobs_for(app, live_tenant.id, now)
    assert len(job.attempts) == 3
    assert {d.job_key for d in await deliveries(app, live_tenant.id)} == {job.key}
    async with pool.acquire() as conn:
        queries = Queries(AsyncpgDriver(conn))
        await queries.enqueue([DELIVER], [b"[]"], [0], dedupe_key=[job.key])
        try:
            # Waiting in the queue, then taken by a worker: the sweep does not queue them a second time.
            assert await due_for(app, live_tenant.id, now) == []
            await conn.execute("UPDATE pgqueuer SET status = 'picked' WHERE dedupe_key = $1", job.key)
            assert await due_for(app, live_tenant.id, now) == []
        finally:
            await conn.execute("DELETE FROM pgqueuer WHERE dedupe_key = $1", job.key)
    # The job is gone without having taken them: the sweep queues them again, in a new job.
    again = await due_for(app, live_tenant.id, now)
    assert sorted(a.delivery_id for a in again) == sorted(a.delivery_id for a in job.attempts)
    assert all(a.attempt == 1 for a in again)
    [new_key] = {d.job_key for d in await deliveries(app, live_tenant.id)}
    assert new_key != job.key
    # Keyed to that job now: a second sweep leaves them too.
    async with pool.acquire() as conn:
        await Queries(AsyncpgDriver(conn)).enqueue([DELIVER], [b"[]"], [0], dedupe_key=[new_key])
        try:
            assert await due_for(app, live_tenant.id, now) == []
        finally:
            await conn.execute("DELETE FROM pgqueuer WHERE dedupe_key = $1", new_key)


async def test_a_send_that_raises_costs_its_job_nothing_but_its_own_attempt(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _verified_endpoint(live_client, live_tenant, receiver)
    broken = await _endpoint(live_client, live_tenant, f"{receiver.url}?broken")
    checked = webhook_targets.check_target

    async def check(url: str, *, allow_private: bool) -> None:
        if url.endswith("?broken"):
            raise RuntimeError("the resolver broke")
        await checked(url, allow_private=allow_private)

    monkeypatch.setattr(webhook_targets, "check_target", check)
    await _customer(live_client, live_tenant)
    results = await run_due(app, pool, live_tenant.id, clock.now())
    assert len(results) == 2 and len(receiver.received) == 1
    by_endpoint = {d.endpoint_id: d for d in await deliveries(app, live_tenant.id)}
    failed = by_endpoint.pop(uuid.UUID(str(broken["id"])))
    [sent] = by_endpoint.values()
    assert sent.state == "succeeded" and [a.status_code for a in await attempts(app, sent.id)] == [200]
    assert failed.state == "pending" and failed.last_error == "RuntimeError: the resolver broke"
    assert [a.error for a in await attempts(app, failed.id)] == ["RuntimeError: the resolver broke"]


async def test_a_slow_receiver_does_not_hold_back_the_records_of_its_job(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    async with running_receiver() as slow:
        slow.script = [Answer(delay=1.5)]
        await _verified_endpoint(live_client, live_tenant, receiver)
        slow_endpoint = await _endpoint(live_client, live_tenant, slow.url)
        await _customer(live_client, live_tenant)
        now = clock.now()
        await fan_out(app, now)
        due = await due_for(app, live_tenant.id, now)
        assert len(due) == 2
        async with webhook_delivery.http_client(10, allow_private=True) as client:
            job = asyncio.create_task(webhook_delivery.deliver(pool, client, due, now=now, settings=fast_settings()))
            await receiver.wait_for(1)
            # The fast receiver's attempt is recorded while the slow one is still out.
            for _ in range(50):
                states = {d.state for d in await deliveries(app, live_tenant.id)}
                if states == {"succeeded", "sending"}:
                    break
                await asyncio.sleep(0.02)
            assert states == {"succeeded", "sending"} and not job.done()
            assert await job == [None, None]
    final = {d.endpoint_id: d.state for d in await deliveries(app, live_tenant.id)}
    assert final[uuid.UUID(str(slow_endpoint["id"]))] == "succeeded" and set(final.values()) == {"succeeded"}


async def test_a_retry_after_of_other_digits_falls_back_to_the_schedule(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(429, headers={"Retry-After": "²"})]
    await _verified_endpoint(live_client, live_tenant, receiver)
    await _customer(live_client, live_tenant)
    [scheduled] = await run_due(app, pool, live_tenant.id, clock.now())
    assert scheduled is not None
    assert timedelta(seconds=4.5) <= scheduled.delay <= timedelta(seconds=5.5)
    [delivery] = await deliveries(app, live_tenant.id)
    # The receiver's answer, not a failure to read it.
    assert [(a.status_code, a.error) for a in await attempts(app, delivery.id)] == [(429, None)]


async def test_fan_out_gives_each_endpoint_jobs_of_its_own(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    first = await _endpoint(live_client, live_tenant, "http://127.0.0.1:9/first")
    second = await _endpoint(live_client, live_tenant, "http://127.0.0.1:9/second")
    for _ in range(3):
        await _customer(live_client, live_tenant)
    mine = await jobs_for(app, live_tenant.id, clock.now())
    endpoint_of = {d.id: d.endpoint_id for d in await deliveries(app, live_tenant.id)}
    assert sorted(len(job.attempts) for job in mine) == [3, 3]
    assert sorted(str({endpoint_of[a.delivery_id] for a in job.attempts}.pop()) for job in mine) == sorted(
        [str(first["id"]), str(second["id"])]
    )
    assert all(len({endpoint_of[a.delivery_id] for a in job.attempts}) == 1 for job in mine)


async def test_a_retry_is_queued_when_due_while_its_first_job_still_runs(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(500)]
    await _verified_endpoint(live_client, live_tenant, receiver)
    for _ in range(2):
        await _customer(live_client, live_tenant)
    now = clock.now()
    [job] = await jobs_for(app, live_tenant.id, now)
    async with pool.acquire() as conn:
        # The job is running in a worker (say, one of its sends is slow) when the others fail.
        await Queries(AsyncpgDriver(conn)).enqueue([DELIVER], [b"[]"], [0], dedupe_key=[job.key])
        await conn.execute("UPDATE pgqueuer SET status = 'picked' WHERE dedupe_key = $1", job.key)
        try:
            async with webhook_delivery.http_client(10, allow_private=True) as client:
                results = await webhook_delivery.deliver(pool, client, job.attempts, now=now, settings=fast_settings())
            retries = [r for r in results if r is not None]
            assert len(retries) == 2
            later = now + max(r.delay for r in retries)
            again = await due_for(app, live_tenant.id, later)
            assert sorted(a.delivery_id for a in again) == sorted(a.delivery_id for a in job.attempts)
            assert {a.attempt for a in again} == {2}
        finally:
            await conn.execute("DELETE FROM pgqueuer WHERE dedupe_key = $1", job.key)


async def test_delivery_checks_the_target_again_when_it_sends(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    """Registered while private targets were allowed (or before its name resolved elsewhere): the
    send refuses the loopback address, whichever IPv6 spelling reaches it."""
    port = receiver.url.split(":")[-1].split("/")[0]
    await _endpoint(live_client, live_tenant, f"http://[64:ff9b::7f00:1]:{port}/")
    await _endpoint(live_client, live_tenant, f"http://[::ffff:127.0.0.1]:{port}/")
    await _customer(live_client, live_tenant)
    strict = fast_settings(webhook_allow_private_targets=False)
    await run_due(app, pool, live_tenant.id, clock.now(), settings=strict)
    assert receiver.received == []
    errors = {d.last_error for d in await deliveries(app, live_tenant.id)}
    assert errors == {f"{webhook_targets.BLOCKED}; {webhook_targets.PRIVATE_TARGETS_HINT}"}


async def test_a_name_that_resolves_to_a_private_address_at_connect_time_is_not_reached(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name passed the check, then resolves to loopback when the connection opens."""
    port = receiver.url.split(":")[-1].split("/")[0]
    await _endpoint(live_client, live_tenant, f"http://localhost:{port}/")
    await _customer(live_client, live_tenant)

    async def passed(url: str, *, allow_private: bool) -> None:
        return None

    monkeypatch.setattr(webhook_targets, "check_target", passed)
    await run_due(app, pool, live_tenant.id, clock.now(), settings=fast_settings(webhook_allow_private_targets=False))
    assert receiver.received == []
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.last_error is not None and webhook_targets.BLOCKED in delivery.last_error


async def _customer_events(app: FastAPI, workspace_id: uuid.UUID) -> set[str]:
    async with app.state.sessions() as session:
        ids = await session.scalars(
            select(OutboxEvent.id).where(
                OutboxEvent.workspace_id == workspace_id, OutboxEvent.type == "customer.created"
            )
        )
        return {str(event_id) for event_id in ids}


async def _run_until(
    app: FastAPI, pool: asyncpg.Pool, workspace_id: uuid.UUID, now: datetime, until: datetime, settings: Settings
) -> datetime:
    """Every worker pass from `now` to `until`, each at the time the next pending attempt is due
    (the clock jumps over the quiet stretches between). Returns the time of the last pass."""
    while True:
        await run_due(app, pool, workspace_id, now, settings)
        async with app.state.sessions() as session:
            next_due = await session.scalar(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.workspace_id == workspace_id, WebhookDelivery.state == "pending"
                )
            )
        if next_due is None or next_due > until:
            return now
        now = max(now, next_due)


async def test_an_outage_longer_than_twenty_failures_loses_no_event(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """The receiver is down for two hours while events keep coming: far more than the 20 failed
    attempts that used to disable an endpoint, far less than the failing streak that does now.
    Once it is back, each event arrives, verified, without anyone acting."""
    receiver = Receiver(port=free_port())
    endpoint = await _endpoint(live_client, live_tenant, receiver.url)
    receiver.secrets = [str(endpoint["secret"])]
    start = clock.now()
    now = start
    for minute in range(0, 120, 10):
        for _ in range(3):
            await _customer(live_client, live_tenant)
        now = await _run_until(app, pool, live_tenant.id, now, start + timedelta(minutes=minute + 10), fast_settings())
    seen = (await live_client.get(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=live_tenant.headers())).json()
    assert seen["enabled"] is True and seen["consecutive_failures"] > 20
    assert seen["failing_since"] == utc_text(start)
    async with running_receiver(receiver):
        await _run_until(app, pool, live_tenant.id, now, now + timedelta(days=1), fast_settings())
    events = await _customer_events(app, live_tenant.id)
    assert len(events) == 36
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(events)
    assert not receiver.unverified
    assert {d.state for d in await deliveries(app, live_tenant.id)} == {"succeeded"}


async def test_an_outage_past_the_disable_threshold_holds_every_event_and_re_enabling_sends_them(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """Down for 60 hours with events arriving all along: the endpoint is disabled after 48 hours of
    failing, the deliveries waiting then and those of every later event are held, not sent, not
    failed; re-enabling sends each once, with a fresh retry schedule."""
    receiver = Receiver(port=free_port())
    endpoint = await _endpoint(live_client, live_tenant, receiver.url)
    receiver.secrets = [str(endpoint["secret"])]
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    settings = fast_settings()
    assert settings.webhook_disable_after_hours == 48
    start = clock.now()
    now = start
    for hour in range(0, 60, 6):
        for _ in range(2):
            await _customer(live_client, live_tenant)
        now = await _run_until(app, pool, live_tenant.id, now, start + timedelta(hours=hour + 6), settings)
    seen = (await live_client.get(base, headers=live_tenant.headers())).json()
    assert seen["enabled"] is False and seen["disabled_reason"] == "every attempt failed for 48 hours"
    assert seen["failing_since"] == utc_text(start) and seen["consecutive_failures"] > 20
    held = (await live_client.get(f"{base}/deliveries?state=held&limit=100", headers=live_tenant.headers())).json()
    events = await _customer_events(app, live_tenant.id)
    assert len(events) == 20 and {item["event_id"] for item in held["items"]} == events
    async with running_receiver(receiver):
        # Back up, but still disabled: nothing goes out.
        await run_due(app, pool, live_tenant.id, now, settings)
        assert receiver.received == []
        # The first attempt after re-enabling fails once more: it starts the schedule afresh.
        receiver.script = [Answer(503), Answer(200)]
        enabled = await live_client.patch(
            base, json={"enabled": True}, headers={**live_tenant.headers(), "If-Match": f'"{seen["version"]}"'}
        )
        assert enabled.status_code == 200 and enabled.json()["failing_since"] is None
        retries = [r for r in await run_due(app, pool, live_tenant.id, now, settings) if r is not None]
        [retry] = retries
        assert timedelta(seconds=4.5) <= retry.delay <= timedelta(seconds=5.5)
        assert await run_due(app, pool, live_tenant.id, now + retry.delay, settings) == [None]
    assert {d.state for d in await deliveries(app, live_tenant.id)} == {"succeeded"}
    received = [r.headers["webhook-id"] for r in receiver.received]
    # Every event once, and the one retried twice: the same webhook-id and body both times.
    assert set(received) == events and len(received) == len(events) + 1
    [repeated] = {i for i in received if received.count(i) == 2}
    assert len({r.body for r in receiver.received if r.headers["webhook-id"] == repeated}) == 1
    for delivered in receiver.received:
        Webhook(str(endpoint["secret"])).verify(delivered.body, delivered.headers)
    assert not receiver.unverified


async def test_a_delivery_whose_schedule_ran_out_is_failed_and_redelivered_with_a_fresh_schedule(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script = [Answer(500)]
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    await _customer(live_client, live_tenant)
    # An endpoint that never fails long enough to be disabled.
    settings = fast_settings(webhook_disable_after_hours=1000)
    now = await _run_until(app, pool, live_tenant.id, clock.now(), clock.now() + timedelta(days=10), settings)
    [failed] = (await live_client.get(f"{base}/deliveries?state=failed", headers=live_tenant.headers())).json()["items"]
    assert failed["attempts"] == webhook_delivery.MAX_ATTEMPTS and failed["last_status"] == 500
    again = await live_client.post(
        f"{base}/redeliver", json={"event_id": failed["event_id"]}, headers=live_tenant.headers()
    )
    assert again.status_code == 202 and again.json() == {"scheduled": 1}
    receiver.script = [Answer(500), Answer(200)]
    [retry] = await run_due(app, pool, live_tenant.id, now, settings)
    assert retry is not None and timedelta(seconds=4.5) <= retry.delay <= timedelta(seconds=5.5)
    assert await run_due(app, pool, live_tenant.id, now + retry.delay, settings) == [None]
    [delivery] = await deliveries(app, live_tenant.id)
    assert delivery.state == "succeeded" and delivery.attempts == webhook_delivery.MAX_ATTEMPTS + 2
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


async def test_two_rotations_inside_the_overlap_keep_all_three_secrets_signing(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await _verified_endpoint(live_client, live_tenant, receiver)
    base = f"/api/v1/webhook-endpoints/{first['id']}"
    start = clock.now()
    # The second rotation an hour after the first, as the endpoints' service sees the time (the
    # callers' tokens keep the real clock).
    monkeypatch.setattr(webhook_endpoints, "clock", SimpleNamespace(now=lambda: start))
    second = (await live_client.post(f"{base}/rotate-secret", headers=live_tenant.headers())).json()
    monkeypatch.setattr(webhook_endpoints, "clock", SimpleNamespace(now=lambda: start + timedelta(hours=1)))
    third = (await live_client.post(f"{base}/rotate-secret", headers=live_tenant.headers())).json()
    assert third["secret_rotating_until"] == utc_text(start + timedelta(hours=25))
    secrets = [str(first["secret"]), str(second["secret"]), str(third["secret"])]
    assert len(set(secrets)) == 3
    # A receiver holding any of the three secrets verifies the delivery.
    receiver.secrets = secrets
    await _customer(live_client, live_tenant)
    await run_due(app, pool, live_tenant.id, start + timedelta(hours=2))
    [delivered] = receiver.received
    assert len(delivered.headers["webhook-signature"].split(" ")) == 3
    for secret in secrets:
        Webhook(secret).verify(delivered.body, delivered.headers)
    # Past the first secret's overlap, the second still signs for the rest of its own.
    receiver.secrets = secrets[1:]
    monkeypatch.setattr(
        webhook_endpoints, "clock", SimpleNamespace(now=lambda: start + timedelta(hours=24, minutes=30))
    )
    await _customer(live_client, live_tenant)
    await run_due(app, pool, live_tenant.id, start + timedelta(hours=24, minutes=30))
    later = receiver.received[1]
    assert len(later.headers["webhook-signature"].split(" ")) == 2
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets[0]).verify(later.body, later.headers)
    seen = (await live_client.get(base, headers=live_tenant.headers())).json()
    assert seen["secret_rotating_until"] == utc_text(start + timedelta(hours=25))


async def test_rotating_while_five_replaced_secrets_still_sign_is_409_and_changes_nothing(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    endpoint = await _endpoint(live_client, live_tenant, "http://127.0.0.1:9/unused")
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    for _ in range(webhook_endpoints.MAX_PREVIOUS_SECRETS):
        assert (await live_client.post(f"{base}/rotate-secret", headers=live_tenant.headers())).status_code == 200
    before = (await live_client.get(base, headers=live_tenant.headers())).json()
    refused = await live_client.post(f"{base}/rotate-secret", headers=live_tenant.headers())
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert "rotate again once the first stops" in refused.json()["detail"]
    assert (await live_client.get(base, headers=live_tenant.headers())).json() == before


async def test_an_owner_disabling_holds_deliveries_a_batch_at_a_time_and_enabling_releases_them(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = await _verified_endpoint(live_client, live_tenant, receiver)
    base = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    for _ in range(5):
        await _customer(live_client, live_tenant)
    now = clock.now()
    await fan_out(app, now)
    disabled = await live_client.patch(
        base, json={"enabled": False}, headers={**live_tenant.headers(), "If-Match": f'"{endpoint["version"]}"'}
    )
    assert disabled.status_code == 200 and disabled.json()["disabled_reason"] == "disabled by its owner"
    # A ping and the events that come while it is disabled are held from the start.
    ping = await live_client.post(f"{base}/ping", headers=live_tenant.headers())
    assert ping.json()["state"] == "held"
    await _customer(live_client, live_tenant)
    await fan_out(app, now)

    async def settle_batch() -> int:
        async with app.state.sessions() as session:
            moved = await webhook_dispatch.settle(session, now=now, batch=2)
            await session.commit()
            return moved

    # Five pending deliveries, two a batch: settled once a batch comes up short.
    assert [await settle_batch() for _ in range(4)] == [2, 2, 1, 0]
    assert sorted(d.state for d in await deliveries(app, live_tenant.id)) == ["held"] * 7
    assert await run_due(app, pool, live_tenant.id, now) == [] and receiver.received == []
    enabled = await live_client.patch(
        base, json={"enabled": True}, headers={**live_tenant.headers(), "If-Match": f'"{disabled.json()["version"]}"'}
    )
    assert enabled.status_code == 200
    assert await run_due(app, pool, live_tenant.id, now) == [None] * 7
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 7 == len(receiver.received)
    assert {d.state for d in await deliveries(app, live_tenant.id)} == {"succeeded"}
