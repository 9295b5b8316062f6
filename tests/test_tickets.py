"""Tickets: workflow, SLA clock and breaches, comments, visibility, CSAT, NPS, intake, reports."""

from datetime import timedelta
from typing import Any

import httpx
import pytest
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import OutboxEvent, Task, Ticket
from app.routers.v1 import tickets as ticket_routes
from app.services.service_desk import tickets
from tests.factories import Tenant, customer_body


async def _customer(client: httpx.AsyncClient, tenant: Tenant, who: str = "admin", **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers(who))
    return str(response.json()["id"])


async def _ticket(client: httpx.AsyncClient, tenant: Tenant, customer: str, **fields: object) -> dict[str, Any]:
    body = {"customer_id": customer, "type": "complaint", "channel": "phone", "subject": "包装破损", **fields}
    response = await client.post("/api/v1/tickets", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _move(client: httpx.AsyncClient, tenant: Tenant, ticket: object, status: str) -> httpx.Response:
    return await client.post(f"/api/v1/tickets/{ticket}/transition", json={"status": status}, headers=tenant.headers())


async def test_a_ticket_moves_through_its_workflow(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    customer = await _customer(client, tenant)
    ticket = await _ticket(client, tenant, customer)
    assert ticket["number"] == 1 and ticket["status"] == "new"
    assert ticket["first_response_due_at"] is not None and ticket["seconds_to_resolution_due"] > 0
    for status in ("in_progress", "resolved"):
        assert (await _move(client, tenant, ticket["id"], status)).status_code == 200
    illegal = await _move(client, tenant, ticket["id"], "waiting_on_customer")
    assert illegal.status_code == 409
    assert illegal.json()["allowed"] == ["closed", "in_progress"]
    assert (await _move(client, tenant, ticket["id"], "in_progress")).status_code == 200  # reopened
    assert (await _move(client, tenant, ticket["id"], "resolved")).status_code == 200
    assert (await _move(client, tenant, ticket["id"], "closed")).status_code == 200
    reply = await client.post(
        f"/api/v1/tickets/{ticket['id']}/comments", json={"body": "x", "public": True}, headers=tenant.headers()
    )
    assert reply.status_code == 409
    history = (await client.get(f"/api/v1/tickets/{ticket['id']}/history", headers=tenant.headers())).json()
    assert [e["action"] for e in history["events"]].count("reopened") == 1
    types = (await db.scalars(select(OutboxEvent.type).where(OutboxEvent.workspace_id == tenant.id))).all()
    assert {"ticket.created", "ticket.resolved", "ticket.reopened", "ticket.closed"} <= set(types)


async def test_reopening_is_refused_after_the_window(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    ticket = await _ticket(client, tenant, await _customer(client, tenant))
    await _move(client, tenant, ticket["id"], "resolved")
    await db.execute(
        update(Ticket).where(Ticket.id == ticket["id"]).values(resolved_at=clock.now() - timedelta(days=8))
    )
    response = await _move(client, tenant, ticket["id"], "in_progress")
    assert response.status_code == 409 and response.json()["allowed"] == ["closed"]


async def test_first_public_reply_is_the_first_response(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ticket = await _ticket(client, tenant, await _customer(client, tenant))
    url = f"/api/v1/tickets/{ticket['id']}"
    await client.post(f"{url}/comments", json={"body": "内部备注", "public": False}, headers=tenant.headers())
    assert (await client.get(url, headers=tenant.headers())).json()["first_responded_at"] is None
    await client.post(f"{url}/comments", json={"body": "您好，我们已收到", "public": True}, headers=tenant.headers())
    seen = (await client.get(url, headers=tenant.headers())).json()
    assert seen["first_responded_at"] is not None and seen["seconds_to_first_response_due"] is None


async def test_waiting_on_the_customer_pauses_the_clock(client: httpx.AsyncClient, tenant: Tenant) -> None:
    always_open = {str(d): [["00:00", "24:00"]] for d in range(7)}
    sla = {
        "policies": [{"priority": "normal", "first_response_minutes": 60, "resolution_minutes": 600}],
        "timezone": "UTC",
        "weekly": always_open,
    }
    assert (await client.put("/api/v1/sla", json=sla, headers=tenant.headers())).status_code == 200
    ticket = await _ticket(client, tenant, await _customer(client, tenant))
    paused = (await _move(client, tenant, ticket["id"], "waiting_on_customer")).json()
    assert paused["sla_paused"] is True and paused["resolution_due_at"] is None
    resumed = (await _move(client, tenant, ticket["id"], "in_progress")).json()
    assert resumed["sla_paused"] is False
    assert 590 * 60 <= resumed["seconds_to_resolution_due"] <= 600 * 60


async def test_sla_policy_by_priority_and_tier(client: httpx.AsyncClient, tenant: Tenant) -> None:
    always_open = {str(d): [["00:00", "24:00"]] for d in range(7)}
    sla: dict[str, Any] = {
        "timezone": "UTC",
        "weekly": always_open,
        "policies": [
            {"priority": "urgent", "tier": "A", "first_response_minutes": 60, "resolution_minutes": 480},
            {"priority": "urgent", "first_response_minutes": 120, "resolution_minutes": 960},
        ],
    }
    await client.put("/api/v1/sla", json=sla, headers=tenant.headers())
    vip = await _customer(client, tenant)
    order = {
        "external_id": "1",
        "customer_id": vip,
        "ordered_at": clock.now().isoformat(),
        "currency": "CNY",
        "total_amount": "20000.00",
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": "20000.00"}],
    }
    await client.post("/api/v1/orders", json=order, headers=tenant.headers())
    vip_ticket = await _ticket(client, tenant, vip, priority="urgent")
    other_ticket = await _ticket(client, tenant, await _customer(client, tenant), priority="urgent")
    assert 59 * 60 <= vip_ticket["seconds_to_first_response_due"] <= 60 * 60
    assert 119 * 60 <= other_ticket["seconds_to_first_response_due"] <= 120 * 60
    bad = {**sla, "timezone": "Mars/Olympus"}
    assert (await client.put("/api/v1/sla", json=bad, headers=tenant.headers())).status_code == 422
    # A string field without a text type of its own still cannot carry NUL into the database.
    nul_tier = {**sla, "policies": [{**sla["policies"][0], "tier": "A\x00"}]}
    assert (await client.put("/api/v1/sla", json=nul_tier, headers=tenant.headers())).status_code == 422
    assert (await client.put("/api/v1/sla", json=sla, headers=tenant.headers("sales"))).status_code == 403


async def test_breaches_are_flagged_once_with_events(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    ticket = await _ticket(client, tenant, await _customer(client, tenant))
    past = clock.now() - timedelta(minutes=1)
    await db.execute(
        update(Ticket).where(Ticket.id == ticket["id"]).values(first_response_due_at=past, resolution_due_at=past)
    )
    assert await tickets.mark_breaches(db) == 2
    assert await tickets.mark_breaches(db) == 0
    seen = (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=tenant.headers())).json()
    assert seen["first_response_breached"] and seen["resolution_breached"]
    events = (
        await db.scalars(
            select(OutboxEvent.data).where(
                OutboxEvent.type == "ticket.sla_breached", OutboxEvent.workspace_id == tenant.id
            )
        )
    ).all()
    assert sorted(e["deadline"] for e in events) == ["first_response", "resolution"]


async def test_at_risk_list(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    soon = await _ticket(client, tenant, await _customer(client, tenant))
    await _ticket(client, tenant, await _customer(client, tenant))
    await db.execute(
        update(Ticket).where(Ticket.id == soon["id"]).values(first_response_due_at=clock.now() + timedelta(minutes=20))
    )
    at_risk = (
        await client.get("/api/v1/tickets", params={"at_risk_within_minutes": 30}, headers=tenant.headers())
    ).json()
    assert [t["id"] for t in at_risk["items"]] == [soon["id"]]


async def test_tickets_follow_customer_visibility(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await _customer(client, tenant, owner_id=str(tenant.users["sales2"].id))
    ticket = await _ticket(client, tenant, theirs)
    assert (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=tenant.headers("sales"))).status_code == 404
    assert (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=tenant.headers("support"))).status_code == 200
    assert (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=other_tenant.headers())).status_code == 404


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "rant"},
        {"priority": "whenever"},
        {"channel": "pigeon"},
        {"category_id": "01900000-0000-7000-8000-000000000001"},
    ],
)
async def test_bad_tickets_are_422(client: httpx.AsyncClient, tenant: Tenant, fields: dict[str, object]) -> None:
    body = {
        "customer_id": await _customer(client, tenant),
        "type": "inquiry",
        "channel": "email",
        "subject": "x",
        **fields,
    }
    assert (await client.post("/api/v1/tickets", json=body, headers=tenant.headers())).status_code == 422


async def test_csat_is_single_use_and_expires(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    ticket = await _ticket(client, tenant, await _customer(client, tenant))
    assert (
        await client.post(f"/api/v1/tickets/{ticket['id']}/csat-request", headers=tenant.headers())
    ).status_code == 409
    await _move(client, tenant, ticket["id"], "resolved")
    token = (await client.post(f"/api/v1/tickets/{ticket['id']}/csat-request", headers=tenant.headers())).json()[
        "token"
    ]
    assert (await client.post(f"/api/v1/csat/{token}", json={"score": 6})).status_code == 422
    answered = await client.post(f"/api/v1/csat/{token}", json={"score": 4, "comment": "处理及时"})
    assert answered.status_code == 200 and answered.json()["score"] == 4
    assert (await client.post(f"/api/v1/csat/{token}", json={"score": 5})).status_code == 409
    assert (await client.post("/api/v1/csat/not-a-token", json={"score": 5})).status_code == 404
    second = (await client.post(f"/api/v1/tickets/{ticket['id']}/csat-request", headers=tenant.headers())).json()
    from app.models import CsatRequest

    await db.execute(update(CsatRequest).values(expires_at=clock.now() - timedelta(seconds=1)))
    assert (await client.post(f"/api/v1/csat/{second['token']}", json={"score": 5})).status_code == 410
    customers = (
        await client.post(
            "/api/v1/customers/search",
            json={"filter": {"field": "activity.csat_average", "op": "eq", "value": 4}},
            headers=tenant.headers(),
        )
    ).json()
    assert [c["id"] for c in customers["items"]] == [ticket["customer_id"]]


async def test_nps_survey(client: httpx.AsyncClient, tenant: Tenant) -> None:
    survey = (
        await client.post(
            "/api/v1/surveys",
            json={"name": "Q4", "question": "推荐意愿？", "opens_at": (clock.now() - timedelta(days=1)).isoformat()},
            headers=tenant.headers(),
        )
    ).json()
    url = f"/api/v1/surveys/{survey['id']}"
    for score in (10, 9, 7, 3):
        customer = await _customer(client, tenant)
        assert (
            await client.post(
                f"{url}/responses", json={"customer_id": customer, "score": score}, headers=tenant.headers()
            )
        ).status_code == 201
    assert (
        await client.post(f"{url}/responses", json={"customer_id": customer, "score": 5}, headers=tenant.headers())
    ).status_code == 409
    assert (
        await client.post(f"{url}/responses", json={"customer_id": customer, "score": 11}, headers=tenant.headers())
    ).status_code == 422
    results = (await client.get(f"{url}/results", headers=tenant.headers())).json()
    assert results == {"responses": 4, "promoters": 2, "passives": 1, "detractors": 1, "nps": 25.0}


async def test_public_intake_opens_tickets_for_new_unverified_leads(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    form = (await client.post("/api/v1/intake-forms", json={"name": "官网表单"}, headers=tenant.headers())).json()
    lead = await client.post(
        f"/api/v1/intake/{form['token']}", json={"name": "新客户", "email": "new@example.com", "subject": "报价"}
    )
    # The submitter gets a receipt, not a link to the workspace's ticket (docs/decisions.md).
    assert lead.status_code == 200 and "location" not in lead.headers
    listed = (await client.get("/api/v1/tickets", headers=tenant.headers())).json()["items"]
    assert [t["channel"] for t in listed] == ["web_form"]
    made = (await client.get(f"/api/v1/customers/{listed[0]['customer_id']}", headers=tenant.headers())).json()
    assert made["emails"] == ["new@example.com"] and set(made["tags"]) == {"lead", "unverified"}
    assert (
        await client.post("/api/v1/intake/gxf_wrong", json={"name": "x", "email": "a@b.cn", "subject": "s"})
    ).status_code == 404
    assert (await client.post(f"/api/v1/intake/{form['token']}", json={"name": "x", "subject": "s"})).status_code == 422
    monkeypatch.setattr(ticket_routes, "INTAKE_PER_MINUTE", RateLimitItemPerMinute(1))
    monkeypatch.setattr(ticket_routes, "_intake_limits", FixedWindowRateLimiter(MemoryStorage()))
    await client.post(f"/api/v1/intake/{form['token']}", json={"name": "x", "email": "c@d.cn", "subject": "s"})
    limited = await client.post(
        f"/api/v1/intake/{form['token']}", json={"name": "x", "email": "e@f.cn", "subject": "s"}
    )
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"


async def test_intake_with_a_customers_contact_neither_touches_nor_reveals_that_customer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    form = (await client.post("/api/v1/intake-forms", json={"name": "官网表单"}, headers=tenant.headers())).json()
    known = await _customer(client, tenant, phones=["13800138000"], emails=["known@example.com"])
    before = (await client.get(f"/api/v1/customers/{known}", headers=tenant.headers())).json()
    timeline_before = (await client.get(f"/api/v1/customers/{known}/timeline", headers=tenant.headers())).json()
    stranger = {"name": "冒名", "phone": "138 0013 8000", "email": "Known@Example.com", "subject": "改地址"}
    fresh = {"name": "冒名", "phone": "139 0013 9000", "email": "other@example.com", "subject": "改地址"}
    answers = [await client.post(f"/api/v1/intake/{form['token']}", json=body) for body in (stranger, fresh)]
    assert [a.status_code for a in answers] == [200, 200]
    # The same shape whether or not the contact was known: nothing tells the submitter who holds it.
    assert answers[0].json().keys() == answers[1].json().keys() == {"ticket_number", "status"}
    assert known not in answers[0].text
    assert (await client.get(f"/api/v1/customers/{known}", headers=tenant.headers())).json() == before
    assert (await client.get(f"/api/v1/customers/{known}/timeline", headers=tenant.headers())).json() == timeline_before
    tickets = (await client.get("/api/v1/tickets", headers=tenant.headers())).json()["items"]
    assert known not in {t["customer_id"] for t in tickets} and len(tickets) == 2
    lead_id = next(
        t["customer_id"]
        for t in tickets
        if t["subject"] == "改地址" and t["number"] == answers[0].json()["ticket_number"]
    )
    lead = (await client.get(f"/api/v1/customers/{lead_id}", headers=tenant.headers())).json()
    assert lead["emails"] == [] and lead["phones"] == [] and "unverified" in lead["tags"]
    assert known in lead["notes"] and "138" not in lead["notes"]


async def test_ticket_resolved_plan_calls_back(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    plan = await client.post(
        "/api/v1/follow-up-plans",
        json={"name": "回访", "rule": "days_after_ticket_resolved", "days": 2, "task_title": "满意度回访"},
        headers=tenant.headers(),
    )
    assert plan.status_code == 201
    ticket = await _ticket(client, tenant, await _customer(client, tenant))
    await _move(client, tenant, ticket["id"], "resolved")
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 0}
    await db.execute(
        update(Ticket).where(Ticket.id == ticket["id"]).values(resolved_at=clock.now() - timedelta(days=3))
    )
    from app.models import FollowUpPlan

    await db.execute(update(FollowUpPlan).values(created_at=clock.now() - timedelta(days=10)))
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 1}
    assert (await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())).json() == {"created": 0}
    task = (await db.scalars(select(Task).where(Task.workspace_id == tenant.id))).one()
    assert task.title == "满意度回访"


async def test_service_report_and_timeline(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    first = await _ticket(client, tenant, customer, type="complaint")
    await _ticket(client, tenant, customer, type="inquiry", channel="email")
    await client.post(
        f"/api/v1/tickets/{first['id']}/comments", json={"body": "收到", "public": True}, headers=tenant.headers()
    )
    await _move(client, tenant, first["id"], "resolved")
    report = (await client.get("/api/v1/reports/service", headers=tenant.headers())).json()
    assert sum(v["tickets"] for v in report["volume"]) == 2
    assert report["median_first_response_minutes"] is not None
    assert report["backlog_by_age"]["under_1_day"] == 1
    assert report["sla_attainment_pct"] == 100.0
    await client.post(f"/api/v1/tickets/{first['id']}/csat-request", headers=tenant.headers())
    token = (await client.post(f"/api/v1/tickets/{first['id']}/csat-request", headers=tenant.headers())).json()["token"]
    await client.post(f"/api/v1/csat/{token}", json={"score": 5})
    listed = await client.post("/api/v1/segments", json={"name": "回访", "kind": "static"}, headers=tenant.headers())
    unrelated = await client.post("/api/v1/segments", json={"name": "其他", "kind": "static"}, headers=tenant.headers())
    for segment, member in ((listed, customer), (unrelated, await _customer(client, tenant))):
        await client.post(
            f"/api/v1/segments/{segment.json()['id']}/members", json={"add": [member]}, headers=tenant.headers()
        )
    report = (await client.get("/api/v1/reports/service", headers=tenant.headers())).json()
    assert report["by_tier"] == [{"tier": "none", "csat_average": 5.0, "nps": None}]
    # Only segments whose members answered appear.
    assert report["by_segment"] == [
        {"segment_id": listed.json()["id"], "name": "回访", "csat_average": 5.0, "nps": None}
    ]
    timeline = (
        await client.get(f"/api/v1/customers/{customer}/timeline", params={"type": "ticket"}, headers=tenant.headers())
    ).json()
    assert [i["data"]["number"] for i in timeline["items"]] == [2, 1]
    open_filter = {"field": "activity.open_tickets", "op": "gte", "value": 1}
    found = (
        await client.post("/api/v1/customers/search", json={"filter": open_filter}, headers=tenant.headers())
    ).json()
    assert [c["id"] for c in found["items"]] == [customer]
