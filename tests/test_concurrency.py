"""Concurrency rules under real concurrent requests: codes, duplicates, ETags, idempotency."""

import asyncio
import re
import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.models import AuditEntry, Customer, CustomerIdentity, IdempotencyRecord, OutboxEvent
from tests.factories import Tenant, customer_body


async def test_concurrent_creates_get_unique_gap_free_codes(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    responses = await asyncio.gather(
        *(live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers()) for _ in range(30))
    )
    assert [r.status_code for r in responses] == [201] * 30
    numbers = sorted(int(re.sub(r".*-", "", r.json()["code"])) for r in responses)
    assert numbers == list(range(1, 31))


async def test_concurrent_creates_with_one_email_make_one_customer(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    body = customer_body(emails=["race@example.com"])
    responses = await asyncio.gather(
        *(live_client.post("/api/v1/customers", json=body, headers=live_tenant.headers()) for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 49
    winner = next(r.json()["id"] for r in responses if r.status_code == 201)
    assert all(r.json()["existing_id"] == winner for r in responses if r.status_code == 409)
    async with app.state.sessions() as session:
        count = await session.scalar(select(func.count()).where(Customer.workspace_id == live_tenant.id))
    assert count == 1


async def test_a_refused_create_leaves_nothing_and_returns_its_number(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """The create statement undoes itself when a phone is taken: no row, identity (its free email is
    not kept either), audit entry or event, and the next create gets the number it took."""
    headers = live_tenant.headers()
    first = await live_client.post("/api/v1/customers", json=customer_body(phones=["13800138111"]), headers=headers)
    assert first.status_code == 201
    body = customer_body(emails=["fresh@example.com"], phones=["+86 138 0013 8111"])
    refused = await live_client.post("/api/v1/customers", json=body, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["existing_id"] == first.json()["id"]
    assert refused.json()["field"] == "phones"
    after = await live_client.post(
        "/api/v1/customers", json=customer_body(emails=["fresh@example.com"]), headers=headers
    )
    assert after.status_code == 201
    assert after.json()["code"][-6:] == "000002"
    async with app.state.sessions() as session:
        for model, rows in ((Customer, 2), (CustomerIdentity, 3), (AuditEntry, 2)):
            assert await session.scalar(select(func.count()).where(model.workspace_id == live_tenant.id)) == rows
        identities = await session.scalars(
            select(CustomerIdentity.value).where(CustomerIdentity.workspace_id == live_tenant.id)
        )
        assert "fresh@example.com" in set(identities)
        events = await session.scalar(
            select(func.count()).where(
                OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "customer.created"
            )
        )
        assert events == 2


async def test_concurrent_patches_with_one_etag_let_exactly_one_win(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    created = (await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())).json()
    headers = {**live_tenant.headers(), "If-Match": '"1"'}
    responses = await asyncio.gather(
        *(
            live_client.patch(f"/api/v1/customers/{created['id']}", json={"title": f"t{i}"}, headers=headers)
            for i in range(20)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [412] * 19
    async with app.state.sessions() as session:
        assert await session.scalar(select(Customer.version).where(Customer.id == created["id"])) == 2


async def test_same_idempotency_key_creates_once(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    key = str(uuid.uuid4())
    body = customer_body()
    headers = {**live_tenant.headers(), "Idempotency-Key": key}
    responses = await asyncio.gather(
        *(live_client.post("/api/v1/customers", json=body, headers=headers) for _ in range(50))
    )
    # One made the customer; each other one replayed its response, read once the first committed.
    assert [r.status_code for r in responses] == [201] * 50
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    created = responses
    replay = await live_client.post("/api/v1/customers", json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    # The stored response is the first one whole, its code (taken by the statement that stored it) included.
    assert replay.json() == created[0].json()
    assert replay.json()["code"].startswith("KH-")
    assert replay.headers["etag"] == '"1"'
    assert replay.headers["location"] == created[0].headers["location"]
    async with app.state.sessions() as session:
        assert await session.scalar(select(func.count()).where(Customer.workspace_id == live_tenant.id)) == 1
        assert await session.scalar(select(func.count()).where(IdempotencyRecord.workspace_id == live_tenant.id)) == 1


async def test_same_idempotency_key_with_another_body_is_422(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    headers = {**live_tenant.headers(), "Idempotency-Key": "order-77"}
    first = await live_client.post("/api/v1/customers", json=customer_body(name="A"), headers=headers)
    assert first.status_code == 201
    second = await live_client.post("/api/v1/customers", json=customer_body(name="B"), headers=headers)
    assert second.status_code == 422
    assert second.json()["type"].endswith("idempotency-key-reused")


async def test_failed_create_does_not_burn_the_idempotency_key(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    taken = customer_body(emails=["taken@example.com"])
    assert (await live_client.post("/api/v1/customers", json=taken, headers=live_tenant.headers())).status_code == 201
    headers = {**live_tenant.headers(), "Idempotency-Key": "retry-me"}
    body = customer_body(emails=["taken@example.com"])
    assert (await live_client.post("/api/v1/customers", json=body, headers=headers)).status_code == 409
    body["emails"] = ["free@example.com"]
    retried = await live_client.post("/api/v1/customers", json=body, headers=headers)
    assert retried.status_code == 201
