"""Interactions, tasks, follow-up plans, care reminders, the timeline and the contact summary."""

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import system_caller
from app.models import Task
from app.services.engagement import follow_ups
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant, who: str = "admin", **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers(who))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _contact(customer_id: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "customer_id": customer_id,
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": clock.now().isoformat(),
        "duration_seconds": 120,
        "subject": "回访",
        "outcome": "reached",
    }
    body.update(overrides)
    return body


async def test_log_read_change_and_delete_an_interaction(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    created = await client.post(
        "/api/v1/interactions",
        json=_contact(customer, attachments=[{"url": "https://files.example.com/q.pdf", "name": "报价单"}]),
        headers=tenant.headers("sales"),
    )
    assert created.status_code == 404  # sales does not own this customer
    created = await client.post("/api/v1/interactions", json=_contact(customer), headers=tenant.headers())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["user_id"] == str(tenant.users["admin"].id)
    url = f"/api/v1/interactions/{body['id']}"
    changed = await client.patch(url, json={"outcome": "interested"}, headers={**tenant.headers(), "If-Match": '"1"'})
    assert changed.json()["outcome"] == "interested" and changed.json()["version"] == 2
    assert (await client.delete(url, headers={**tenant.headers(), "If-Match": '"2"'})).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"channel": "carrier_pigeon"}, "channel"),
        ({"direction": "sideways"}, "direction"),
        ({"outcome": "abducted"}, "outcome"),
        ({"duration_seconds": -5}, "duration_seconds"),
        ({"attachments": [{"url": "not a url", "name": "x"}]}, "attachments"),
        ({"user_id": str(uuid.uuid4())}, "user_id"),
        ({"content": "a\x00b"}, "content"),
    ],
)
async def test_bad_interactions_are_422(
    client: httpx.AsyncClient, tenant: Tenant, overrides: dict[str, object], field: str
) -> None:
    customer = await _customer(client, tenant)
    response = await client.post("/api/v1/interactions", json=_contact(customer, **overrides), headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert any(field in e["loc"] for e in response.json()["errors"])


async def test_partner_import_is_idempotent_by_external_id(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    items = [
        _contact(customer, source="callcenter", external_id="CALL-1"),
        _contact(customer, source="callcenter", external_id="CALL-2", outcome="no_answer"),
        _contact(customer, source="callcenter"),
        _contact(str(uuid.uuid4()), source="callcenter", external_id="CALL-3"),
    ]
    first = await client.post("/api/v1/interactions/import", json={"items": items}, headers=tenant.headers())
    assert [r["status"] for r in first.json()["results"]] == [201, 201, 422, 404]
    again = await client.post("/api/v1/interactions/import", json={"items": items[:2]}, headers=tenant.headers())
    assert [r["status"] for r in again.json()["results"]] == [200, 200]
    listed = (
        await client.get("/api/v1/interactions", params={"customer_id": customer}, headers=tenant.headers())
    ).json()
    assert len(listed["items"]) == 2
    by_outcome = (
        await client.get(
            "/api/v1/interactions", params={"customer_id": customer, "outcome": "no_answer"}, headers=tenant.headers()
        )
    ).json()
    assert [i["external_id"] for i in by_outcome["items"]] == ["CALL-2"]


async def test_tasks_views_completion_and_cancel(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    now = clock.now()
    late = (
        await client.post(
            "/api/v1/tasks",
            json={"customer_id": customer, "title": "回电", "due_at": (now - timedelta(hours=3)).isoformat()},
            headers=tenant.headers(),
        )
    ).json()
    later = (
        await client.post(
            "/api/v1/tasks",
            json={
                "customer_id": customer,
                "title": "拜访",
                "kind": "visit",
                "due_at": (now + timedelta(days=3)).isoformat(),
            },
            headers=tenant.headers(),
        )
    ).json()
    assert late["overdue"] is True and later["overdue"] is False
    overdue = (await client.get("/api/v1/tasks", params={"view": "overdue"}, headers=tenant.headers())).json()
    assert [t["id"] for t in overdue["items"]] == [late["id"]]
    upcoming = (await client.get("/api/v1/tasks", params={"view": "upcoming"}, headers=tenant.headers())).json()
    assert [t["id"] for t in upcoming["items"]] == [later["id"]]
    contact = (await client.post("/api/v1/interactions", json=_contact(customer), headers=tenant.headers())).json()
    done = await client.post(
        f"/api/v1/tasks/{late['id']}/complete", json={"interaction_id": contact["id"]}, headers=tenant.headers()
    )
    assert done.json()["status"] == "done" and done.json()["interaction_id"] == contact["id"]
    assert (
        await client.post(f"/api/v1/tasks/{late['id']}/complete", json={}, headers=tenant.headers())
    ).status_code == 409
    assert (await client.post(f"/api/v1/tasks/{later['id']}/cancel", headers=tenant.headers())).json()[
        "status"
    ] == "cancelled"
    mine = (
        await client.get("/api/v1/tasks", params={"assignee": "me", "view": "all"}, headers=tenant.headers("sales"))
    ).json()
    assert mine["items"] == []


async def test_a_task_for_another_workspaces_customer_is_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    foreign = await _customer(client, other_tenant)
    response = await client.post(
        "/api/v1/tasks",
        json={"customer_id": foreign, "title": "x", "due_at": clock.now().isoformat()},
        headers=tenant.headers(),
    )
    assert response.status_code == 404
    assert (await client.get(f"/api/v1/customers/{foreign}/timeline", headers=tenant.headers())).status_code == 404
    assert (await client.get(f"/api/v1/customers/{foreign}/summary", headers=tenant.headers())).status_code == 404


@pytest.mark.parametrize(
    "plan",
    [
        {"name": "x", "rule": "every_n_days", "days": 0, "task_title": "t"},
        {
            "name": "x",
            "rule": "every_n_days",
            "days": 30,
            "task_title": "t",
            "audience": {"segment_id": str(uuid.uuid4())},
        },
        {"name": "x", "rule": "every_n_days", "days": 30, "task_title": "t", "audience": {"stage": "sleepy"}},
        {"name": "x", "rule": "every_fortnight", "days": 14, "task_title": "t"},
    ],
)
async def test_invalid_plans_are_422(client: httpx.AsyncClient, tenant: Tenant, plan: dict[str, object]) -> None:
    assert (await client.post("/api/v1/follow-up-plans", json=plan, headers=tenant.headers())).status_code == 422


async def test_plans_create_tasks_once_and_pause(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    owned = await _customer(client, tenant, owner_id=str(tenant.users["sales"].id))
    await _customer(client, tenant)
    plan = (
        await client.post(
            "/api/v1/follow-up-plans",
            json={"name": "月度回访", "rule": "every_n_days", "days": 30, "task_title": "回访"},
            headers=tenant.headers(),
        )
    ).json()
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 2}
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 0}
    changed = await client.patch(
        f"/api/v1/follow-up-plans/{plan['id']}", json={"days": 7}, headers={**tenant.headers(), "If-Match": '"1"'}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    audited = await client.get(f"/api/v1/audit?entity_id={plan['id']}&action=updated", headers=tenant.headers())
    assert [e["changes"] for e in audited.json()["items"]] == [{"days": {"before": 30, "after": 7}}]
    same = await client.patch(
        f"/api/v1/follow-up-plans/{plan['id']}", json={"days": 7}, headers={**tenant.headers(), "If-Match": '"2"'}
    )
    assert same.status_code == 200 and same.headers["ETag"] == '"2"'
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 0}
    sales_tasks = (await client.get("/api/v1/tasks", headers=tenant.headers("sales"))).json()["items"]
    assert [t["customer_id"] for t in sales_tasks] == [owned] and sales_tasks[0]["origin"] == "plan"
    await client.post(f"/api/v1/tasks/{sales_tasks[0]['id']}/complete", json={}, headers=tenant.headers("sales"))
    # Done, but inside the interval: nothing new yet.
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 0}
    await client.patch(
        f"/api/v1/follow-up-plans/{plan['id']}", json={"active": False}, headers={**tenant.headers(), "If-Match": '"2"'}
    )
    assert await follow_ups.run_plans(db, system_caller(tenant.id)) == 0


async def test_plan_audience_by_tier(client: httpx.AsyncClient, tenant: Tenant) -> None:
    buyer = await _customer(client, tenant)
    await _customer(client, tenant)
    order = {
        "external_id": "1",
        "customer_id": buyer,
        "ordered_at": clock.now().isoformat(),
        "currency": "CNY",
        "total_amount": "20000.00",
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": "20000.00"}],
    }
    await client.post("/api/v1/orders", json=order, headers=tenant.headers())
    await client.post(
        "/api/v1/follow-up-plans",
        json={"name": "A", "rule": "every_n_days", "days": 30, "task_title": "VIP 回访", "audience": {"tier": "A"}},
        headers=tenant.headers(),
    )
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 1}
    tasks = (await client.get("/api/v1/tasks", params={"assignee": "anyone"}, headers=tenant.headers())).json()["items"]
    assert [t["customer_id"] for t in tasks] == [buyer]


async def test_care_reminders_honour_lead_days_consent_and_run_once(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    soon = (clock.now() + timedelta(days=2)).date()
    later = (clock.now() + timedelta(days=40)).date()
    near = await _customer(client, tenant, birthday=soon.replace(year=1990).isoformat())
    await _customer(client, tenant, birthday=later.replace(year=1985).isoformat())
    await _customer(
        client, tenant, birthday=soon.replace(year=1991).isoformat(), consent={"email": False, "sms": False}
    )
    rule = await client.post(
        "/api/v1/care-rules",
        json={"name": "生日", "kind": "birthday", "lead_days": 3, "task_title": "生日祝福"},
        headers=tenant.headers(),
    )
    assert rule.status_code == 201
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 1}
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 0}
    care = (await db.scalars(select(Task).where(Task.workspace_id == tenant.id, Task.origin == "care"))).all()
    assert [str(t.customer_id) for t in care] == [near]
    bad = await client.post(
        "/api/v1/care-rules",
        json={"name": "x", "kind": "custom_date", "field_key": "nope", "task_title": "t"},
        headers=tenant.headers(),
    )
    assert bad.status_code == 422


async def test_timeline_merges_every_source_in_one_stream(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    base = clock.now() - timedelta(days=3)
    await client.post(
        "/api/v1/interactions", json=_contact(customer, occurred_at=base.isoformat()), headers=tenant.headers()
    )
    order = {
        "external_id": "T1",
        "customer_id": customer,
        "ordered_at": (base + timedelta(days=1)).isoformat(),
        "currency": "CNY",
        "total_amount": "10.00",
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": "10.00"}],
    }
    await client.post("/api/v1/orders", json=order, headers=tenant.headers())
    await client.patch(
        f"/api/v1/customers/{customer}", json={"title": "CEO"}, headers={**tenant.headers(), "If-Match": '"1"'}
    )
    items = (
        await client.get(f"/api/v1/customers/{customer}/timeline", params={"limit": 100}, headers=tenant.headers())
    ).json()["items"]
    types = [i["type"] for i in items]
    assert {"interaction", "order", "change", "stage_change", "tier_change"} <= set(types)
    moments = [i["occurred_at"] for i in items]
    assert moments == sorted(moments, reverse=True)
    only = (
        await client.get(f"/api/v1/customers/{customer}/timeline", params={"type": "order"}, headers=tenant.headers())
    ).json()
    assert [i["type"] for i in only["items"]] == ["order"]
    first = (
        await client.get(f"/api/v1/customers/{customer}/timeline", params={"limit": 2}, headers=tenant.headers())
    ).json()
    rest = (
        await client.get(
            f"/api/v1/customers/{customer}/timeline",
            params={"limit": 100, "cursor": first["next_cursor"]},
            headers=tenant.headers(),
        )
    ).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in items]
    bad = await client.get(
        f"/api/v1/customers/{customer}/timeline", params={"type": "gossip"}, headers=tenant.headers()
    )
    assert bad.status_code == 422


async def test_summary_derives_preferences_from_answered_contacts(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    now = clock.now()
    # 10:00 and 11:00 UTC are 18:00 and 19:00 in the workspace's Asia/Shanghai.
    for days, hour, channel, outcome in [
        (1, 10, "wechat", "reached"),
        (2, 10, "wechat", "reached"),
        (3, 11, "phone", "reached"),
        (4, 2, "phone", "no_answer"),
        (5, 2, "phone", "no_answer"),
        (100, 10, "email", "reached"),
    ]:
        at = (now - timedelta(days=days)).replace(hour=hour, minute=0)
        await client.post(
            "/api/v1/interactions",
            json=_contact(customer, channel=channel, outcome=outcome, occurred_at=at.isoformat()),
            headers=tenant.headers(),
        )
    await client.post(
        "/api/v1/tasks",
        json={"customer_id": customer, "title": "回访", "due_at": (now + timedelta(days=2)).isoformat()},
        headers=tenant.headers(),
    )
    summary = (await client.get(f"/api/v1/customers/{customer}/summary", headers=tenant.headers())).json()
    assert summary["last_contact"]["channel"] == "wechat"
    assert summary["days_since_last_contact"] in (0, 1)
    assert summary["open_tasks"] == 1 and summary["next_follow_up"]["title"] == "回访"
    assert summary["interactions_by_channel"]["phone"] == {"days_30": 3, "days_90": 3, "days_365": 3}
    assert summary["interactions_by_channel"]["email"]["days_30"] == 0
    assert summary["preferred_channel"] == "wechat"
    assert summary["preferred_contact_hours"][0] == 18


async def test_plans_need_the_plans_scope(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    body = {"name": "x", "rule": "every_n_days", "days": 30, "task_title": "t"}
    assert (await client.post("/api/v1/follow-up-plans", json=body, headers=tenant.headers("sales"))).status_code == 403
    assert await db.scalar(select(func.count()).select_from(Task)) == 0


async def test_tasks_assignee_must_be_me_anyone_or_a_uuid(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for assignee in ("0" * 36, "-" * 36, "someone"):
        response = await client.get(f"/api/v1/tasks?assignee={assignee}", headers=tenant.headers())
        assert response.status_code == 422, (assignee, response.text)
    assert (await client.get(f"/api/v1/tasks?assignee={uuid.uuid4()}", headers=tenant.headers())).status_code == 200
