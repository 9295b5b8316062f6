"""Field sales: visits with a location and check-in/check-out times, on every path that logs a
contact, and the change feed a salesperson's phone syncs from."""

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Interaction
from tests.factories import Tenant, customer_body

HERE = {"latitude": 31.2304, "longitude": 121.4737, "accuracy_m": 12.5, "address": "上海市黄浦区南京东路 1 号"}


async def _customer(client: httpx.AsyncClient, tenant: Tenant, owner: str = "sales") -> str:
    body = customer_body(owner_id=str(tenant.users[owner].id))
    response = await client.post("/api/v1/customers", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _visit(customer_id: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "customer_id": customer_id,
        "channel": "visit",
        "direction": "outbound",
        "occurred_at": "2026-12-01T01:00:00Z",
        "location": HERE,
        "checked_in_at": "2026-12-01T01:00:00Z",
    }
    body.update(overrides)
    return body


async def test_a_visit_is_logged_read_checked_out_and_on_the_timeline(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    customer = await _customer(client, tenant)
    sales = tenant.headers("sales")
    created = await client.post("/api/v1/interactions", json=_visit(customer), headers=sales)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["location"] == HERE
    assert body["checked_in_at"] == "2026-12-01T01:00:00Z" and body["checked_out_at"] is None
    url = f"/api/v1/interactions/{body['id']}"
    # Checking out of the open visit later, from the phone: a PATCH with the ETag it read.
    out = {"checked_out_at": "2026-12-01T09:45:30+08:00"}
    checked_out = await client.patch(url, json=out, headers={**sales, "If-Match": '"1"'})
    assert checked_out.status_code == 200, checked_out.text
    assert checked_out.json()["checked_out_at"] == "2026-12-01T01:45:30Z" and checked_out.json()["version"] == 2
    read = (await client.get(url, headers=sales)).json()
    assert read["location"] == HERE and read["checked_out_at"] == "2026-12-01T01:45:30Z"
    timeline = await client.get(f"/api/v1/customers/{customer}/timeline", headers=sales)
    item = next(i for i in timeline.json()["items"] if i["type"] == "interaction")
    assert item["data"]["location"] == HERE
    assert (item["data"]["checked_in_at"], item["data"]["checked_out_at"]) == (
        "2026-12-01T01:00:00Z",
        "2026-12-01T01:45:30Z",
    )


async def test_a_location_alone_is_fine_on_any_channel(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    body = _visit(customer, channel="phone", location={"latitude": -90, "longitude": 180})
    del body["checked_in_at"]
    created = await client.post("/api/v1/interactions", json=body, headers=tenant.headers("sales"))
    assert created.status_code == 201, created.text
    assert created.json()["location"] == {"latitude": -90, "longitude": 180, "accuracy_m": None, "address": None}


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"location": {**HERE, "latitude": 90.5}}, ["body", "location", "latitude"]),
        ({"location": {**HERE, "longitude": -180.01}}, ["body", "location", "longitude"]),
        ({"location": {"latitude": 31.2}}, ["body", "location", "longitude"]),
        ({"location": {**HERE, "accuracy_m": -1}}, ["body", "location", "accuracy_m"]),
        ({"checked_out_at": "2026-12-01T00:59:59Z"}, ["body", "checked_out_at"]),
        ({"checked_in_at": None, "checked_out_at": "2026-12-01T02:00:00Z"}, ["body", "checked_out_at"]),
        ({"channel": "phone"}, ["body", "checked_in_at"]),
        ({"channel": "meeting", "checked_in_at": None, "checked_out_at": "2026-12-01T02:00:00Z"}, None),
    ],
)
async def test_bad_visits_are_422_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, overrides: dict[str, object], loc: list[str] | None
) -> None:
    customer = await _customer(client, tenant)
    refused = await client.post(
        "/api/v1/interactions", json=_visit(customer, **overrides), headers=tenant.headers("sales")
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    locs = [error["loc"] for error in refused.json()["errors"]]
    assert loc is None or loc in locs, locs
    assert await db.scalar(select(func.count()).select_from(Interaction)) == 0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"checked_out_at": "2026-12-01T00:30:00Z"}, "checked_out_at"),
        ({"channel": "phone"}, "checked_in_at"),
        ({"location": {"latitude": 12, "longitude": 200}}, "longitude"),
        ({"checked_in_at": None, "checked_out_at": "2026-12-01T02:00:00Z"}, "checked_out_at"),
    ],
)
async def test_a_bad_check_out_or_change_is_422_and_leaves_the_visit_as_it_was(
    client: httpx.AsyncClient, tenant: Tenant, patch: dict[str, object], field: str
) -> None:
    customer = await _customer(client, tenant)
    sales = tenant.headers("sales")
    created = (await client.post("/api/v1/interactions", json=_visit(customer), headers=sales)).json()
    url = f"/api/v1/interactions/{created['id']}"
    refused = await client.patch(url, json=patch, headers={**sales, "If-Match": '"1"'})
    assert refused.status_code == 422, refused.text
    assert field in refused.json()["errors"][0]["loc"]
    assert (await client.get(url, headers=sales)).json() == created


async def test_the_batch_import_takes_visits_and_refuses_bad_ones_alone(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    customer = await _customer(client, tenant)
    items = [
        _visit(customer, external_id="V-1", checked_out_at="2026-12-01T02:00:00Z"),
        _visit(customer, external_id="V-2", location={"latitude": -91, "longitude": 0}),
        _visit(customer, external_id="V-3", checked_out_at="2026-12-01T00:00:00Z"),
    ]
    response = await client.post("/api/v1/interactions/import", json={"items": items}, headers=tenant.headers())
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 422, 422]
    stored = (await client.get(f"/api/v1/interactions/{results[0]['id']}", headers=tenant.headers())).json()
    assert stored["location"] == HERE and stored["checked_out_at"] == "2026-12-01T02:00:00Z"
    listed = await client.get("/api/v1/interactions", params={"customer_id": customer}, headers=tenant.headers())
    assert [i["external_id"] for i in listed.json()["items"]] == ["V-1"]


async def _settled(client: httpx.AsyncClient, tenant: Tenant, expected: int) -> None:
    """Events show once every older transaction in the cluster has ended: wait for ours."""
    async with asyncio.timeout(15):
        while True:
            page = await client.get("/api/v1/events", params={"limit": 100}, headers=tenant.headers())
            if len(page.json()["items"]) >= expected:
                return
            await asyncio.sleep(0.1)


async def _sync(
    client: httpx.AsyncClient, tenant: Tenant, who: str, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Every page from `cursor` on, as an app syncs; the cursor to resume from next time."""
    items: list[dict[str, Any]] = []
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get("/api/v1/changes", params=params, headers=tenant.headers(who))
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        if not page.json()["items"]:
            # Up to date; the empty page hands back the cursor it was given.
            assert page.json()["next_cursor"] == cursor
            return items, cursor
        cursor = page.json()["next_cursor"]
        assert cursor is not None


async def test_a_salesperson_syncs_its_customers_visits_and_tasks_resumes_and_sees_deletions(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    client, tenant = live_client, live_tenant
    mine = await _customer(client, tenant, "sales")
    theirs = await _customer(client, tenant, "sales2")
    visit = await client.post("/api/v1/interactions", json=_visit(mine), headers=tenant.headers("sales"))
    other = await client.post("/api/v1/interactions", json=_visit(theirs), headers=tenant.headers("sales2"))
    assert visit.status_code == other.status_code == 201
    await _settled(client, tenant, 4)
    first, cursor = await _sync(client, tenant, "sales")
    assert [(e["type"], e["data"]["id"]) for e in first] == [
        ("customer.created", mine),
        ("interaction.created", visit.json()["id"]),
    ]
    assert first[1]["data"]["location"] == HERE and first[1]["data"]["checked_in_at"] == "2026-12-01T01:00:00Z"
    assert theirs not in str(first) and other.json()["id"] not in str(first)
    assert cursor is not None
    # Offline for a while: the check-out and a deletion happen; the cursor resumes right after the
    # last change the app holds, with nothing missed and nothing repeated.
    url = f"/api/v1/interactions/{visit.json()['id']}"
    sales = tenant.headers("sales")
    out = {"checked_out_at": "2026-12-01T02:00:00Z"}
    assert (await client.patch(url, json=out, headers={**sales, "If-Match": '"1"'})).status_code == 200
    assert (await client.delete(url, headers={**sales, "If-Match": '"2"'})).status_code == 204
    task = await client.post(
        "/api/v1/tasks",
        json={"customer_id": mine, "title": "再次拜访", "due_at": "2026-12-03T01:00:00Z"},
        headers=sales,
    )
    assert task.status_code == 201, task.text
    task_url = f"/api/v1/tasks/{task.json()['id']}"
    moved = await client.patch(task_url, json={"due_at": "2026-12-04T01:00:00Z"}, headers={**sales, "If-Match": '"1"'})
    assert moved.status_code == 200, moved.text
    assert (await client.post(f"{task_url}/cancel", headers=sales)).status_code == 200
    await _settled(client, tenant, 9)
    later, cursor = await _sync(client, tenant, "sales", cursor)
    assert [e["type"] for e in later] == [
        "interaction.updated",
        "interaction.deleted",
        "task.created",
        "task.updated",
        "task.cancelled",
    ]
    assert later[3]["data"]["due_at"] == "2026-12-04T01:00:00Z" and later[3]["data"]["changed_fields"] == ["due_at"]
    assert later[4]["data"]["status"] == "cancelled"
    assert later[0]["data"]["checked_out_at"] == "2026-12-01T02:00:00Z"
    assert later[0]["data"]["changed_fields"] == ["checked_out_at"]
    assert later[1]["data"] == {"id": visit.json()["id"], "customer_id": mine, "version": 3}
    assert (await _sync(client, tenant, "sales", cursor))[0] == []
