"""Every id an input names is checked: an unknown one, or another workspace's, is a 4xx naming the field."""

import importlib
import pkgutil
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import app.schemas
from app.core import clock
from app.models import AutomationRule, Survey, Ticket
from tests.factories import Tenant, customer_body

Ids = dict[str, str]
# (method, url template, body) for a reference field; the body's "{}" value is the id under test.
Probe = Callable[[Ids, str], tuple[str, str, dict[str, Any]]]


# Filters narrow a list: an id that matches nothing gives an empty page, as it does in a query string.
FILTERS = {"OrderFilters.customer_id", "OrderSearch.customer_id"}
FILTERS |= {f"OpportunityFilters.{name}" for name in ("pipeline_id", "customer_id", "owner_id")}


def _reference_fields() -> set[str]:
    """`Model.field` for every `*_id` UUID field of every input schema (the ones that forbid extras),
    filters aside."""
    found = set()
    for info in pkgutil.iter_modules(app.schemas.__path__):
        module = importlib.import_module(f"app.schemas.{info.name}")
        for name, model in vars(module).items():
            if isinstance(model, type) and issubclass(model, BaseModel) and model.model_config.get("extra") == "forbid":
                found |= {
                    f"{name}.{field}"
                    for field, info in model.model_fields.items()
                    if field.endswith("_id") and "UUID" in str(info.annotation)
                }
    return found - FILTERS


def _ticket(ids: Ids, **fields: str) -> dict[str, Any]:
    return {"customer_id": ids["customer"], "type": "complaint", "channel": "phone", "subject": "x", **fields}


def _contact(ids: Ids, **fields: str) -> dict[str, Any]:
    return {
        "customer_id": ids["customer"],
        "channel": "phone",
        "direction": "inbound",
        "occurred_at": clock.now().isoformat(),
        **fields,
    }


def _task(ids: Ids, **fields: str) -> dict[str, Any]:
    return {"customer_id": ids["customer"], "title": "回电", "due_at": clock.now().isoformat(), **fields}


def _order(ids: Ids, customer_id: str) -> dict[str, Any]:
    return {
        "source": "shop",
        "external_id": f"SO-{uuid.uuid4().hex[:6]}",
        "customer_id": customer_id,
        "ordered_at": "2026-11-01T10:00:00Z",
        "currency": "CNY",
        "total_amount": "1.00",
        "lines": [{"sku": "T", "product_name": "茶", "category": "tea", "quantity": "1", "unit_price": "1.00"}],
    }


USER = {"email": "ref@x.test", "name": "n", "password": "long-enough-pass", "role": "sales"}
SURVEY = {"name": "NPS", "question": "?", "opens_at": "2026-01-01T00:00:00Z"}

PROBES: dict[str, Probe] = {
    "UserCreate.team_id": lambda ids, v: ("POST", "/users", USER | {"team_id": v}),
    "UserPatch.team_id": lambda ids, v: ("PATCH", f"/users/{ids['user']}", {"team_id": v}),
    "CustomerFields.owner_id": lambda ids, v: ("POST", "/customers", customer_body(owner_id=v)),
    "CustomerCreate.owner_id": lambda ids, v: ("POST", "/customers", customer_body(owner_id=v)),
    "CustomerPatch.owner_id": lambda ids, v: ("PATCH", f"/customers/{ids['customer']}", {"owner_id": v}),
    "Redeliver.event_id": lambda ids, v: ("POST", f"/webhook-endpoints/{ids['endpoint']}/redeliver", {"event_id": v}),
    "InteractionIn.customer_id": lambda ids, v: ("POST", "/interactions", _contact(ids, customer_id=v)),
    "InteractionIn.user_id": lambda ids, v: ("POST", "/interactions", _contact(ids, user_id=v)),
    "TaskIn.customer_id": lambda ids, v: ("POST", "/tasks", _task(ids, customer_id=v)),
    "TaskIn.assignee_id": lambda ids, v: ("POST", "/tasks", _task(ids, assignee_id=v)),
    "TaskPatch.assignee_id": lambda ids, v: ("PATCH", f"/tasks/{ids['task']}", {"assignee_id": v}),
    "TaskComplete.interaction_id": lambda ids, v: ("POST", f"/tasks/{ids['task']}/complete", {"interaction_id": v}),
    "Audience.segment_id": lambda ids, v: (
        "POST",
        "/follow-up-plans",
        {"name": "p", "rule": "every_n_days", "days": 3, "task_title": "t", "audience": {"segment_id": v}},
    ),
    "OrderIn.customer_id": lambda ids, v: ("POST", "/orders", _order(ids, v)),
    "TicketIn.customer_id": lambda ids, v: ("POST", "/tickets", _ticket(ids, customer_id=v)),
    "TicketIn.category_id": lambda ids, v: ("POST", "/tickets", _ticket(ids, category_id=v)),
    "TicketIn.assignee_id": lambda ids, v: ("POST", "/tickets", _ticket(ids, assignee_id=v)),
    "TicketIn.team_id": lambda ids, v: ("POST", "/tickets", _ticket(ids, team_id=v)),
    "TicketIn.order_id": lambda ids, v: ("POST", "/tickets", _ticket(ids, order_id=v)),
    "TicketIn.interaction_id": lambda ids, v: ("POST", "/tickets", _ticket(ids, interaction_id=v)),
    "TicketPatch.category_id": lambda ids, v: ("PATCH", f"/tickets/{ids['ticket']}", {"category_id": v}),
    "TicketPatch.assignee_id": lambda ids, v: ("PATCH", f"/tickets/{ids['ticket']}", {"assignee_id": v}),
    "TicketPatch.team_id": lambda ids, v: ("PATCH", f"/tickets/{ids['ticket']}", {"team_id": v}),
    "CategoryIn.parent_id": lambda ids, v: ("POST", "/ticket-categories", {"name": "c", "parent_id": v}),
    "CategoryPatch.parent_id": lambda ids, v: ("PATCH", f"/ticket-categories/{ids['category']}", {"parent_id": v}),
    "SurveyIn.segment_id": lambda ids, v: ("POST", "/surveys", SURVEY | {"segment_id": v}),
    "RelationIn.to_customer_id": lambda ids, v: (
        "POST",
        f"/customers/{ids['customer']}/relations",
        {"kind": "family_of", "to_customer_id": v},
    ),
    "SurveyAnswer.customer_id": lambda ids, v: (
        "POST",
        f"/surveys/{ids['survey']}/responses",
        {"customer_id": v, "score": 9},
    ),
    "WorkspacePatch.default_assignee_id": lambda ids, v: ("PATCH", "/workspace", {"default_assignee_id": v}),
    "MessageIn.customer_id": lambda ids, v: ("POST", "/messages", _message(ids, customer_id=v)),
    "MessageIn.channel_id": lambda ids, v: ("POST", "/messages", _message(ids, channel_id=v)),
    "MessageIn.template_id": lambda ids, v: (
        "POST",
        "/messages",
        {"customer_id": ids["customer"], "channel_id": ids["channel"], "purpose": "transactional", "template_id": v},
    ),
    "EmailBounce.message_id": lambda ids, v: ("POST", ids["bounces"], {"address": "a@example.com", "message_id": v}),
    "CreateTask.assignee_id": lambda ids, v: (
        "POST",
        "/automation-rules",
        _rule({"type": "create_task", "title": "t", "assignee_id": v}),
    ),
    "AddToSegment.segment_id": lambda ids, v: (
        "POST",
        "/automation-rules",
        _rule({"type": "add_to_segment", "segment_id": v}),
    ),
    "CallWebhook.endpoint_id": lambda ids, v: (
        "POST",
        "/automation-rules",
        _rule({"type": "call_webhook", "endpoint_id": v}),
    ),
    "SendMessage.channel_id": lambda ids, v: (
        "POST",
        "/automation-rules",
        _rule({"type": "send_message", "channel_id": v, "template_id": ids["template"]}),
    ),
    "SendMessage.template_id": lambda ids, v: (
        "POST",
        "/automation-rules",
        _rule({"type": "send_message", "channel_id": ids["channel"], "template_id": v}),
    ),
    "AdjustmentIn.customer_id": lambda ids, v: (
        "POST",
        "/loyalty/adjustments",
        {"customer_id": v, "points": 10, "reason": "补偿"},
    ),
    "ActionIn.customer_id": lambda ids, v: (
        "POST",
        "/loyalty/actions",
        {"customer_id": v, "action": "review_written", "reference": "review-1"},
    ),
    "RedemptionIn.customer_id": lambda ids, v: (
        "POST",
        "/loyalty/redemptions",
        {"customer_id": v, "points": 10, "description": "茶具"},
    ),
    "RewardRedeemIn.customer_id": lambda ids, v: ("POST", f"/rewards/{ids['reward']}/redeem", {"customer_id": v}),
    "VoucherIssueIn.customer_id": lambda ids, v: (
        "POST",
        "/vouchers",
        {"customer_id": v, "name": "新客礼", "kind": "gift", "reason": "新客"},
    ),
    "VoucherRedeemIn.order_id": lambda ids, v: (
        "POST",
        "/vouchers/redeem",
        {"code": ids["voucher_code"], "order_id": v},
    ),
    "OpportunityIn.customer_id": lambda ids, v: ("POST", "/opportunities", _deal(ids, customer_id=v)),
    "OpportunityIn.pipeline_id": lambda ids, v: ("POST", "/opportunities", _deal(ids, pipeline_id=v)),
    "OpportunityIn.owner_id": lambda ids, v: ("POST", "/opportunities", _deal(ids, owner_id=v)),
    "OpportunityPatch.owner_id": lambda ids, v: ("PATCH", f"/opportunities/{ids['opportunity']}", {"owner_id": v}),
    "PreviewIn.customer_id": lambda ids, v: (
        "POST",
        f"/message-templates/{ids['template']}/preview",
        {"customer_id": v},
    ),
}


def _rule(action: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"r{uuid.uuid4().hex[:6]}", "trigger": {"kind": "date", "date": "birthday"}, "actions": [action]}


def _deal(ids: Ids, **fields: str) -> dict[str, Any]:
    body = {"customer_id": ids["customer"], "pipeline_id": ids["pipeline"], "title": "团购", "amount": "1"}
    return {**body, "currency": "CNY", **fields}


def _message(ids: Ids, **fields: str) -> dict[str, Any]:
    body = {"customer_id": ids["customer"], "channel_id": ids["channel"], "purpose": "transactional"}
    return {**body, "content": {"text": "您好"}, **fields}


def test_every_reference_field_of_the_input_schemas_is_probed() -> None:
    """A new `*_id` input field joins the probes below: this fails until it has one."""
    assert _reference_fields() == set(PROBES)


async def _made(client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, Any]) -> str:
    response = await client.post(f"/api/v1{path}", json=body, headers=tenant.headers())
    assert response.status_code == 201, (path, response.text)
    return str(response.json()["id"])


async def _records(client: httpx.AsyncClient, tenant: Tenant) -> Ids:
    ids: Ids = {"customer": await _made(client, tenant, "/customers", customer_body())}
    ids["task"] = await _made(client, tenant, "/tasks", _task(ids))
    ids["ticket"] = await _made(client, tenant, "/tickets", _ticket(ids))
    ids["interaction"] = await _made(client, tenant, "/interactions", _contact(ids))
    ids["order"] = await _made(client, tenant, "/orders", _order(ids, ids["customer"]))
    ids["segment"] = await _made(client, tenant, "/segments", {"name": f"s{uuid.uuid4().hex[:6]}", "kind": "static"})
    ids["survey"] = await _made(client, tenant, "/surveys", SURVEY)
    ids["category"] = await _made(client, tenant, "/ticket-categories", {"name": f"c{uuid.uuid4().hex[:6]}"})
    endpoint = {"url": "https://hooks.example.com/in", "event_types": ["customer.*"]}
    ids["endpoint"] = await _made(client, tenant, "/webhook-endpoints", endpoint)
    ids["user"] = str(tenant.users["sales"].id)
    robot = {"kind": "wecom_robot", "name": "群机器人", "settings": {"endpoint": "http://127.0.0.1:9/"}}
    ids["channel"] = await _made(client, tenant, "/channels", {**robot, "secrets": {"key": "robot-key"}})
    mail = {"host": "127.0.0.1", "port": 9, "tls": "none", "from_address": "crm@example.com"}
    response = await client.post(
        "/api/v1/channels", json={"kind": "email", "name": "邮件", "settings": mail}, headers=tenant.headers()
    )
    ids["bounces"] = str(response.json()["callback_urls"]["receipts"]).removeprefix("/api/v1")
    template = {"name": f"t{uuid.uuid4().hex[:6]}", "channel": "wecom", "body": "{{ customer.name }}"}
    ids["template"] = await _made(client, tenant, "/message-templates", template)
    ids["reward"] = await _made(client, tenant, "/rewards", {"name": "茶具", "points_cost": 0, "kind": "gift"})
    voucher = {"customer_id": ids["customer"], "name": "新客礼", "kind": "gift", "reason": "新客"}
    issued = await client.post("/api/v1/vouchers", json=voucher, headers=tenant.headers())
    ids["voucher_code"] = str(issued.json()["code"])
    stages = [{"code": "qualify", "name": "资格确认", "probability": 10}]
    ids["pipeline"] = await _made(client, tenant, "/pipelines", {"name": "新业务", "stages": stages})
    ids["opportunity"] = await _made(client, tenant, "/opportunities", _deal(ids))
    return ids


async def test_an_unknown_or_foreign_id_in_any_reference_field_is_refused_naming_it(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    ids = await _records(client, tenant)
    foreign = await _records(client, other_tenant)
    foreign_of = {
        "customer_id": foreign["customer"],
        "to_customer_id": foreign["customer"],
        "order_id": foreign["order"],
        "interaction_id": foreign["interaction"],
        "segment_id": foreign["segment"],
        "parent_id": foreign["category"],
        "team_id": str(other_tenant.team.id),
        "owner_id": str(other_tenant.users["sales"].id),
        "assignee_id": str(other_tenant.users["sales"].id),
        "user_id": str(other_tenant.users["sales"].id),
        "default_assignee_id": str(other_tenant.users["sales"].id),
        "channel_id": foreign["channel"],
        "template_id": foreign["template"],
        "endpoint_id": foreign["endpoint"],
        "pipeline_id": foreign["pipeline"],
    }
    failures = []
    for name, probe in PROBES.items():
        field = name.split(".")[1]
        for value in (str(uuid.uuid4()), foreign_of.get(field)):
            if value is None:
                continue
            method, path, body = probe(ids, value)
            headers = {**tenant.headers(), "If-Match": "*", "Idempotency-Key": str(uuid.uuid4())}
            response = await client.request(method, f"/api/v1{path}", json=body, headers=headers)
            problem = response.json() if response.status_code in (404, 422) else {}
            named = response.status_code == 404 or field in str(problem.get("errors", [{}])[0].get("loc"))
            if not named:
                failures.append((name, value == foreign_of.get(field), response.status_code, response.text[:200]))
    assert failures == []
    for model in (Ticket, Survey):
        # Only the records made above: nothing a refused probe named was stored.
        assert await db.scalar(select(func.count()).select_from(model).where(model.workspace_id == tenant.id)) == 1
    rules = select(func.count()).select_from(AutomationRule).where(AutomationRule.workspace_id == tenant.id)
    assert await db.scalar(rules) == 0


async def test_a_ticket_names_only_its_own_customers_order_and_contact(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    ids = await _records(client, tenant)
    other = {"customer": await _made(client, tenant, "/customers", customer_body())}
    for field, value in (("order_id", ids["order"]), ("interaction_id", ids["interaction"])):
        response = await client.post("/api/v1/tickets", json=_ticket(other, **{field: value}), headers=tenant.headers())
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", field]
        accepted = await _made(client, tenant, "/tickets", _ticket(ids, **{field: value}))
        stored = await db.scalar(select(getattr(Ticket, field)).where(Ticket.id == uuid.UUID(accepted)))
        assert str(stored) == value
