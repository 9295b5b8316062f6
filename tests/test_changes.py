"""The change feed apps sync from: the events about customers the caller may see, masked as the
caller is masked, with a signed cursor."""

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Scope
from tests.factories import Tenant, customer_body, make_api_key


async def _customer(client: httpx.AsyncClient, tenant: Tenant, owner: str, phone: str) -> str:
    body = customer_body(owner_id=str(tenant.users[owner].id), phones=[phone], address={"street": "科技园路 1 号"})
    created = await client.post("/api/v1/customers", json=body, headers=tenant.headers())
    assert created.status_code == 201, created.text
    contact = {
        "customer_id": created.json()["id"],
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": "2026-03-01T02:00:00Z",
    }
    assert (await client.post("/api/v1/interactions", json=contact, headers=tenant.headers())).status_code == 201
    return str(created.json()["id"])


async def _feed(client: httpx.AsyncClient, tenant: Tenant, who: str, **params: str | int) -> list[dict[str, Any]]:
    """Every page of the caller's feed."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query: dict[str, str | int] = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/v1/changes", params=query, headers=tenant.headers(who))
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        # The feed's last page carries a cursor to resume from: an empty page is the end.
        if cursor is None or not response.json()["items"]:
            return items


async def _settled(client: httpx.AsyncClient, tenant: Tenant, expected: int) -> None:
    """Events show once every older transaction in the cluster has ended: wait for ours."""
    async with asyncio.timeout(15):
        while True:
            page = await client.get("/api/v1/events", params={"limit": 100}, headers=tenant.headers())
            if len(page.json()["items"]) >= expected:
                return
            await asyncio.sleep(0.1)


def _customer_of(event: dict[str, Any]) -> str:
    data = event["data"]
    return str(data["id"] if event["type"].startswith("customer.") else data["customer_id"])


async def test_sales_reads_the_changes_of_its_own_customers_only(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    mine = await _customer(live_client, live_tenant, "sales", "+8613512340001")
    theirs = await _customer(live_client, live_tenant, "sales2", "+8613512340002")
    await _settled(live_client, live_tenant, 4)
    feed = await _feed(live_client, live_tenant, "sales")
    assert [(e["type"], _customer_of(e)) for e in feed] == [("customer.created", mine), ("interaction.created", mine)]
    # The owner's own customers are shown unmasked: sales holds the PII scope.
    assert feed[0]["data"]["phones"] == ["+8613512340001"] and feed[0]["data"]["pii_masked"] is False
    everything = await _feed(live_client, live_tenant, "admin")
    assert {_customer_of(e) for e in everything} == {mine, theirs}
    only = await _feed(live_client, live_tenant, "admin", type="interaction.*")
    assert [e["type"] for e in only] == ["interaction.created", "interaction.created"]
    # Visibility is the caller's now: a customer handed to sales2 leaves sales's feed.
    handed = await live_client.patch(
        f"/api/v1/customers/{mine}",
        json={"owner_id": str(live_tenant.users["sales2"].id)},
        headers={**live_tenant.headers(), "If-Match": '"1"'},
    )
    assert handed.status_code == 200
    await _settled(live_client, live_tenant, 5)
    assert await _feed(live_client, live_tenant, "sales") == []


async def test_readonly_reads_every_change_masked(live_client: httpx.AsyncClient, live_tenant: Tenant) -> None:
    await _customer(live_client, live_tenant, "sales", "+8613512340003")
    await _settled(live_client, live_tenant, 2)
    feed = await _feed(live_client, live_tenant, "readonly")
    created = next(e for e in feed if e["type"] == "customer.created")
    assert created["data"]["pii_masked"] is True and created["data"]["address"]["street"] == "***"
    assert created["data"]["phones"] == ["+861******0003"]
    assert not any("13512340003" in str(e) or "科技园路" in str(e) for e in feed)


async def test_another_workspaces_changes_never_appear(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_other_tenant: Tenant
) -> None:
    ours = await _customer(live_client, live_tenant, "sales", "+8613512340004")
    await _customer(live_client, live_other_tenant, "sales", "+8613512340005")
    await _settled(live_client, live_tenant, 2)
    await _settled(live_client, live_other_tenant, 2)
    feed = await _feed(live_client, live_tenant, "admin")
    assert {e["workspace_id"] for e in feed} == {str(live_tenant.id)} and {_customer_of(e) for e in feed} == {ours}


@pytest.mark.parametrize(
    "query", ["cursor=garbage", "cursor=WzEsIm5vdC1hLXV1aWQiXQ", "limit=0", "limit=101", "type=nonsense.event"]
)
async def test_bad_feed_queries_are_422(client: httpx.AsyncClient, tenant: Tenant, query: str) -> None:
    response = await client.get(f"/api/v1/changes?{query}", headers=tenant.headers("sales"))
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"


async def test_a_cursor_of_the_event_stream_is_not_a_feed_cursor(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    for phone in ("+8613512340006", "+8613512340007"):
        await _customer(live_client, live_tenant, "sales", phone)
    await _settled(live_client, live_tenant, 4)
    page = await live_client.get("/api/v1/events", params={"limit": 1}, headers=live_tenant.headers())
    stream_cursor = page.json()["next_cursor"]
    assert stream_cursor
    forged = await live_client.get("/api/v1/changes", params={"cursor": stream_cursor}, headers=live_tenant.headers())
    assert forged.status_code == 422
    feed_cursor = (await live_client.get("/api/v1/changes", params={"limit": 1}, headers=live_tenant.headers())).json()[
        "next_cursor"
    ]
    payload, mac = feed_cursor.split(".")
    tampered = await live_client.get(
        "/api/v1/changes", params={"cursor": f"{payload}.{mac[::-1]}"}, headers=live_tenant.headers()
    )
    assert tampered.status_code == 422


async def test_the_feed_needs_customers_read(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    key = await make_api_key(db, tenant, scopes=[Scope.ORDERS_WRITE])
    await db.commit()
    refused = await client.get("/api/v1/changes", headers={"X-API-Key": key})
    assert refused.status_code == 403
    for role in ("sales", "support", "readonly", "manager"):
        assert (await client.get("/api/v1/changes", headers=tenant.headers(role))).status_code == 200


async def test_a_relation_is_in_the_feed_of_callers_who_see_both_its_customers(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    mine = await _customer(live_client, live_tenant, "sales", "+8613512340005")
    colleague = await _customer(live_client, live_tenant, "sales2", "+8613512340006")
    west = await _customer(live_client, live_tenant, "sales_west", "+8613512340007")
    for other in (colleague, west):
        related = await live_client.post(
            f"/api/v1/customers/{mine}/relations",
            json={"kind": "family_of", "to_customer_id": other},
            headers=live_tenant.headers(),
        )
        assert related.status_code == 201, related.text
    await _settled(live_client, live_tenant, 8)

    def relations(feed: list[dict[str, Any]]) -> set[str]:
        return {e["data"]["to_customer_id"] for e in feed if e["type"] == "customer.relation_added"}

    assert relations(await _feed(live_client, live_tenant, "admin")) == {colleague, west}
    assert relations(await _feed(live_client, live_tenant, "manager")) == {colleague}
    assert relations(await _feed(live_client, live_tenant, "sales")) == set()
