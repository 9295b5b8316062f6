"""Create, read, change, delete and restore a customer through HTTP."""

import re

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEntry, Customer, CustomerIdentity, OutboxEvent
from tests.factories import Tenant, customer_body


async def test_create_normalises_contacts_and_issues_a_code(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/customers",
        json=customer_body(name="张伟", emails=["Zhang.Wei@Example.COM"], phones=["138 0013 8000"], tags=["vip"]),
        headers=tenant.headers("sales"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["emails"] == ["zhang.wei@example.com"]
    assert body["phones"] == ["+8613800138000"]
    assert re.fullmatch(r"KH-\d{4}-000001", body["code"])
    assert body["owner_id"] == str(tenant.users["sales"].id)
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"/api/v1/customers/{body['id']}"


async def test_create_writes_its_code_into_the_row_search_text_audit_and_event(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    response = await client.post(
        "/api/v1/customers",
        json=customer_body(name="Li Na", emails=["li.na@example.com"], phones=["13800138001"], company="ACME"),
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    code = body["code"]
    row = await db.scalar(select(Customer).where(Customer.workspace_id == tenant.id, Customer.code == code))
    assert row is not None and str(row.id) == body["id"]
    assert row.search_text == f"li na {code.lower()} li.na@example.com 8613800138001 acme"
    identities = await db.scalars(
        select(CustomerIdentity.value).where(
            CustomerIdentity.workspace_id == tenant.id, CustomerIdentity.customer_id == row.id
        )
    )
    assert sorted(identities) == ["+8613800138001", "li.na@example.com"]
    event = await db.scalar(
        select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "customer.created")
    )
    assert event is not None and event.data["code"] == code and event.data["id"] == body["id"]
    entry = await db.scalar(
        select(AuditEntry).where(AuditEntry.workspace_id == tenant.id, AuditEntry.entity_id == row.id)
    )
    assert entry is not None and entry.action == "created"
    assert entry.changes["code"] == {"before": None, "after": code}
    assert entry.changes["company"] == {"before": None, "after": "ACME"}
    found = await client.get("/api/v1/customers", params={"q": code}, headers=tenant.headers())
    assert [item["id"] for item in found.json()["items"]] == [body["id"]]


async def test_get_returns_the_customer_with_its_etag(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    response = await client.get(f"/api/v1/customers/{created['id']}", headers=tenant.headers())
    assert response.status_code == 200
    assert response.json()["name"] == "张伟"
    assert response.headers["etag"] == '"1"'


async def test_patch_with_if_match_changes_fields_and_bumps_the_version(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    response = await client.patch(
        f"/api/v1/customers/{created['id']}",
        json={"name": "张伟明", "address": {"city": "深圳市"}, "consent": {"sms": True}},
        headers={**tenant.headers(), "If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "张伟明"
    assert body["address"]["city"] == "深圳市"
    assert body["consent"]["sms"] is True
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    events = (
        await db.scalars(
            select(OutboxEvent.type).where(OutboxEvent.workspace_id == tenant.id).order_by(OutboxEvent.occurred_at)
        )
    ).all()
    assert list(events) == ["customer.created", "customer.updated", "consent.changed"]


async def test_patch_with_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    response = await client.patch(
        f"/api/v1/customers/{created['id']}", json={"name": "李娜"}, headers={**tenant.headers(), "If-Match": '"7"'}
    )
    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["current_version"] == 1
    assert await db.scalar(select(Customer.name).where(Customer.id == created["id"])) == "张伟"


async def test_patch_without_if_match_is_428(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    response = await client.patch(f"/api/v1/customers/{created['id']}", json={"name": "李娜"}, headers=tenant.headers())
    assert response.status_code == 428
    assert response.json()["title"] == "Precondition required"


async def test_soft_delete_hides_the_customer_and_restore_brings_it_back(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = tenant.headers()
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=headers)).json()
    live = (await client.post("/api/v1/customers", json=customer_body(), headers=headers)).json()
    url = f"/api/v1/customers/{created['id']}"
    deleted = await client.delete(url, headers={**headers, "If-Match": '"1"'})
    assert deleted.status_code == 204
    assert (await client.get(url, headers=headers)).status_code == 404
    trash = (await client.get("/api/v1/customers?deleted=only", headers=headers)).json()
    assert [c["id"] for c in trash["items"]] == [created["id"]]
    listed = (await client.get("/api/v1/customers", headers=headers)).json()
    assert [c["id"] for c in listed["items"]] == [live["id"]]
    restored = await client.post(f"{url}/restore", headers=headers)
    assert restored.status_code == 200
    assert restored.json()["deleted_at"] is None
    assert restored.json()["version"] == 3
    assert (await client.get(url, headers=headers)).status_code == 200


async def test_audit_log_records_who_changed_what(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = tenant.headers("manager")
    created = (await client.post("/api/v1/customers", json=customer_body(title="经理"), headers=headers)).json()
    await client.patch(
        f"/api/v1/customers/{created['id']}", json={"title": "总监"}, headers={**headers, "If-Match": '"1"'}
    )
    audit = (await client.get(f"/api/v1/customers/{created['id']}/audit", headers=headers)).json()
    assert [e["action"] for e in audit["items"]] == ["updated", "created"]
    assert audit["items"][0]["changes"] == {"title": {"before": "经理", "after": "总监"}}
    assert audit["items"][0]["actor"] == {"type": "user", "id": str(tenant.users["manager"].id)}
