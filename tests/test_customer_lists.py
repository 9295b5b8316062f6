"""Listing customers: cursor pagination, filters, sorting and search."""

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import Tenant, customer_body


async def _create(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> dict[str, Any]:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_cursor_pagination_walks_every_customer_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = [await _create(client, tenant, name=f"客户{i}") for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/customers", params=params, headers=tenant.headers())).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["id"] for c in reversed(created)]


async def test_sort_by_name_ascending_with_id_tie_breaker(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for name in ["Carol", "alice", "Bob", "Bob"]:
        await _create(client, tenant, name=name)
    page = (await client.get("/api/v1/customers?sort=name&limit=2", headers=tenant.headers())).json()
    rest = (
        await client.get(f"/api/v1/customers?sort=name&limit=2&cursor={page['next_cursor']}", headers=tenant.headers())
    ).json()
    names = [c["name"] for c in page["items"] + rest["items"]]
    assert sorted(names) == sorted(["Carol", "alice", "Bob", "Bob"])
    assert len(names) == 4
    assert rest["next_cursor"] is None


async def test_filters_by_tag_city_source_and_owner(client: httpx.AsyncClient, tenant: Tenant) -> None:
    match = await _create(
        client,
        tenant,
        tags=["vip", "wholesale"],
        address={"city": "深圳市"},
        source="trade_show",
        owner_id=str(tenant.users["sales"].id),
    )
    await _create(client, tenant, tags=["vip"], address={"city": "广州市"}, source="trade_show")
    query = f"tag=vip&tag=wholesale&city=深圳市&source=trade_show&owner_id={tenant.users['sales'].id}"
    page = (await client.get(f"/api/v1/customers?{query}", headers=tenant.headers())).json()
    assert [c["id"] for c in page["items"]] == [match["id"]]


async def test_created_range_filter(client: httpx.AsyncClient, tenant: Tenant) -> None:
    first = await _create(client, tenant)
    page = (
        await client.get("/api/v1/customers", params={"created_before": first["created_at"]}, headers=tenant.headers())
    ).json()
    assert page["items"] == []
    page = (
        await client.get("/api/v1/customers", params={"created_after": first["created_at"]}, headers=tenant.headers())
    ).json()
    assert [c["id"] for c in page["items"]] == [first["id"]]


async def test_search_finds_chinese_names_by_a_single_character(client: httpx.AsyncClient, tenant: Tenant) -> None:
    zhang = await _create(client, tenant, name="张伟")
    await _create(client, tenant, name="李娜")
    page = (await client.get("/api/v1/customers", params={"q": "张"}, headers=tenant.headers())).json()
    assert [c["id"] for c in page["items"]] == [zhang["id"]]


async def test_search_finds_a_phone_by_a_fragment(client: httpx.AsyncClient, tenant: Tenant) -> None:
    match = await _create(client, tenant, phones=["13800138000"])
    await _create(client, tenant, phones=["13912345678"])
    page = (await client.get("/api/v1/customers", params={"q": "138001"}, headers=tenant.headers())).json()
    assert [c["id"] for c in page["items"]] == [match["id"]]


async def test_search_finds_email_fragments_and_codes(client: httpx.AsyncClient, tenant: Tenant) -> None:
    match = await _create(client, tenant, emails=["wang.fang@huaxia-trading.cn"])
    page = (await client.get("/api/v1/customers", params={"q": "huaxia"}, headers=tenant.headers())).json()
    assert [c["id"] for c in page["items"]] == [match["id"]]
    by_code = (await client.get("/api/v1/customers", params={"q": match["code"]}, headers=tenant.headers())).json()
    assert by_code["items"][0]["id"] == match["id"]


async def test_search_tolerates_a_typo(client: httpx.AsyncClient, tenant: Tenant) -> None:
    match = await _create(client, tenant, name="Jonathan Smithers")
    await _create(client, tenant, name="Maria Garcia")
    page = (await client.get("/api/v1/customers", params={"q": "jonathon"}, headers=tenant.headers())).json()
    assert [c["id"] for c in page["items"]] == [match["id"]]


async def test_search_pages_with_a_cursor(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for i in range(5):
        await _create(client, tenant, name=f"王芳{i}")
    first = (await client.get("/api/v1/customers", params={"q": "王芳", "limit": 3}, headers=tenant.headers())).json()
    second = (
        await client.get(
            "/api/v1/customers",
            params={"q": "王芳", "limit": 3, "cursor": first["next_cursor"]},
            headers=tenant.headers(),
        )
    ).json()
    ids = [c["id"] for c in first["items"] + second["items"]]
    assert len(ids) == len(set(ids)) == 5
    assert second["next_cursor"] is None


async def test_list_never_shows_another_workspaces_customers(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    await _create(client, other_tenant, name="张三")
    page = (await client.get("/api/v1/customers", params={"q": "张三"}, headers=tenant.headers())).json()
    assert page["items"] == []
    page = (await client.get("/api/v1/customers", headers=tenant.headers())).json()
    assert page["items"] == []
