"""Another workspace's ids answer 404 on every verb; roles see own, team or all customers."""

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer
from tests.factories import Tenant, customer_body


async def _victim(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, object]:
    response = await client.post("/api/v1/customers", json=customer_body(name="受害者"), headers=tenant.headers())
    return dict(response.json())


@pytest.mark.parametrize(
    ("method", "suffix", "body", "needs_if_match"),
    [
        ("GET", "", None, False),
        ("PATCH", "", {"name": "hijacked"}, True),
        ("DELETE", "", None, True),
        ("POST", "/restore", None, False),
        ("GET", "/audit", None, False),
    ],
)
async def test_other_workspace_ids_are_404_and_untouched(
    client: httpx.AsyncClient,
    tenant: Tenant,
    other_tenant: Tenant,
    db: AsyncSession,
    method: str,
    suffix: str,
    body: dict[str, object] | None,
    needs_if_match: bool,
) -> None:
    victim = await _victim(client, tenant)
    headers = {**other_tenant.headers(), **({"If-Match": '"1"'} if needs_if_match else {})}
    response = await client.request(method, f"/api/v1/customers/{victim['id']}{suffix}", json=body, headers=headers)
    assert response.status_code == 404
    row = (
        await db.execute(
            select(Customer.name, Customer.version, Customer.deleted_at).where(Customer.id == victim["id"])
        )
    ).one()
    assert tuple(row) == ("受害者", 1, None)


async def test_batch_update_of_another_workspaces_customer_is_404_for_that_item(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    victim = await _victim(client, tenant)
    response = await client.patch(
        "/api/v1/customers/batch",
        json={"items": [{"id": victim["id"], "version": 1, "patch": {"name": "hijacked"}}]},
        headers=other_tenant.headers(),
    )
    assert response.status_code == 207
    assert response.json()["results"][0]["status"] == 404
    assert await db.scalar(select(Customer.name).where(Customer.id == victim["id"])) == "受害者"


async def test_owner_id_from_another_workspace_is_rejected(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = await client.post(
        "/api/v1/customers",
        json=customer_body(owner_id=str(other_tenant.users["sales"].id)),
        headers=tenant.headers(),
    )
    assert response.status_code == 422


async def test_custom_field_of_another_workspace_is_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    field = (
        await client.post(
            "/api/v1/custom-fields", json={"key": "level", "label": "L", "type": "text"}, headers=tenant.headers()
        )
    ).json()
    url = f"/api/v1/custom-fields/{field['id']}"
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404
    patched = await client.patch(url, json={"label": "x"}, headers={**other_tenant.headers(), "If-Match": '"1"'})
    assert patched.status_code == 404
    deleted = await client.delete(url, headers={**other_tenant.headers(), "If-Match": '"1"'})
    assert deleted.status_code == 404


async def test_api_key_of_another_workspace_cannot_be_revoked(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = (
        await client.post(
            "/api/v1/api-keys", json={"name": "k", "scopes": ["customers:read"]}, headers=tenant.headers()
        )
    ).json()
    assert (await client.delete(f"/api/v1/api-keys/{created['id']}", headers=other_tenant.headers())).status_code == 404
    assert (await client.get("/api/v1/customers", headers={"X-API-Key": created["key"]})).status_code == 200


async def _owned_by(client: httpx.AsyncClient, tenant: Tenant, owner: str) -> str:
    response = await client.post(
        "/api/v1/customers", json=customer_body(owner_id=str(tenant.users[owner].id)), headers=tenant.headers()
    )
    return str(response.json()["id"])


async def _visible_ids(client: httpx.AsyncClient, tenant: Tenant, who: str) -> set[str]:
    page = (await client.get("/api/v1/customers?limit=100", headers=tenant.headers(who))).json()
    return {c["id"] for c in page["items"]}


async def test_sales_sees_own_manager_sees_team_admin_and_support_see_all(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    mine = await _owned_by(client, tenant, "sales")
    teammate = await _owned_by(client, tenant, "sales2")
    west = await _owned_by(client, tenant, "sales_west")
    assert await _visible_ids(client, tenant, "sales") == {mine}
    assert await _visible_ids(client, tenant, "manager") == {mine, teammate}
    assert await _visible_ids(client, tenant, "admin") == {mine, teammate, west}
    assert await _visible_ids(client, tenant, "support") == {mine, teammate, west}
    assert (await client.get(f"/api/v1/customers/{teammate}", headers=tenant.headers("sales"))).status_code == 404
    assert (await client.get(f"/api/v1/customers/{west}", headers=tenant.headers("manager"))).status_code == 404


async def test_sales_cannot_change_a_customer_it_cannot_see(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    teammate = await _owned_by(client, tenant, "sales2")
    response = await client.patch(
        f"/api/v1/customers/{teammate}", json={"name": "x"}, headers={**tenant.headers("sales"), "If-Match": '"1"'}
    )
    assert response.status_code == 404
    assert await db.scalar(select(Customer.version).where(Customer.id == teammate)) == 1


async def test_sales_cannot_hand_a_customer_to_someone_else(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/customers",
        json=customer_body(owner_id=str(tenant.users["sales2"].id)),
        headers=tenant.headers("sales"),
    )
    assert response.status_code == 403


async def test_sales_cannot_delete_customers(client: httpx.AsyncClient, tenant: Tenant) -> None:
    mine = await _owned_by(client, tenant, "sales")
    response = await client.delete(f"/api/v1/customers/{mine}", headers={**tenant.headers("sales"), "If-Match": '"1"'})
    assert response.status_code == 403
