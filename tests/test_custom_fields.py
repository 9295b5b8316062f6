"""Custom field definitions, the values they admit, and filtering on them."""

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer, OutboxEvent
from tests.factories import Tenant, customer_body


async def _define(client: httpx.AsyncClient, tenant: Tenant, **body: object) -> dict[str, object]:
    response = await client.post("/api/v1/custom-fields", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_definition_crud_with_etags(client: httpx.AsyncClient, tenant: Tenant) -> None:
    field = await _define(
        client, tenant, key="vip_level", label="VIP", type="select", rules={"options": ["gold", "silver"]}
    )
    url = f"/api/v1/custom-fields/{field['id']}"
    assert (await client.get(url, headers=tenant.headers())).headers["etag"] == '"1"'
    patched = await client.patch(
        url,
        json={"label": "VIP level", "rules": {"options": ["gold", "silver", "bronze"]}},
        headers={**tenant.headers(), "If-Match": '"1"'},
    )
    assert patched.status_code == 200
    assert patched.json()["rules"]["options"] == ["gold", "silver", "bronze"]
    listed = (await client.get("/api/v1/custom-fields", headers=tenant.headers())).json()
    assert [f["key"] for f in listed["items"]] == ["vip_level"]
    assert (await client.delete(url, headers={**tenant.headers(), "If-Match": '"1"'})).status_code == 412
    assert (await client.delete(url, headers={**tenant.headers(), "If-Match": '"2"'})).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404


async def test_duplicate_key_is_409(client: httpx.AsyncClient, tenant: Tenant) -> None:
    first = await _define(client, tenant, key="level", label="L", type="text")
    response = await client.post(
        "/api/v1/custom-fields", json={"key": "level", "label": "L", "type": "text"}, headers=tenant.headers()
    )
    assert response.status_code == 409
    assert response.json()["existing_id"] == first["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"key": "Bad Key", "label": "L", "type": "text"},
        {"key": "k", "label": "L", "type": "colour"},
        {"key": "k", "label": "L", "type": "select"},
        {"key": "k", "label": "L", "type": "text", "rules": {"options": ["a"]}},
        {"key": "k", "label": "L", "type": "integer", "rules": {"min": 5, "max": 1}},
        {"key": "k", "label": "L", "type": "integer", "rules": {"max": 2**64}},
    ],
)
async def test_bad_definitions_are_422(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object]) -> None:
    assert (await client.post("/api/v1/custom-fields", json=body, headers=tenant.headers())).status_code == 422


@pytest.mark.parametrize(
    ("value", "ok"),
    [(5, True), (5.0, True), (5.5, False), ("5", False), (True, False), (100, False), (-1, False)],
)
async def test_integer_values_are_checked_against_rules(
    client: httpx.AsyncClient, tenant: Tenant, value: object, ok: bool
) -> None:
    await _define(client, tenant, key="visits", label="Visits", type="integer", rules={"min": 0, "max": 50})
    response = await client.post(
        "/api/v1/customers", json=customer_body(custom_fields={"visits": value}), headers=tenant.headers()
    )
    assert response.status_code == (201 if ok else 422), response.text
    if not ok:
        assert response.json()["errors"][0]["loc"] == ["body", "custom_fields", "visits"]


async def test_required_field_must_be_present(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _define(client, tenant, key="region", label="Region", type="text", required=True)
    assert (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).status_code == 422
    ok = await client.post(
        "/api/v1/customers", json=customer_body(custom_fields={"region": "south"}), headers=tenant.headers()
    )
    assert ok.status_code == 201


async def test_patch_merges_custom_fields_and_null_removes(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _define(client, tenant, key="a", label="A", type="text")
    await _define(client, tenant, key="b", label="B", type="boolean")
    created = (
        await client.post(
            "/api/v1/customers", json=customer_body(custom_fields={"a": "x", "b": True}), headers=tenant.headers()
        )
    ).json()
    patched = await client.patch(
        f"/api/v1/customers/{created['id']}",
        json={"custom_fields": {"a": None, "b": False}},
        headers={**tenant.headers(), "If-Match": '"1"'},
    )
    assert patched.json()["custom_fields"] == {"b": False}


async def test_filter_customers_by_custom_field(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _define(client, tenant, key="vip_level", label="VIP", type="select", rules={"options": ["gold", "silver"]})
    await _define(client, tenant, key="visits", label="Visits", type="integer")
    await _define(
        client, tenant, key="interests", label="Interests", type="multiselect", rules={"options": ["tea", "golf"]}
    )
    gold = (
        await client.post(
            "/api/v1/customers",
            json=customer_body(custom_fields={"vip_level": "gold", "visits": 3, "interests": ["tea", "golf"]}),
            headers=tenant.headers(),
        )
    ).json()
    await client.post(
        "/api/v1/customers",
        json=customer_body(custom_fields={"vip_level": "silver", "visits": 4}),
        headers=tenant.headers(),
    )
    for query in ("custom.vip_level=gold", "custom.visits=3", "custom.interests=golf"):
        page = (await client.get(f"/api/v1/customers?{query}", headers=tenant.headers())).json()
        assert [c["id"] for c in page["items"]] == [gold["id"]], query
    bad = await client.get("/api/v1/customers?custom.visits=three", headers=tenant.headers())
    assert bad.status_code == 422
    bad_option = await client.get("/api/v1/customers?custom.vip_level=platinum", headers=tenant.headers())
    assert bad_option.status_code == 422


async def test_deleting_a_definition_removes_its_values(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    field = await _define(client, tenant, key="temp", label="Temp", type="text")
    await _define(client, tenant, key="kept", label="Kept", type="text")
    created = (
        await client.post(
            "/api/v1/customers",
            json=customer_body(custom_fields={"temp": "x", "kept": "y"}),
            headers=tenant.headers(),
        )
    ).json()
    untouched = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    deleted = await client.delete(
        f"/api/v1/custom-fields/{field['id']}", headers={**tenant.headers(), "If-Match": '"1"'}
    )
    assert deleted.status_code == 204
    row = (await db.execute(select(Customer.custom_fields, Customer.version).where(Customer.id == created["id"]))).one()
    assert row.custom_fields == {"kept": "y"}
    assert row.version == 2
    # What a PATCH removing the value writes: the audit entry and `customer.updated` with the payload.
    history = (await client.get(f"/api/v1/customers/{created['id']}/audit", headers=tenant.headers())).json()
    assert history["items"][0]["action"] == "updated"
    assert history["items"][0]["changes"]["custom_fields"] == {
        "before": {"temp": "x", "kept": "y"},
        "after": {"kept": "y"},
    }
    events = (
        await db.scalars(
            select(OutboxEvent.data).where(
                OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "customer.updated"
            )
        )
    ).all()
    (event,) = [data for data in events if data["id"] == created["id"]]
    assert event["changed_fields"] == ["custom_fields"]
    assert event["custom_fields"] == {"kept": "y"}
    assert event["version"] == 2
    assert all(data["id"] != untouched["id"] for data in events)
