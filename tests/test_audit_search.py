"""The workspace-wide audit log: admins search every record's entries by actor, record, action and
time; no one else reads it, and no workspace reads another's."""

import uuid

import httpx

from app.core import clock
from app.core.wire import utc_text
from tests.factories import Tenant, customer_body


async def _entries(client: httpx.AsyncClient, tenant: Tenant, query: str = "") -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor = ""
    while True:
        response = await client.get(f"/api/v1/audit?limit=2{query}{cursor}", headers=tenant.headers())
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        cursor = f"&cursor={page['next_cursor']}"


async def test_admins_search_the_log_by_actor_record_action_and_time(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    before = clock.now()
    by_admin = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    by_sales = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers("sales"))).json()
    patched = await client.patch(
        f"/api/v1/customers/{by_sales['id']}",
        json={"name": "李娜"},
        headers={**tenant.headers("sales"), "If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    await client.post("/api/v1/customers", json=customer_body(), headers=other_tenant.headers())

    everything = await _entries(client, tenant)
    assert {(e["entity_id"], e["action"]) for e in everything} >= {
        (by_admin["id"], "created"),
        (by_sales["id"], "created"),
        (by_sales["id"], "updated"),
    }
    ids = [str(e["id"]) for e in everything]
    assert ids == sorted(ids, reverse=True), "newest first"

    sales_id = str(tenant.users["sales"].id)
    by_actor = await _entries(client, tenant, f"&actor_id={sales_id}")
    expected = {(by_sales["id"], "created"), (by_sales["id"], "updated")}
    assert {(e["entity_id"], e["action"]) for e in by_actor} == expected
    assert all(e["actor"] == {"type": "user", "id": sales_id} for e in by_actor)

    updates = await _entries(client, tenant, f"&entity_type=customer&action=updated&since={utc_text(before)}")
    assert [(e["entity_id"], e["changes"]) for e in updates] == [
        (by_sales["id"], {"name": {"before": "张伟", "after": "李娜"}})
    ]
    one = await _entries(client, tenant, f"&entity_id={by_admin['id']}")
    assert [e["action"] for e in one] == ["created"]
    assert await _entries(client, tenant, f"&until={utc_text(before)}&entity_type=customer") == []


async def test_only_callers_with_the_workspace_audit_scope_read_it(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for role in ("manager", "sales", "support", "readonly"):
        response = await client.get("/api/v1/audit", headers=tenant.headers(role))
        assert response.status_code == 403, (role, response.text)


async def test_bad_filters_are_precise_422s(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for query, field in [
        ("actor_type=robot", "actor_type"),
        (f"actor_id={uuid.uuid4().hex[:8]}", "actor_id"),
        ("since=yesterday", "since"),
        ("entity_type=Customer%3B", "entity_type"),
    ]:
        response = await client.get(f"/api/v1/audit?{query}", headers=tenant.headers())
        assert response.status_code == 422, (query, response.text)
        assert response.json()["errors"][0]["loc"] == ["query", field]
