"""GET /orders and POST /orders/search: every filter narrowing, cursor pages, precise 422s, and the
workspace and visibility every order list keeps."""

from typing import Any

import httpx
import pytest

from tests.factories import Tenant
from tests.test_orders_and_value import _customer, _order


def _line(category: str, price: str) -> dict[str, str]:
    return {
        "sku": f"SKU-{category}",
        "product_name": category,
        "category": category,
        "quantity": "1",
        "unit_price": price,
    }


async def _seed(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """Five orders of two customers (the second a salesperson's of the other team), each apart from
    the others in one field at least."""
    zhang = await _customer(client, tenant, owner_id=str(tenant.users["sales"].id))
    west = await _customer(client, tenant, owner_id=str(tenant.users["sales_west"].id))
    orders = [
        _order(zhang, "A", ordered_at="2026-01-01T00:00:00Z", total_amount="10.00", lines=[_line("tea", "10.00")]),
        _order(
            zhang,
            "B",
            ordered_at="2026-02-01T00:00:00Z",
            total_amount="50.00",
            lines=[_line("cup", "50.00")],
            status="cancelled",
            channel="online",
        ),
        _order(
            zhang,
            "C",
            source="tmall",
            ordered_at="2026-03-01T00:00:00Z",
            total_amount="100.00",
            lines=[_line("tea", "60.00"), _line("gift", "40.00")],
            fulfilment_status="shipped",
            store="旗舰店",
        ),
        _order(
            west,
            "D",
            ordered_at="2026-04-01T00:00:00Z",
            total_amount="200.00",
            lines=[_line("gift", "200.00")],
            status="refunded",
            refunded_amount="200.00",
            channel="online",
        ),
        _order(west, "E", ordered_at="2026-05-01T00:00:00Z", total_amount="20.00", lines=[_line("tea", "20.00")]),
    ]
    for body in orders:
        response = await client.post("/api/v1/orders", json=body, headers=tenant.headers())
        assert response.status_code == 201, response.text
    return {"zhang": zhang, "west": west}


async def _listed(client: httpx.AsyncClient, tenant: Tenant, params: Any, who: str = "admin") -> list[str]:
    response = await client.get("/api/v1/orders", params=params, headers=tenant.headers(who))
    assert response.status_code == 200, response.text
    return [order["external_id"] for order in response.json()["items"]]


async def _searched(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], who: str = "admin") -> list[str]:
    response = await client.post("/api/v1/orders/search", json=body, headers=tenant.headers(who))
    assert response.status_code == 200, response.text
    return [order["external_id"] for order in response.json()["items"]]


async def test_each_filter_narrows_the_list_and_the_search_body_takes_the_same(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    ids = await _seed(client, tenant)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["E", "D", "C", "B", "A"]),
        ({"customer_id": [ids["zhang"]]}, ["C", "B", "A"]),
        ({"status": ["cancelled", "refunded"]}, ["D", "B"]),
        ({"fulfilment_status": ["shipped"]}, ["C"]),
        ({"fulfilment_status": ["returned", "cancelled"]}, ["D", "B"]),
        ({"ordered_from": "2026-02-01T00:00:00Z", "ordered_to": "2026-04-01T00:00:00Z"}, ["C", "B"]),
        ({"ordered_from": "2026-03-01T08:00:00+08:00"}, ["E", "D", "C"]),
        ({"source": ["tmall"]}, ["C"]),
        ({"channel": ["online"]}, ["D", "B"]),
        ({"store": ["旗舰店"]}, ["C"]),
        ({"min_total_amount": "50", "max_total_amount": "100.00"}, ["C", "B"]),
        ({"max_total_amount": 20}, ["E", "A"]),
        ({"category": ["gift"]}, ["D", "C"]),
        ({"category": ["tea"], "customer_id": [ids["west"]]}, ["E"]),
        ({"category": ["cup", "gift"], "status": ["paid"]}, ["C"]),
        ({"source": ["nowhere"]}, []),
    ]
    for filters, expected in cases:
        assert await _listed(client, tenant, filters) == expected, filters
        assert await _searched(client, tenant, filters) == expected, filters
    oldest_first = await _listed(client, tenant, {"sort": "ordered_at"})
    assert oldest_first == ["A", "B", "C", "D", "E"]
    listed = (await client.get("/api/v1/orders", params={"source": "tmall"}, headers=tenant.headers())).json()
    order = listed["items"][0]
    assert (order["total_amount"], order["lines"][1]["unit_price"], order["ordered_at"]) == (
        "100.00",
        "40.00",
        "2026-03-01T00:00:00Z",
    )
    assert listed["next_cursor"] is None


async def test_a_salesperson_lists_only_the_orders_of_customers_it_sees(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = await _seed(client, tenant)
    assert await _listed(client, tenant, {}, who="sales") == ["C", "B", "A"]
    assert await _listed(client, tenant, {"customer_id": [ids["west"]]}, who="sales") == []
    assert await _searched(client, tenant, {"customer_id": [ids["west"]]}, who="sales") == []
    assert await _listed(client, tenant, {}, who="sales_west") == ["E", "D"]
    # Another workspace's list holds none of them, even asked by their customers' ids.
    assert await _listed(client, other_tenant, {}) == []
    assert await _searched(client, other_tenant, {"customer_id": [ids["zhang"], ids["west"]]}) == []


async def test_pages_follow_the_cursor_which_belongs_to_its_sort(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _seed(client, tenant)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/orders", params=params, headers=tenant.headers())).json()
        seen += [order["external_id"] for order in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["E", "D", "C", "B", "A"]
    first = (await client.get("/api/v1/orders", params={"limit": 2}, headers=tenant.headers())).json()
    # The search continues a list page of the same sort, filters and all.
    body = {"limit": 2, "cursor": first["next_cursor"], "customer_id": []}
    assert await _searched(client, tenant, body) == ["C", "B"]
    other_sort = await client.get(
        "/api/v1/orders", params={"sort": "ordered_at", "cursor": first["next_cursor"]}, headers=tenant.headers()
    )
    assert other_sort.status_code == 422 and other_sort.json()["errors"][0]["loc"] == ["query", "cursor"]
    in_body = await client.post(
        "/api/v1/orders/search", json={"sort": "ordered_at", "cursor": first["next_cursor"]}, headers=tenant.headers()
    )
    assert in_body.status_code == 422 and in_body.json()["errors"][0]["loc"] == ["body", "cursor"]
    # A customer's own order list is another list: its cursors are not this one's.
    zhang = (await client.get("/api/v1/orders", params={"sort": "ordered_at"}, headers=tenant.headers())).json()
    customer_id = zhang["items"][0]["customer_id"]
    theirs = await client.get(f"/api/v1/customers/{customer_id}/orders", params={"limit": 1}, headers=tenant.headers())
    foreign = await client.get(
        "/api/v1/orders", params={"cursor": theirs.json()["next_cursor"]}, headers=tenant.headers()
    )
    assert foreign.status_code == 422


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"ordered_from": "2026-03-01T00:00:00Z", "ordered_to": "2026-03-01T00:00:00Z"}, ["query", "ordered_to"]),
        ({"min_total_amount": "10", "max_total_amount": "9.99"}, ["query", "max_total_amount"]),
        ({"status": "shipped"}, ["query", "status", 0]),
        ({"fulfilment_status": ["paid", "lost"]}, ["query", "fulfilment_status", 1]),
        ({"customer_id": "not-an-id"}, ["query", "customer_id", 0]),
        ({"min_total_amount": "1e3"}, ["query", "min_total_amount"]),
        ({"ordered_from": "2026-03-01"}, ["query", "ordered_from"]),
        ({"sort": "total_amount"}, ["query", "sort"]),
        ({"source": ["a"] * 101}, ["query", "source"]),
        ({"cursor": "forged.cursor"}, ["query", "cursor"]),
    ],
)
async def test_bad_list_filters_are_422_naming_the_parameter(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, Any], loc: list[str | int]
) -> None:
    response = await client.get("/api/v1/orders", params=params, headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"ordered_from": "2026-03-02T00:00:00Z", "ordered_to": "2026-03-01T00:00:00Z"}, ["body", "ordered_to"]),
        ({"min_total_amount": "10", "max_total_amount": "1"}, ["body", "max_total_amount"]),
        ({"status": "paid"}, ["body", "status"]),
        ({"category": [""]}, ["body", "category", 0]),
        ({"min_total_amount": 1.5}, ["body", "min_total_amount"]),
        ({"filter": {"field": "status"}}, ["body", "filter"]),
        ({"limit": 101}, ["body", "limit"]),
        ({"cursor": "x" * 513}, ["body", "cursor"]),
    ],
)
async def test_bad_search_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], loc: list[str | int]
) -> None:
    response = await client.post("/api/v1/orders/search", json=body, headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc
