"""The demo data that `make run` writes on first start: customers with orders, contacts and tickets,
written through the services, so the README's examples return something."""

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.identity import demo
from tests.factories import Tenant


async def test_demo_seed_gives_every_first_example_data(
    client: httpx.AsyncClient, db: AsyncSession, tenant: Tenant
) -> None:
    added = await demo.seed(db, tenant.workspace.slug, 60)
    await db.commit()
    assert added >= 55  # a random phone may collide with an earlier one and skip its customer
    headers = tenant.headers()
    listed = (await client.get("/api/v1/customers?limit=100", headers=headers)).json()["items"]
    assert len(listed) == added
    assert any(c["name"].isascii() for c in listed) and any(not c["name"].isascii() for c in listed)
    assert (await client.get("/api/v1/customers", params={"q": listed[0]["name"]}, headers=headers)).json()["items"]
    with_orders = 0
    for customer in listed:
        value = (await client.get(f"/api/v1/customers/{customer['id']}/value", headers=headers)).json()
        with_orders += value["order_count"] > 0
    assert added // 3 <= with_orders < added
    assert (await client.get("/api/v1/interactions?limit=1", headers=headers)).json()["items"]
    assert (await client.get("/api/v1/tickets?limit=1", headers=headers)).json()["items"]
