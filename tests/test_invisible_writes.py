"""Writes that name a customer check that the caller may see it, not only that it is in the workspace."""

from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import Interaction, Order, SegmentMember
from tests.factories import Tenant, customer_body


async def _owned_by(client: httpx.AsyncClient, tenant: Tenant, owner: str) -> str:
    body = customer_body(owner_id=str(tenant.users[owner].id))
    response = await client.post("/api/v1/customers", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _order(customer_id: str, amount: str = "10.00") -> dict[str, Any]:
    return {
        "source": "shop",
        "external_id": "SO-HIDDEN",
        "customer_id": customer_id,
        "ordered_at": "2026-11-01T10:00:00Z",
        "currency": "CNY",
        "total_amount": amount,
        "lines": [{"sku": "T-1", "product_name": "茶", "category": "tea", "quantity": "1", "unit_price": amount}],
    }


async def test_sales_cannot_remove_a_customer_it_cannot_see_from_a_list(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    hidden = await _owned_by(client, tenant, "sales2")
    made = await client.post("/api/v1/segments", json={"name": "Call list", "kind": "static"}, headers=tenant.headers())
    segment = made.json()["id"]
    added = await client.post(f"/api/v1/segments/{segment}/members", json={"add": [hidden]}, headers=tenant.headers())
    assert added.status_code == 200, added.text
    removed = await client.post(
        f"/api/v1/segments/{segment}/members", json={"remove": [hidden]}, headers=tenant.headers("sales")
    )
    assert removed.status_code == 422
    assert removed.json()["errors"][0]["loc"] == ["body", "remove"]
    members = await db.scalars(select(SegmentMember.customer_id).where(SegmentMember.workspace_id == tenant.id))
    assert [str(m) for m in members] == [hidden]


async def test_sales_cannot_take_over_an_invisible_customers_order_by_its_external_id(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    hidden = await _owned_by(client, tenant, "sales2")
    mine = await _owned_by(client, tenant, "sales")
    assert (await client.post("/api/v1/orders", json=_order(hidden), headers=tenant.headers())).status_code == 201
    moved = await client.post("/api/v1/orders", json=_order(mine, "99.00"), headers=tenant.headers("sales"))
    assert moved.status_code == 404
    order = await db.scalar(select(Order).where(Order.workspace_id == tenant.id))
    assert order is not None and str(order.customer_id) == hidden and order.total_amount == Decimal("10.00")


async def test_sales_cannot_read_an_invisible_customers_interaction_by_its_external_id(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    hidden = await _owned_by(client, tenant, "sales2")
    mine = await _owned_by(client, tenant, "sales")

    def contact(customer_id: str) -> dict[str, Any]:
        return {
            "customer_id": customer_id,
            "channel": "phone",
            "direction": "inbound",
            "occurred_at": clock.now().isoformat(),
            "subject": "私事",
            "source": "pbx",
            "external_id": "call-9",
        }

    assert (
        await client.post("/api/v1/interactions", json=contact(hidden), headers=tenant.headers())
    ).status_code == 201
    pushed = await client.post("/api/v1/interactions", json=contact(mine), headers=tenant.headers("sales"))
    assert pushed.status_code == 404
    assert "私事" not in pushed.text and hidden not in pushed.text
    stored = await db.scalar(select(Interaction.customer_id).where(Interaction.workspace_id == tenant.id))
    assert str(stored) == hidden


async def test_every_write_naming_an_invisible_customer_is_a_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    hidden = await _owned_by(client, tenant, "sales2")
    sales = tenant.headers("sales")
    now = clock.now().isoformat()
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/tasks", {"customer_id": hidden, "title": "回电", "due_at": now}),
        (
            "POST",
            "/api/v1/interactions",
            {"customer_id": hidden, "channel": "phone", "direction": "inbound", "occurred_at": now},
        ),
        ("POST", "/api/v1/tickets", {"customer_id": hidden, "type": "complaint", "channel": "phone", "subject": "x"}),
        ("POST", "/api/v1/orders", _order(hidden) | {"external_id": "SO-NEW"}),
        ("POST", f"/api/v1/customers/{hidden}/stage", {"stage": "active"}),
    ]
    for method, url, body in writes:
        response = await client.request(method, url, json=body, headers=sales)
        assert response.status_code == 404, (url, response.status_code, response.text)
    patched = await client.patch(
        f"/api/v1/customers/{hidden}", json={"name": "x"}, headers={**sales, "If-Match": '"1"'}
    )
    assert patched.status_code == 404
