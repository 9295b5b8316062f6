"""Batch create and update: per-item results, bad items fail alone."""

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer
from tests.factories import Tenant, customer_body


async def test_batch_create_reports_each_item(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    shared = "same@example.com"
    items = [
        customer_body(name="甲", emails=[shared]),
        {"name": "乙", "bogus": True},
        customer_body(name="丙", emails=[shared]),
        customer_body(name="丁"),
    ]
    response = await client.post("/api/v1/customers/batch", json={"items": items}, headers=tenant.headers())
    assert response.status_code == 207, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [201, 422, 409, 201]
    assert body["succeeded"] == 2 and body["failed"] == 2
    assert body["results"][2]["problem"]["existing_id"] == body["results"][0]["id"]
    assert body["results"][1]["problem"]["errors"][0]["loc"][:2] == ["items", 1]
    codes = (
        await db.scalars(select(Customer.code).where(Customer.workspace_id == tenant.id).order_by(Customer.code))
    ).all()
    # The failed items returned their numbers: the codes stay gap-free.
    assert [c[-6:] for c in codes] == ["000001", "000002"]


async def test_batch_over_100_items_is_422(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    items = [customer_body() for _ in range(101)]
    response = await client.post("/api/v1/customers/batch", json={"items": items}, headers=tenant.headers())
    assert response.status_code == 422
    assert await db.scalar(select(func.count()).where(Customer.workspace_id == tenant.id)) == 0


async def test_batch_replay_stores_a_problem_that_quotes_a_nul(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """An unknown key is named in the item's problem; jsonb cannot hold its NUL, so it is kept as U+FFFD."""
    headers = {**tenant.headers(), "Idempotency-Key": "batch-nul"}
    body = {"items": [{"name": "张伟", "bad\x00key": 1}]}
    first = await client.post("/api/v1/customers/batch", json=body, headers=headers)
    assert first.status_code == 207, first.text
    assert first.json()["results"][0]["status"] == 422
    replay = await client.post("/api/v1/customers/batch", json=body, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    locs = [error["loc"] for error in replay.json()["results"][0]["problem"]["errors"]]
    assert ["bad\ufffdkey"] in [loc[-1:] for loc in locs], locs


async def test_batch_update_applies_fresh_versions_and_refuses_stale_ones(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    a = (await client.post("/api/v1/customers", json=customer_body(name="A"), headers=tenant.headers())).json()
    b = (await client.post("/api/v1/customers", json=customer_body(name="B"), headers=tenant.headers())).json()
    response = await client.patch(
        "/api/v1/customers/batch",
        json={
            "items": [
                {"id": a["id"], "version": 1, "patch": {"title": "CEO"}},
                {"id": b["id"], "version": 5, "patch": {"title": "CTO"}},
                {"id": b["id"], "version": 1, "patch": {"phones": ["bad"]}},
            ]
        },
        headers=tenant.headers(),
    )
    assert [r["status"] for r in response.json()["results"]] == [200, 412, 422]
    assert response.json()["results"][0]["version"] == 2
    rows = (await db.execute(select(Customer.name, Customer.title).where(Customer.workspace_id == tenant.id))).all()
    titles = dict(rows)
    assert titles == {"A": "CEO", "B": None}
