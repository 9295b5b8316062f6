"""PATCH /workspace (settings, If-Match, admins only, audited) and the workspace's lifecycle
thresholds (GET/PUT /lifecycle/rules), applied by the per-order rules and by the nightly pass."""

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.access import system_caller
from app.models import AuditEntry, Workspace
from app.services.value import customer_values
from app.workers import segments as segment_jobs
from tests.factories import Tenant, customer_body
from tests.test_workers import _job_sessions


def _if_match(tenant: Tenant, version: object, who: str = "admin") -> dict[str, str]:
    return {**tenant.headers(who), "If-Match": f'"{version}"'}


async def _workspace(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    response = await client.get("/api/v1/workspace", headers=tenant.headers("readonly"))
    assert response.status_code == 200
    assert response.headers["etag"] == f'"{response.json()["version"]}"'
    return dict(response.json())


def _order(customer_id: str, external_id: str, ordered_at: str, amount: str = "100.00") -> dict[str, object]:
    return {
        "external_id": external_id,
        "customer_id": customer_id,
        "ordered_at": ordered_at,
        "currency": "CNY",
        "total_amount": amount,
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": amount}],
    }


async def _customer(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    response = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_change_the_workspaces_settings(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    before = await _workspace(client, tenant)
    assert (before["currency"], before["timezone"], before["default_assignee_id"], before["version"]) == (
        "CNY",
        "Asia/Shanghai",
        None,
        1,
    )
    patch = {
        "name": "深圳腾达科技",
        "timezone": "Europe/Berlin",
        "customer_code_pattern": "TD-{yy}{mm}-{seq:04}",
        "currency": "EUR",
        "default_assignee_id": str(tenant.users["support"].id),
    }
    assert (await client.patch("/api/v1/workspace", json=patch, headers=tenant.headers())).status_code == 428
    assert (await client.patch("/api/v1/workspace", json=patch, headers=_if_match(tenant, 5))).status_code == 412
    for role in ("manager", "sales", "support", "readonly"):
        refused = await client.patch("/api/v1/workspace", json=patch, headers=_if_match(tenant, 1, role))
        assert refused.status_code == 403, role
    response = await client.patch("/api/v1/workspace", json=patch, headers=_if_match(tenant, 1))
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    after = await _workspace(client, tenant)
    assert {name: after[name] for name in patch} == patch
    assert after["version"] == 2 and after["updated_at"] >= before["updated_at"]
    entry = await db.scalar(
        select(AuditEntry).where(AuditEntry.entity_type == "workspace", AuditEntry.entity_id == tenant.id)
    )
    assert entry is not None and entry.changes["currency"] == {"before": "CNY", "after": "EUR"}
    assert entry.actor_id == tenant.users["admin"].id
    # New codes follow the new pattern.
    assert (await _customer(client, tenant))["code"].startswith("TD-")
    # Sending the stored values again changes nothing, the version included.
    again = await client.patch("/api/v1/workspace", json=patch, headers=_if_match(tenant, 2))
    assert again.json()["version"] == 2
    cleared = await client.patch("/api/v1/workspace", json={"default_assignee_id": None}, headers=_if_match(tenant, 2))
    assert cleared.json()["default_assignee_id"] is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"customer_code_pattern": "KH-{yyyy}"}, "customer_code_pattern"),
        ({"customer_code_pattern": "KH {seq}"}, "customer_code_pattern"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "cny"}, "currency"),
        ({"name": None}, "name"),
        ({"name": "  "}, "name"),
        ({"default_assignee_id": "not-a-uuid"}, "default_assignee_id"),
        ({"slug": "mine"}, "slug"),
    ],
)
async def test_bad_settings_are_422_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, patch: dict[str, object], field: str
) -> None:
    before = await _workspace(client, tenant)
    response = await client.patch(
        "/api/v1/workspace", json={"name": "新名字", **patch}, headers=_if_match(tenant, before["version"])
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == field
    assert await _workspace(client, tenant) == before


async def test_the_default_assignee_is_an_active_user_of_this_workspace(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    before = await _workspace(client, tenant)
    for user_id in (other_tenant.users["sales"].id, "0190f3d0-0000-7000-8000-000000000000"):
        response = await client.patch(
            "/api/v1/workspace", json={"default_assignee_id": str(user_id)}, headers=_if_match(tenant, 1)
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "default_assignee_id"]
    deactivated = await client.patch(
        f"/api/v1/users/{tenant.users['sales2'].id}", json={"is_active": False}, headers=_if_match(tenant, 1)
    )
    assert deactivated.status_code == 200, deactivated.text
    response = await client.patch(
        "/api/v1/workspace", json={"default_assignee_id": str(tenant.users["sales2"].id)}, headers=_if_match(tenant, 1)
    )
    assert response.status_code == 422
    assert await _workspace(client, tenant) == before
    assert (await db.get(Workspace, other_tenant.id)) is not None


async def test_the_currency_stays_once_there_are_orders(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    placed = await client.post(
        "/api/v1/orders", json=_order(customer["id"], "SO-1", clock.now().isoformat()), headers=tenant.headers()
    )
    assert placed.status_code == 201, placed.text
    response = await client.patch("/api/v1/workspace", json={"currency": "USD"}, headers=_if_match(tenant, 1))
    assert response.status_code == 409
    assert (await _workspace(client, tenant))["currency"] == "CNY"
    # The same currency again is no change, and other settings still change.
    same = await client.patch(
        "/api/v1/workspace", json={"currency": "CNY", "name": "腾达"}, headers=_if_match(tenant, 1)
    )
    assert same.status_code == 200 and same.json()["name"] == "腾达"


async def test_a_code_pattern_that_would_repeat_codes_is_409(client: httpx.AsyncClient, tenant: Tenant) -> None:
    first = (await _customer(client, tenant))["code"]
    assert first.endswith("-000001")
    repeats = await client.patch(
        "/api/v1/workspace", json={"customer_code_pattern": "KH-{yyyy}-0{seq:05}"}, headers=_if_match(tenant, 1)
    )
    assert repeats.status_code == 409, repeats.text
    assert first in repeats.json()["detail"]
    # The same scope with another width continues its numbering: no code repeats.
    wider = await client.patch(
        "/api/v1/workspace", json={"customer_code_pattern": "KH-{yyyy}-{seq:08}"}, headers=_if_match(tenant, 1)
    )
    assert wider.status_code == 200, wider.text
    assert (await _customer(client, tenant))["code"].endswith("-00000002")


async def test_a_workspace_reads_and_changes_only_itself(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await client.patch("/api/v1/workspace", json={"name": "甲"}, headers=_if_match(tenant, 1))
    assert (await _workspace(client, other_tenant))["name"] == other_tenant.workspace.slug
    assert (await _workspace(client, tenant))["name"] == "甲"


# Lifecycle thresholds.

RULES = {"loyal_orders": 2, "loyal_spend": "800.00", "at_risk_days": 30, "churned_days": 60}


async def _rules(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    response = await client.get("/api/v1/lifecycle/rules", headers=tenant.headers("readonly"))
    assert response.status_code == 200
    assert response.headers["etag"] == f'"{response.json()["version"]}"'
    return dict(response.json())


async def test_thresholds_default_then_the_workspaces_own(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    assert await _rules(client, tenant) == {
        "loyal_orders": 5,
        "loyal_spend": "5000.00",
        "at_risk_days": 90,
        "churned_days": 180,
        "defaults": True,
        "updated_at": None,
        "version": 1,
    }
    for role in ("manager", "sales", "support", "readonly"):
        refused = await client.put("/api/v1/lifecycle/rules", json=RULES, headers=tenant.headers(role))
        assert refused.status_code == 403, role
    response = await client.put("/api/v1/lifecycle/rules", json=RULES, headers=tenant.headers())
    assert response.status_code == 200, response.text
    assert response.json() | {"updated_at": None} == RULES | {"defaults": False, "updated_at": None, "version": 2}
    assert await _rules(client, tenant) == response.json()
    assert (await _rules(client, other_tenant))["defaults"] is True
    again = await client.put("/api/v1/lifecycle/rules", json=RULES, headers=tenant.headers())
    assert again.json()["version"] == 2
    changed = await client.put("/api/v1/lifecycle/rules", json=RULES | {"loyal_orders": 3}, headers=tenant.headers())
    assert changed.json()["version"] == 3
    entries = (
        await db.scalars(
            select(AuditEntry.changes)
            .where(AuditEntry.workspace_id == tenant.id, AuditEntry.entity_type == "lifecycle_rules")
            .order_by(AuditEntry.id)
        )
    ).all()
    assert entries[0]["at_risk_days"] == {"before": 90, "after": 30}
    assert entries[-1] == {"loyal_orders": {"before": 2, "after": 3}}
    stages = (await client.get("/api/v1/lifecycle/stages", headers=tenant.headers())).json()
    assert stages["rules"]["loyal_orders"] == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"at_risk_days": 60}, "at_risk_days"),
        ({"at_risk_days": 90}, "at_risk_days"),
        ({"loyal_spend": "0"}, "loyal_spend"),
        ({"loyal_spend": 800.5}, "loyal_spend"),
        ({"loyal_spend": "-1"}, "loyal_spend"),
        ({"loyal_orders": 0}, "loyal_orders"),
        ({"churned_days": 0}, "churned_days"),
        ({"loyal_orders": None}, "loyal_orders"),
        ({"weeks": 3}, "weeks"),
    ],
)
async def test_bad_thresholds_are_422_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, change: dict[str, object], field: str
) -> None:
    before = await _rules(client, tenant)
    response = await client.put("/api/v1/lifecycle/rules", json=RULES | change, headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == field
    assert await _rules(client, tenant) == before


async def test_a_missing_threshold_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {name: value for name, value in RULES.items() if name != "churned_days"}
    response = await client.put("/api/v1/lifecycle/rules", json=body, headers=tenant.headers())
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "churned_days"]


async def _stage(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> str:
    response = await client.get(f"/api/v1/customers/{customer_id}/stage", headers=tenant.headers())
    return str(response.json()["stage"])


async def test_the_rules_after_an_order_read_the_workspaces_thresholds(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    now = clock.now()
    customers = {}
    for who in (tenant, other_tenant):
        customer = (await _customer(client, who))["id"]
        for n in ("1", "2"):
            placed = await client.post(
                "/api/v1/orders",
                json=_order(customer, n, (now - timedelta(days=int(n))).isoformat()),
                headers=who.headers(),
            )
            assert placed.status_code == 201, placed.text
        customers[who.id] = customer
    # Before: two orders are `active` under the defaults in both workspaces.
    assert await _stage(client, tenant, customers[tenant.id]) == "active"
    await client.put("/api/v1/lifecycle/rules", json=RULES, headers=tenant.headers())
    for who in (tenant, other_tenant):
        placed = await client.post(
            "/api/v1/orders", json=_order(customers[who.id], "3", now.isoformat(), "10.00"), headers=who.headers()
        )
        assert placed.status_code == 201
    assert await _stage(client, tenant, customers[tenant.id]) == "loyal"
    assert await _stage(client, other_tenant, customers[other_tenant.id]) == "active"


async def test_the_nightly_pass_reads_the_workspaces_thresholds(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = (await _customer(client, tenant))["id"]
    forty_days_ago = (clock.now() - timedelta(days=40)).isoformat()
    await client.post("/api/v1/orders", json=_order(customer, "1", forty_days_ago), headers=tenant.headers())
    await customer_values.recompute_workspace(db, system_caller(tenant.id))
    sessions: async_sessionmaker[AsyncSession] = _job_sessions(db)
    assert await segment_jobs.apply_lifecycle_rules(sessions, tenant.id) == 0
    assert await _stage(client, tenant, customer) == "new_customer"
    await client.put("/api/v1/lifecycle/rules", json=RULES, headers=tenant.headers())
    assert await segment_jobs.apply_lifecycle_rules(sessions, tenant.id) == 1
    assert await _stage(client, tenant, customer) == "at_risk"
    await client.put(
        "/api/v1/lifecycle/rules", json=RULES | {"at_risk_days": 10, "churned_days": 35}, headers=tenant.headers()
    )
    assert await segment_jobs.apply_lifecycle_rules(sessions, tenant.id) == 1
    assert await _stage(client, tenant, customer) == "churned"
