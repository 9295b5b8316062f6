"""Races a client can start: every If-Match write has one winner, every unique key one creator."""

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI

from app.core import clock
from tests.factories import Tenant, customer_body

Maker = Callable[[httpx.AsyncClient, Tenant], Awaitable[str]]


async def _created(client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, Any]) -> str:
    response = await client.post(f"/api/v1{path}", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _customer(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(client, tenant, "/customers", customer_body())


async def _interaction(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {
        "customer_id": await _customer(client, tenant),
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": clock.now().isoformat(),
        "subject": "回访",
    }
    return await _created(client, tenant, "/interactions", body)


async def _task(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"customer_id": await _customer(client, tenant), "title": "回电", "due_at": clock.now().isoformat()}
    return await _created(client, tenant, "/tasks", body)


async def _ticket(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"customer_id": await _customer(client, tenant), "type": "complaint", "channel": "phone", "subject": "破损"}
    return await _created(client, tenant, "/tickets", body)


async def _order(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {
        "external_id": f"SO-{uuid.uuid4().hex[:8]}",
        "customer_id": await _customer(client, tenant),
        "ordered_at": clock.now().isoformat(),
        "currency": "CNY",
        "total_amount": "20.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20.00"}],
    }
    return await _created(client, tenant, "/orders", body)


async def _custom_field(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"key": f"k_{uuid.uuid4().hex[:8]}", "label": "Level", "type": "text"}
    return await _created(client, tenant, "/custom-fields", body)


async def _plan(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"name": "回访", "rule": "days_after_ticket_resolved", "days": 2, "task_title": "回访"}
    return await _created(client, tenant, "/follow-up-plans", body)


async def _care_rule(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(client, tenant, "/care-rules", {"name": "生日", "kind": "birthday", "task_title": "祝福"})


async def _automation_rule(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {
        "name": "生日",
        "trigger": {"kind": "date", "date": "birthday"},
        "actions": [{"type": "add_tag", "tag": "x"}],
    }
    return await _created(client, tenant, "/automation-rules", body)


async def _workspace(client: httpx.AsyncClient, tenant: Tenant) -> str:
    """The caller's own: nothing to make, and its path names no id."""
    return str(tenant.id)


async def _segment(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(client, tenant, "/segments", {"name": f"s-{uuid.uuid4().hex[:8]}", "kind": "static"})


async def _endpoint(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(
        client, tenant, "/webhook-endpoints", {"url": "https://hooks.example.com/in", "event_types": ["customer.*"]}
    )


async def _user(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"email": f"u-{uuid.uuid4().hex[:8]}@x.test", "name": "n", "password": "long-enough-pass", "role": "sales"}
    return await _created(client, tenant, "/users", body)


async def _team(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(client, tenant, "/teams", {"name": f"team-{uuid.uuid4().hex[:8]}"})


async def _survey(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(
        client, tenant, "/surveys", {"name": "NPS", "question": "?", "opens_at": clock.now().isoformat()}
    )


async def _intake_form(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(client, tenant, "/intake-forms", {"name": "官网表单"})


async def _message_template(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"name": f"m-{uuid.uuid4().hex[:8]}", "channel": "wecom", "body": "{{ customer.name }}"}
    return await _created(client, tenant, "/message-templates", body)


async def _channel(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"kind": "wecom_robot", "name": "群机器人", "settings": {"endpoint": "http://127.0.0.1:9/"}}
    return await _created(client, tenant, "/channels", {**body, "secrets": {"key": "robot-key"}})


async def _category(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _created(client, tenant, "/ticket-categories", {"name": f"c-{uuid.uuid4().hex[:8]}"})


async def _reward(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {"name": "茶具", "points_cost": 100, "kind": "gift", "stock": 10}
    return await _created(client, tenant, "/rewards", body)


async def _pipeline(client: httpx.AsyncClient, tenant: Tenant) -> str:
    stages = [
        {"code": "qualify", "name": "资格确认", "probability": 10},
        {"code": "proposal", "name": "方案报价", "probability": 40},
        {"code": "won", "name": "赢单", "probability": 100, "kind": "won"},
    ]
    return await _created(client, tenant, "/pipelines", {"name": f"p-{uuid.uuid4().hex[:8]}", "stages": stages})


async def _opportunity(client: httpx.AsyncClient, tenant: Tenant) -> str:
    body = {
        "customer_id": await _customer(client, tenant),
        "pipeline_id": await _pipeline(client, tenant),
        "title": "年度茶礼团购",
        "amount": "1000.00",
        "currency": "CNY",
    }
    return await _created(client, tenant, "/opportunities", body)


async def _saved_document(client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, Any]) -> str:
    """A versioned settings document saved once (version 1), as the race's If-Match names."""
    response = await client.put(f"/api/v1{path}", json=body, headers={**tenant.headers(), "If-Match": "*"})
    assert response.status_code == 200 and response.json()["version"] == 1, response.text
    return str(tenant.id)


async def _loyalty_program(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _saved_document(client, tenant, "/loyalty/program", {"earn_rate": "1"})


async def _loyalty_levels(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _saved_document(client, tenant, "/loyalty/levels", {"levels": []})


async def _lead_scoring(client: httpx.AsyncClient, tenant: Tenant) -> str:
    return await _saved_document(client, tenant, "/lead-scoring", {"rules": [], "half_life_days": 1})


# Per path of the OpenAPI document: how to make the resource and a PATCH (or POST) body that changes
# it. Each of the 20 requests sends a different value, none the stored one, so that none is a no-op
# that keeps the ETag (and answers 200 beside the winner).
MAKERS: dict[str, tuple[Maker, Callable[[int], dict[str, Any]]]] = {
    "/api/v1/customers/{customer_id}": (_customer, lambda i: {"title": f"t{i}"}),
    "/api/v1/interactions/{interaction_id}": (_interaction, lambda i: {"subject": f"s{i}"}),
    "/api/v1/tasks/{task_id}": (_task, lambda i: {"title": f"t{i}"}),
    "/api/v1/tickets/{ticket_id}": (_ticket, lambda i: {"subject": f"s{i}"}),
    "/api/v1/custom-fields/{field_id}": (_custom_field, lambda i: {"label": f"l{i}"}),
    "/api/v1/follow-up-plans/{plan_id}": (_plan, lambda i: {"name": f"n{i}"}),
    "/api/v1/care-rules/{rule_id}": (_care_rule, lambda i: {"name": f"n{i}"}),
    "/api/v1/automation-rules/{rule_id}": (_automation_rule, lambda i: {"name": f"n{i}"}),
    "/api/v1/workspace": (_workspace, lambda i: {"name": f"w{i}"}),
    "/api/v1/segments/{segment_id}": (_segment, lambda i: {"name": f"n{i}"}),
    "/api/v1/webhook-endpoints/{endpoint_id}": (_endpoint, lambda i: {"description": f"d{i}"}),
    "/api/v1/users/{user_id}": (_user, lambda i: {"name": f"n{i}"}),
    "/api/v1/teams/{team_id}": (_team, lambda i: {"name": f"n{i}"}),
    "/api/v1/orders/{order_id}/fulfilment": (_order, lambda i: {"status": "paid", "tracking_reference": f"SF{i}"}),
    "/api/v1/surveys/{survey_id}": (_survey, lambda i: {"name": f"n{i}"}),
    "/api/v1/intake-forms/{form_id}": (_intake_form, lambda i: {"name": f"n{i}"}),
    "/api/v1/ticket-categories/{category_id}": (_category, lambda i: {"name": f"n{i}"}),
    "/api/v1/message-templates/{template_id}": (_message_template, lambda i: {"body": f"{{{{ customer.code }}}} {i}"}),
    "/api/v1/channels/{channel_id}": (_channel, lambda i: {"name": f"n{i}"}),
    "/api/v1/loyalty/program": (_loyalty_program, lambda i: {"earn_rate": str(i + 2)}),
    "/api/v1/loyalty/levels": (_loyalty_levels, lambda i: {"levels": [], "window_months": i + 20}),
    "/api/v1/rewards/{reward_id}": (_reward, lambda i: {"stock": i + 20}),
    "/api/v1/pipelines/{pipeline_id}": (_pipeline, lambda i: {"name": f"n{i}"}),
    "/api/v1/opportunities/{opportunity_id}": (_opportunity, lambda i: {"title": f"t{i}"}),
    # Every move names the same stage: the first moves the deal, and the version it leaves is what
    # each of the others' If-Match no longer names.
    "/api/v1/opportunities/{opportunity_id}/move": (_opportunity, lambda i: {"stage": "proposal"}),
    "/api/v1/lead-scoring": (_lead_scoring, lambda i: {"rules": [], "half_life_days": i + 2}),
}


def _if_match_operations(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            names = {(p.get("in"), p.get("name", "").lower()) for p in operation.get("parameters", [])}
            if ("header", "if-match") in names:
                found.append((path, method))
    return sorted(found)


def test_every_if_match_route_is_raced_below(app: FastAPI) -> None:
    """A new resource with an ETag joins the race test: this fails until it has a maker above."""
    operations = _if_match_operations(app)
    assert operations, "the OpenAPI document declares If-Match"
    assert {path for path, _ in operations} <= set(MAKERS)


async def test_concurrent_writes_with_one_if_match_have_exactly_one_winner(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    failures = []
    for path, method in _if_match_operations(app):
        make, body = MAKERS[path]
        row_id = await make(live_client, live_tenant)
        url = re.sub(r"\{\w+\}", row_id, path)
        headers = {**live_tenant.headers(), "If-Match": '"1"'}
        if method in ("patch", "post", "put"):
            sent = [live_client.request(method.upper(), url, json=body(i), headers=headers) for i in range(20)]
        else:
            sent = [live_client.delete(url, headers=headers) for _ in range(20)]
        statuses = sorted(r.status_code for r in await asyncio.gather(*sent))
        winners = [s for s in statuses if 200 <= s < 300]
        losers = [s for s in statuses if s in (404, 412)]
        if len(winners) != 1 or len(losers) != 19:
            failures.append((method.upper(), path, statuses))
    assert failures == []


async def _race(client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, Any]) -> list[int]:
    sent = [client.post(f"/api/v1{path}", json=body, headers=tenant.headers()) for _ in range(20)]
    return sorted(r.status_code for r in await asyncio.gather(*sent))


async def test_concurrent_creates_of_one_order_make_it_once_and_replay_it(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    body = {
        "source": "shop",
        "external_id": "SO-RACE",
        "customer_id": await _customer(live_client, live_tenant),
        "ordered_at": "2026-11-01T10:00:00Z",
        "currency": "CNY",
        "total_amount": "168.00",
        "lines": [{"sku": "T-1", "product_name": "茶", "category": "tea", "quantity": "1", "unit_price": "168.00"}],
    }
    assert await _race(live_client, live_tenant, "/orders", body) == [200] * 19 + [201]
    listed = await live_client.get(f"/api/v1/customers/{body['customer_id']}/orders", headers=live_tenant.headers())
    assert [o["external_id"] for o in listed.json()["items"]] == ["SO-RACE"]


async def test_concurrent_creates_of_one_interaction_make_it_once(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    body = {
        "customer_id": await _customer(live_client, live_tenant),
        "channel": "phone",
        "direction": "inbound",
        "occurred_at": clock.now().isoformat(),
        "source": "pbx",
        "external_id": "call-1",
    }
    assert await _race(live_client, live_tenant, "/interactions", body) == [200] * 19 + [201]


async def test_concurrent_creates_of_one_unique_name_make_one_and_409_the_rest(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    field = {"key": "race_key", "label": "Level", "type": "text"}
    assert await _race(live_client, live_tenant, "/custom-fields", field) == [201] + [409] * 19
    user = {"email": "race@x.test", "name": "n", "password": "long-enough-pass", "role": "sales"}
    assert await _race(live_client, live_tenant, "/users", user) == [201] + [409] * 19
    template = {"name": "生日祝福", "channel": "wecom", "body": "{{ customer.name }}"}
    assert await _race(live_client, live_tenant, "/message-templates", template) == [201] + [409] * 19


async def test_one_idempotency_key_of_two_callers_makes_two_creates(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    body = customer_body(emails=[])
    made = []
    for who in ("admin", "manager"):
        headers = {**live_tenant.headers(who), "Idempotency-Key": "shared-key"}
        response = await live_client.post("/api/v1/customers", json=body, headers=headers)
        assert response.status_code == 201 and "idempotent-replayed" not in response.headers
        made.append(response.json()["id"])
    customer = await _customer(live_client, live_tenant)
    order = {
        "source": "shop",
        "external_id": "SO-KEY",
        "customer_id": customer,
        "ordered_at": "2026-11-01T10:00:00Z",
        "currency": "CNY",
        "total_amount": "1.00",
        "lines": [{"sku": "T-1", "product_name": "茶", "category": "tea", "quantity": "1", "unit_price": "1.00"}],
    }
    replays = []
    for who in ("admin", "manager"):
        headers = {**live_tenant.headers(who), "Idempotency-Key": "order-key"}
        response = await live_client.post("/api/v1/orders", json=order, headers=headers)
        replays.append(response.headers.get("idempotent-replayed"))
    assert replays == [None, None]
    assert len(set(made)) == 2


async def test_concurrent_identical_settings_replacements_all_succeed(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """A PUT replaces a set keyed by unique codes: twenty at once with one body all answer 200."""
    always_open = {str(d): [["00:00", "24:00"]] for d in range(7)}
    listed = await live_client.get("/api/v1/lifecycle/stages", headers=live_tenant.headers())
    stages = [{"key": s["key"], "name": s["name"]} for s in listed.json()["items"]]
    stages.insert(1, {"key": "vip_prospect", "name": "VIP 潜在客户"})
    puts: list[tuple[str, dict[str, Any]]] = [
        (
            "/value-tiers",
            {"window_days": 365, "tiers": [{"code": "A", "name": "High", "rank": 1, "min_spend": "500"}]},
        ),
        (
            "/sla",
            {
                "policies": [{"priority": "normal", "first_response_minutes": 60, "resolution_minutes": 600}],
                "timezone": "UTC",
                "weekly": always_open,
            },
        ),
        ("/settings/interaction-outcomes", {"outcomes": ["reached", "voicemail"]}),
        ("/lifecycle/stages", {"stages": stages}),
    ]
    failures = []
    for path, body in puts:
        sent = [live_client.put(f"/api/v1{path}", json=body, headers=live_tenant.headers()) for _ in range(20)]
        statuses = sorted(r.status_code for r in await asyncio.gather(*sent))
        if statuses != [200] * 20:
            failures.append((path, statuses))
    assert failures == []
