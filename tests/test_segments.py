"""The filter language, customer search by filter, segments (dynamic, static, snapshots, built-ins)."""

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import system_caller
from app.models import OutboxEvent, Segment
from app.services.segments import segments
from app.services.value import customer_values
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant, who: str = "admin", **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers(who))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _search(client: httpx.AsyncClient, tenant: Tenant, filter_: object, who: str = "admin") -> set[str]:
    response = await client.post(
        "/api/v1/customers/search", json={"filter": filter_, "limit": 100}, headers=tenant.headers(who)
    )
    assert response.status_code == 200, response.text
    return {c["id"] for c in response.json()["items"]}


async def test_nested_filters_select_the_right_customers(client: httpx.AsyncClient, tenant: Tenant) -> None:
    shenzhen_vip = await _customer(client, tenant, address={"city": "深圳市"}, tags=["vip"], source="fair")
    shenzhen = await _customer(client, tenant, address={"city": "深圳市"}, tags=["retail"])
    guangzhou_vip = await _customer(client, tenant, address={"city": "广州市"}, tags=["vip"], birthday="1990-01-15")
    await _customer(client, tenant, address={"city": "北京市"})
    assert await _search(client, tenant, {"field": "city", "op": "eq", "value": "深圳市"}) == {shenzhen_vip, shenzhen}
    both = {
        "and": [
            {"field": "city", "op": "in", "value": ["深圳市", "广州市"]},
            {"field": "tags", "op": "contains", "value": "vip"},
        ]
    }
    assert await _search(client, tenant, both) == {shenzhen_vip, guangzhou_vip}
    negated = {
        "and": [
            {"field": "tags", "op": "in", "value": ["vip", "retail"]},
            {"not": {"field": "city", "op": "eq", "value": "广州市"}},
        ]
    }
    assert await _search(client, tenant, negated) == {shenzhen_vip, shenzhen}
    either = {"or": [{"field": "source", "op": "eq", "value": "fair"}, {"field": "birthday", "op": "is_not_null"}]}
    assert await _search(client, tenant, either) == {shenzhen_vip, guangzhou_vip}


async def test_values_are_parameters_not_sql(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    await _customer(client, tenant, name="O'Brien")
    hostile = {"field": "name", "op": "eq", "value": "x'; DROP TABLE customers; --"}
    assert await _search(client, tenant, hostile) == set()
    assert await _search(client, tenant, {"field": "name", "op": "contains", "value": "'Bri"}) != set()
    assert await db.scalar(text("SELECT count(*) FROM customers")) >= 1


async def test_search_by_filter_respects_visibility(client: httpx.AsyncClient, tenant: Tenant) -> None:
    mine = await _customer(client, tenant, "sales", address={"city": "深圳市"})
    await _customer(client, tenant, "sales2", address={"city": "深圳市"})
    assert await _search(client, tenant, {"field": "city", "op": "eq", "value": "深圳市"}, who="sales") == {mine}


@pytest.mark.parametrize(
    ("filter_", "loc"),
    [
        ({"field": "shoe_size", "op": "eq", "value": 42}, ["body", "filter", "field"]),
        ({"field": "city", "op": "gt", "value": "a"}, ["body", "filter", "op"]),
        (
            {
                "and": [
                    {"field": "city", "op": "eq", "value": "x"},
                    {"field": "value.order_count", "op": "gt", "value": "many"},
                ]
            },
            ["body", "filter", "and", 1, "value"],
        ),
        ({"or": []}, ["body", "filter", "or"]),
        ({"field": "created_at", "op": "in_last_days", "value": -3}, ["body", "filter", "value"]),
        ({"field": "created_at", "op": "gt", "value": "2026-01-01T00:00:00"}, ["body", "filter", "value"]),
        ({"field": "kind", "op": "eq", "value": "robot"}, ["body", "filter", "value"]),
        ({"field": "city", "op": "is_null", "value": "x"}, ["body", "filter", "value"]),
        ({"field": "segment", "op": "in", "value": ["not-a-uuid"]}, ["body", "filter", "value", 0]),
        ({"field": "value.order_count", "op": "eq", "value": 2**64}, ["body", "filter", "value"]),
        ({"nope": 1}, ["body", "filter"]),
        ("city = 'x'", ["body", "filter"]),
    ],
)
async def test_invalid_filters_are_422_with_the_path(
    client: httpx.AsyncClient, tenant: Tenant, filter_: object, loc: list[object]
) -> None:
    response = await client.post("/api/v1/customers/search", json={"filter": filter_}, headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc


async def test_filters_are_bounded(client: httpx.AsyncClient, tenant: Tenant) -> None:
    deep: dict[str, object] = {"field": "city", "op": "eq", "value": "x"}
    for _ in range(8):
        deep = {"not": deep}
    assert (
        await client.post("/api/v1/customers/search", json={"filter": deep}, headers=tenant.headers())
    ).status_code == 422
    wide = {"and": [{"field": "city", "op": "eq", "value": str(i)} for i in range(51)]}
    assert (
        await client.post("/api/v1/customers/search", json={"filter": wide}, headers=tenant.headers())
    ).status_code == 422


async def test_field_catalogue_includes_custom_fields(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post(
        "/api/v1/custom-fields",
        json={"key": "level", "label": "Level", "type": "select", "rules": {"options": ["a", "b"]}},
        headers=tenant.headers(),
    )
    catalogue = (await client.get("/api/v1/segments/fields", headers=tenant.headers())).json()["items"]
    by_name = {f["field"]: f for f in catalogue}
    assert by_name["custom.level"]["options"] == ["a", "b"]
    assert "birthday_within_days" in by_name["birthday"]["operators"]
    assert by_name["value.rfm_segment"]["type"] == "enum"


async def test_preview_counts_an_unsaved_filter(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ids = [await _customer(client, tenant, tags=["trial"]) for _ in range(3)]
    response = await client.post(
        "/api/v1/segments/preview",
        json={"filter": {"field": "tags", "op": "contains", "value": "trial"}, "limit": 2},
        headers=tenant.headers(),
    )
    assert response.json()["count"] == 3
    assert [item["id"] for item in response.json()["items"]] == [ids[2], ids[1]]
    nobody = await client.post(
        "/api/v1/segments/preview",
        json={"filter": {"field": "tags", "op": "contains", "value": "nobody"}, "limit": 2},
        headers=tenant.headers(),
    )
    assert nobody.json() == {"count": 0, "items": []}


async def test_dynamic_segment_refresh_records_joins_leaves_and_events(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    a = await _customer(client, tenant, tags=["vip"])
    b = await _customer(client, tenant, tags=["vip"])
    created = await client.post(
        "/api/v1/segments",
        json={"name": "VIPs", "filter": {"field": "tags", "op": "contains", "value": "vip"}},
        headers=tenant.headers(),
    )
    assert created.status_code == 201
    # Created before its first refresh: it says its members are being computed.
    assert (created.json()["members_status"], created.json()["member_count"]) == ("computing", 0)
    segment = await db.get(Segment, (tenant.id, created.json()["id"]))
    assert segment is not None
    assert await segments.refresh(db, segment) == (2, 0)
    read = (await client.get(f"/api/v1/segments/{segment.id}", headers=tenant.headers())).json()
    assert (read["members_status"], read["member_count"]) == ("ready", 2)
    await client.patch(f"/api/v1/customers/{b}", json={"tags": []}, headers={**tenant.headers(), "If-Match": '"1"'})
    c = await _customer(client, tenant, tags=["vip"])
    assert await segments.refresh(db, segment) == (1, 1)
    page = (await client.get(f"/api/v1/segments/{segment.id}/members", headers=tenant.headers())).json()
    assert {m["id"] for m in page["items"]} == {a, c}
    sizes = (await client.get(f"/api/v1/segments/{segment.id}/sizes", headers=tenant.headers())).json()["items"]
    assert [(s["members"], s["joined"], s["left"]) for s in sizes] == [(2, 1, 1), (2, 2, 0)]
    types = (await db.scalars(select(OutboxEvent.type).where(OutboxEvent.workspace_id == tenant.id))).all()
    assert types.count("segment.member_added") == 3 and types.count("segment.member_removed") == 1
    members_filter = {"field": "segment", "op": "in", "value": [str(segment.id)]}
    assert await _search(client, tenant, members_filter) == {a, c}


async def test_static_lists_and_snapshots(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    a = await _customer(client, tenant)
    b = await _customer(client, tenant)
    foreign = await _customer(client, other_tenant)
    listed = (
        await client.post("/api/v1/segments", json={"name": "Call list", "kind": "static"}, headers=tenant.headers())
    ).json()
    url = f"/api/v1/segments/{listed['id']}"
    changed = await client.post(f"{url}/members", json={"add": [a, b]}, headers=tenant.headers())
    assert changed.json()["member_count"] == 2
    refused = await client.post(f"{url}/members", json={"add": [foreign]}, headers=tenant.headers())
    assert refused.status_code == 422
    frozen = (await client.post(f"{url}/snapshot", json={}, headers=tenant.headers())).json()
    await client.post(f"{url}/members", json={"remove": [b]}, headers=tenant.headers())
    assert (await client.get(url, headers=tenant.headers())).json()["member_count"] == 1
    snapshot_members = (await client.get(f"/api/v1/segments/{frozen['id']}/members", headers=tenant.headers())).json()
    assert {m["id"] for m in snapshot_members["items"]} == {a, b}
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404
    assert (await client.post(f"{url}/refresh", headers=tenant.headers())).status_code == 409


async def test_static_list_refuses_a_filter_and_dynamic_needs_one(client: httpx.AsyncClient, tenant: Tenant) -> None:
    bad = await client.post(
        "/api/v1/segments",
        json={"name": "x", "kind": "static", "filter": {"field": "city", "op": "eq", "value": "a"}},
        headers=tenant.headers(),
    )
    assert bad.status_code == 422
    assert (await client.post("/api/v1/segments", json={"name": "x"}, headers=tenant.headers())).status_code == 422


async def test_builtin_segments_ship_with_every_workspace(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    listed = (await client.get("/api/v1/segments", headers=tenant.headers())).json()["items"]
    builtins = {s["builtin"] for s in listed if s["builtin"]}
    assert {"birthdays_this_month", "new_this_month", "at_risk", "rfm:Champions", "rfm:Lost"} <= builtins
    new_this_month = next(s for s in listed if s["builtin"] == "new_this_month")
    customer = await _customer(client, tenant)
    segment = await db.get(Segment, (tenant.id, new_this_month["id"]))
    assert segment is not None
    await segments.refresh(db, segment)
    members = (await client.get(f"/api/v1/segments/{segment.id}/members", headers=tenant.headers())).json()
    assert [m["id"] for m in members["items"]] == [customer]
    deleted = await client.delete(f"/api/v1/segments/{segment.id}", headers={**tenant.headers(), "If-Match": '"1"'})
    assert deleted.status_code == 409


async def test_members_export_as_csv_escapes_formulas(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    evil = await _customer(client, tenant, name='=HYPERLINK("http://x")')
    listed = (
        await client.post("/api/v1/segments", json={"name": "l", "kind": "static"}, headers=tenant.headers())
    ).json()
    await client.post(f"/api/v1/segments/{listed['id']}/members", json={"add": [evil]}, headers=tenant.headers())
    exported = await client.get(
        f"/api/v1/segments/{listed['id']}/members", headers={**tenant.headers(), "Accept": "text/csv"}
    )
    assert exported.headers["content-type"].startswith("text/csv")
    assert "'=HYPERLINK" in exported.text


async def test_value_fields_filter_after_a_recompute(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    buyer = await _customer(client, tenant)
    await _customer(client, tenant)
    order = {
        "external_id": "1",
        "customer_id": buyer,
        "ordered_at": "2026-11-01T00:00:00Z",
        "currency": "CNY",
        "total_amount": "100.00",
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": "100.00"}],
    }
    assert (await client.post("/api/v1/orders", json=order, headers=tenant.headers())).status_code == 201
    await customer_values.recompute_workspace(db, system_caller(tenant.id))
    spenders = {"field": "value.total_spend", "op": "gte", "value": 50}
    assert await _search(client, tenant, spenders) == {buyer}
    never = {"field": "value.order_count", "op": "is_null"}
    assert buyer not in await _search(client, tenant, never)


async def test_activity_fields_and_the_no_contact_builtin(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    from datetime import timedelta

    from app.core import clock

    talked = await _customer(client, tenant)
    long_ago = await _customer(client, tenant)
    silent = await _customer(client, tenant)
    for customer, days, channel in [(talked, 2, "wechat"), (talked, 5, "phone"), (long_ago, 200, "phone")]:
        body = {
            "customer_id": customer,
            "channel": channel,
            "direction": "outbound",
            "occurred_at": (clock.now() - timedelta(days=days)).isoformat(),
        }
        assert (await client.post("/api/v1/interactions", json=body, headers=tenant.headers())).status_code == 201
    recent = {"field": "activity.interactions_30d", "op": "gte", "value": 2}
    assert await _search(client, tenant, recent) == {talked}
    by_channel = {"field": "activity.interactions_365d.phone", "op": "gte", "value": 1}
    assert await _search(client, tenant, by_channel) == {talked, long_ago}
    quiet = {"field": "activity.last_interaction_at", "op": "more_than_days_ago", "value": 90}
    assert await _search(client, tenant, quiet) == {long_ago}
    listed = (await client.get("/api/v1/segments", headers=tenant.headers())).json()["items"]
    builtin = next(s for s in listed if s["builtin"] == "no_contact_90_days")
    segment = await db.get(Segment, (tenant.id, builtin["id"]))
    assert segment is not None
    await segments.refresh(db, segment)
    members = (await client.get(f"/api/v1/segments/{segment.id}/members", headers=tenant.headers())).json()
    assert {m["id"] for m in members["items"]} == {long_ago, silent}
