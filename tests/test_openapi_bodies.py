"""The OpenAPI document declares the real 2xx bodies: no JSON response without a schema, closed sets as
enums, and the bodies the routes send validate against what the document says of them."""

import io
import json
import re
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import openpyxl
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import Ticket
from app.services.service_desk import tickets
from tests.factories import Tenant, customer_body
from tests.import_helpers import queue_and_run

JSON = "application/json"
# Answered as CSV: their media types are declared by the document's media-type work, not here.
CSV_ROUTES = {("get", "/api/v1/imports/{job_id}/errors"), ("get", "/api/v1/exports/{job_id}/download")}

# Response properties whose values are a closed set in the code: each must be an enum in the document.
CLOSED_SETS = {
    ("Actor", "type"),
    ("CareRuleOut", "kind"),
    ("ChangeData", "actor_type"),
    ("ContactSummary", "preferred_channel"),
    ("CustomerValueOut", "rfm_segment"),
    ("DeliveryOut", "event_type"),
    ("DeliveryOut", "state"),
    ("DuplicateGroup", "reasons"),
    ("EventOut", "type"),
    ("EventTypeOut", "name"),
    ("ExportOut", "status"),
    ("FieldOut", "type"),
    ("ImportJobOut", "type"),
    ("ImportJobOut", "status"),
    ("ImportJobOut", "mode"),
    ("ImportJobOut", "match_on"),
    ("ImportJobOut", "file_format"),
    ("ImportJobOut", "encoding"),
    ("InteractionData", "channel"),
    ("InteractionData", "direction"),
    ("InteractionOut", "channel"),
    ("InteractionOut", "direction"),
    ("IntakeSubmitted", "status"),
    ("LastContact", "channel"),
    ("OrderData", "status"),
    ("OrderOut", "status"),
    ("PlanOut", "rule"),
    ("PlanOut", "task_kind"),
    ("PlanOut", "task_priority"),
    ("RfmGroup", "key"),
    ("SegmentOut", "kind"),
    ("TaskDoneData", "kind"),
    ("TaskOut", "kind"),
    ("TaskOut", "priority"),
    ("TaskOut", "status"),
    ("TaskOut", "origin"),
    ("TicketData", "type"),
    ("TicketData", "status"),
    ("TicketData", "priority"),
    ("TicketEventOut", "action"),
    ("TicketOut", "type"),
    ("TicketOut", "channel"),
    ("TicketOut", "priority"),
    ("TicketOut", "status"),
    ("VolumeRow", "type"),
    ("VolumeRow", "channel"),
}

# Property names that say "one of a set": in a response schema each is an enum unless listed here.
CLOSED_NAMES = {"type", "status", "state", "kind", "channel", "priority", "direction", "origin", "mode", "rule"}
OPEN = {
    ("OrderOut", "channel"): "the shop's own sales channel, free text",
    ("SurveyOut", "channel"): "how the workspace sends the survey, free text",
}

# The operations whose bodies were untyped before they had models: each is driven below.
DRIVEN = {
    ("get", "/healthz", 200),
    ("get", "/readyz", 200),
    ("get", "/api/v1/customers/duplicates", 200),
    ("post", "/api/v1/customers/{customer_id}/merge", 200),
    ("post", "/api/v1/customers/merges/{merge_id}/undo", 200),
    ("get", "/api/v1/reports/value", 200),
    ("get", "/api/v1/lifecycle/stages", 200),
    ("put", "/api/v1/lifecycle/stages", 200),
    ("get", "/api/v1/reports/lifecycle", 200),
    ("get", "/api/v1/settings/interaction-outcomes", 200),
    ("put", "/api/v1/settings/interaction-outcomes", 200),
    ("get", "/api/v1/customers/{customer_id}/timeline", 200),
    ("get", "/api/v1/customers/{customer_id}/summary", 200),
    ("get", "/api/v1/follow-up-plans", 200),
    ("get", "/api/v1/care-rules", 200),
    ("post", "/api/v1/tickets/{ticket_id}/comments", 201),
    ("get", "/api/v1/tickets/{ticket_id}/history", 200),
    ("get", "/api/v1/tickets/{ticket_id}/comments", 200),
    ("get", "/api/v1/tickets/{ticket_id}/comments/{comment_id}", 200),
    ("post", "/api/v1/tickets/{ticket_id}/csat-request", 200),
    ("get", "/api/v1/ticket-categories", 200),
    ("post", "/api/v1/ticket-categories", 201),
    ("put", "/api/v1/sla", 200),
    ("post", "/api/v1/surveys", 201),
    ("post", "/api/v1/surveys/{survey_id}/responses", 201),
    ("get", "/api/v1/surveys/{survey_id}/results", 200),
    ("get", "/api/v1/surveys/{survey_id}/responses", 200),
    ("get", "/api/v1/surveys/{survey_id}/responses/{customer_id}", 200),
    ("post", "/api/v1/intake-forms", 201),
    ("post", "/api/v1/imports", 202),
    ("get", "/api/v1/imports/{job_id}", 200),
    ("post", "/api/v1/imports/{job_id}/cancel", 200),
    ("post", "/api/v1/csat/{token}", 200),
    ("post", "/api/v1/intake/{token}", 200),
}

_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?[^0-9]*")


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _json_responses(document: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (method, path, status, response["content"][JSON])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status.startswith("2") and JSON in response.get("content", {})
    ]


def test_every_2xx_json_response_declares_a_schema(document: dict[str, Any]) -> None:
    untyped = [
        f"{method.upper()} {path} {status}"
        for method, path, status, content in _json_responses(document)
        if (method, path) not in CSV_ROUTES and not content.get("schema")
    ]
    assert untyped == []
    # Every 2xx but a 204 has a body to declare.
    bodiless = [
        f"{method.upper()} {path} {status}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status.startswith("2") and status != "204" and not response.get("content")
    ]
    assert bodiless == []


def test_closed_sets_in_responses_are_enums(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    def enumerated(schema: dict[str, Any]) -> bool:
        if "enum" in schema or "const" in schema:
            return True
        if "items" in schema:
            return enumerated(schema["items"])
        options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
        return bool(options) and all(enumerated(s) for s in options)

    plain = [
        f"{name}.{field}" for name, field in sorted(CLOSED_SETS) if not enumerated(schemas[name]["properties"][field])
    ]
    assert plain == []


def _response_schemas(document: dict[str, Any]) -> set[str]:
    """The components a 2xx response reaches."""
    schemas = document["components"]["schemas"]
    reached: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "$ref" and (name := item.rsplit("/", 1)[-1]) not in reached:
                    reached.add(name)
                    walk(schemas[name])
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for _, _, _, content in _json_responses(document):
        walk(content)
    return reached


def test_set_valued_names_in_responses_are_enums(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    def plain_text(schema: dict[str, Any]) -> bool:
        if schema.get("type") == "string":
            return not {"enum", "const", "format"} & schema.keys()
        return any(plain_text(option) for option in schema.get("anyOf", []))

    plain = sorted(
        f"{name}.{field}"
        for name in _response_schemas(document)
        for field, schema in schemas[name].get("properties", {}).items()
        if field in CLOSED_NAMES and (name, field) not in OPEN and plain_text(schema)
    )
    assert plain == []


def _closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others: a key the route
    sends and the document does not name fails."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _offset_times(value: Any, where: str = "") -> list[str]:
    """Times not written in UTC with `Z`, as app.core.wire writes them."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _offset_times(item, f"{where}/{key}")]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _offset_times(item, f"{where}/{i}")]
    if isinstance(value, str) and _DATE_TIME.fullmatch(value) and not value.endswith("Z"):
        return [f"{where}: {value}"]
    return []


class Checked:
    """Calls the API and checks each 2xx body against the document's schema for its operation."""

    def __init__(self, client: httpx.AsyncClient, tenant: Tenant, document: dict[str, Any]) -> None:
        self.client, self.tenant, self.document = client, tenant, document
        self.components = _closed(document["components"])
        self.seen: set[tuple[str, str, int]] = set()

    async def call(self, method: str, template: str, expect: int, *, who: str | None = "admin", **kwargs: Any) -> Any:
        params = kwargs.pop("path", {})
        headers = self.tenant.headers(who) if who else {}
        response = await self.client.request(method, template.format(**params), headers=headers, **kwargs)
        assert response.status_code == expect, response.text
        content = self.document["paths"][template][method.lower()]["responses"][str(expect)]["content"][JSON]
        validator = jsonschema_rs.Draft202012Validator(
            {**_closed(content["schema"]), "components": self.components}, validate_formats=True
        )
        body = response.json()
        errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], f"{method} {template}: {errors}\n{json.dumps(body, ensure_ascii=False)}"
        assert _offset_times(body) == [], f"{method} {template}"
        self.seen.add((method.lower(), template, expect))
        return body


async def test_the_bodies_sent_match_the_document(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, document: dict[str, Any]
) -> None:
    api = Checked(client, tenant, document)
    now = clock.now()
    await api.call("GET", "/healthz", 200, who=None)
    await api.call("GET", "/readyz", 200, who=None)

    async def customer(**fields: Any) -> str:
        response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    a = await customer(name="Zhang Weiming", company="星河贸易", address={"city": "深圳市"}, birthday="1990-05-01")
    b = await customer(name="Zhang Wei-ming", company="星河贸易", address={"city": "深圳市"})
    lonely = await customer(name="Li Na")
    # The customer as the route, the read lane and SQL-built JSON write it, plain and masked.
    for who in ("admin", "support"):
        await api.call("GET", "/api/v1/customers/{customer_id}", 200, path={"customer_id": a}, who=who)
        await api.call("GET", "/api/v1/customers", 200, who=who)
    groups = await api.call("GET", "/api/v1/customers/duplicates", 200)
    assert groups["items"] and groups["next_cursor"] is None
    merged = await api.call(
        "POST", "/api/v1/customers/{customer_id}/merge", 200, path={"customer_id": a}, json={"absorb": [b]}
    )
    await api.call("POST", "/api/v1/customers/merges/{merge_id}/undo", 200, path={"merge_id": merged["merge_id"]})

    # Something of every kind on one customer's timeline.
    version = (await client.get(f"/api/v1/customers/{a}", headers=tenant.headers())).json()["version"]
    patched = await client.patch(
        f"/api/v1/customers/{a}",
        json={"title": "经理", "phones": ["13800138000"]},
        headers={**tenant.headers(), "If-Match": f'"{version}"'},
    )
    assert patched.status_code == 200, patched.text
    contact: dict[str, Any] = {
        "customer_id": a,
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": now.isoformat(),
    }
    contact |= {"outcome": "reached", "subject": "回访"}
    contact |= {
        "participants": {"users": [str(tenant.users["sales"].id)], "contacts": ["王经理 138 0013 8000"]},
        "attachments": [{"url": "https://files.example.com/quote.pdf", "name": "报价单"}],
    }
    logged = await api.call("POST", "/api/v1/interactions", 201, json=contact)
    await api.call(
        "GET", "/api/v1/interactions/{interaction_id}", 200, path={"interaction_id": logged["id"]}, who="support"
    )
    for title in ("回电", "报价"):
        task = (
            await client.post(
                "/api/v1/tasks",
                json={"customer_id": a, "title": title, "due_at": (now + timedelta(days=1)).isoformat()},
                headers=tenant.headers(),
            )
        ).json()
    done = await client.post(f"/api/v1/tasks/{task['id']}/complete", json={}, headers=tenant.headers())
    assert done.status_code == 200, done.text
    order = {
        "external_id": "SO-1",
        "customer_id": a,
        "ordered_at": now.isoformat(),
        "currency": "CNY",
        "total_amount": "20000.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20000.00"}],
    }
    assert (await client.post("/api/v1/orders", json=order, headers=tenant.headers())).status_code == 201
    segment = (
        await client.post("/api/v1/segments", json={"name": "展会名单", "kind": "static"}, headers=tenant.headers())
    ).json()
    joined = await client.post(f"/api/v1/segments/{segment['id']}/members", json={"add": [a]}, headers=tenant.headers())
    assert joined.status_code == 200, joined.text
    ticket = (
        await client.post(
            "/api/v1/tickets",
            json={"customer_id": a, "type": "complaint", "channel": "phone", "subject": "包装破损"},
            headers=tenant.headers(),
        )
    ).json()

    timeline = await api.call("GET", "/api/v1/customers/{customer_id}/timeline", 200, path={"customer_id": a})
    kinds = {"interaction", "task_done", "change", "order", "stage_change", "tier_change", "ticket", "segment_join"}
    assert {item["type"] for item in timeline["items"]} == kinds
    # Masked for a caller without the PII scope, and still what the document says.
    await api.call("GET", "/api/v1/customers/{customer_id}/timeline", 200, path={"customer_id": a}, who="support")
    summary = await api.call("GET", "/api/v1/customers/{customer_id}/summary", 200, path={"customer_id": a})
    assert summary["last_contact"] and summary["next_follow_up"] and summary["preferred_channel"] == "phone"
    empty = await api.call("GET", "/api/v1/customers/{customer_id}/summary", 200, path={"customer_id": lonely})
    assert empty["last_contact"] is None and empty["interactions_by_channel"] == {}

    report = await api.call(
        "GET", "/api/v1/reports/value", 200, params={"since": (now - timedelta(days=1)).isoformat()}
    )
    assert report["top_customers"] and report["tier_migration"]["moves"]
    stages = await api.call("GET", "/api/v1/lifecycle/stages", 200)
    wanted = [{"key": s["key"], "name": s["name"]} for s in stages["items"]] + [{"key": "vip", "name": "VIP"}]
    await api.call("PUT", "/api/v1/lifecycle/stages", 200, json={"stages": wanted})
    lifecycle = await api.call(
        "GET", "/api/v1/reports/lifecycle", 200, params={"since": (now - timedelta(days=1)).isoformat()}
    )
    assert lifecycle["funnel"]["moves"] and lifecycle["cohorts"]
    await api.call("GET", "/api/v1/settings/interaction-outcomes", 200)
    await api.call("PUT", "/api/v1/settings/interaction-outcomes", 200, json={"outcomes": ["reached", "no_answer"]})

    plan = {"name": "月度回访", "rule": "every_n_days", "days": 30, "task_title": "回访"}
    assert (await client.post("/api/v1/follow-up-plans", json=plan, headers=tenant.headers())).status_code == 201
    assert (await api.call("GET", "/api/v1/follow-up-plans", 200))["items"]
    care = {"name": "生日", "kind": "birthday", "lead_days": 3, "task_title": "生日祝福"}
    assert (await client.post("/api/v1/care-rules", json=care, headers=tenant.headers())).status_code == 201
    assert (await api.call("GET", "/api/v1/care-rules", 200))["items"]

    ticket_path = {"ticket_id": ticket["id"]}
    # The system's entries in the history: breaches found by the scheduler's job.
    past = now - timedelta(minutes=1)
    await db.execute(
        update(Ticket).where(Ticket.id == ticket["id"]).values(first_response_due_at=past, resolution_due_at=past)
    )
    assert await tickets.mark_breaches(db) == 2
    comments = "/api/v1/tickets/{ticket_id}/comments"
    await api.call("POST", comments, 201, path=ticket_path, json={"body": "内部备注", "public": False})
    reply = await api.call("POST", comments, 201, path=ticket_path, json={"body": "您好", "public": True})
    assert len((await api.call("GET", comments, 200, path=ticket_path))["items"]) == 2
    one_comment = "/api/v1/tickets/{ticket_id}/comments/{comment_id}"
    await api.call("GET", one_comment, 200, path={**ticket_path, "comment_id": reply["id"]})
    for status in ("in_progress", "resolved"):
        moved = await client.post(
            f"/api/v1/tickets/{ticket['id']}/transition", json={"status": status}, headers=tenant.headers()
        )
        assert moved.status_code == 200, moved.text
    history = await api.call("GET", "/api/v1/tickets/{ticket_id}/history", 200, path=ticket_path)
    assert [e["action"] for e in history["events"]][:1] == ["opened"] and len(history["comments"]) == 2
    assert {"type": "system", "id": None} in [e["actor"] for e in history["events"]]
    asked = await api.call("POST", "/api/v1/tickets/{ticket_id}/csat-request", 200, path=ticket_path)
    await api.call("POST", "/api/v1/csat/{token}", 200, path={"token": asked["token"]}, who=None, json={"score": 5})

    parent = await api.call("POST", "/api/v1/ticket-categories", 201, json={"name": "物流"})
    await api.call("POST", "/api/v1/ticket-categories", 201, json={"name": "破损", "parent_id": parent["id"]})
    assert len((await api.call("GET", "/api/v1/ticket-categories", 200))["items"]) == 2
    sla = {"policies": [{"priority": "normal", "first_response_minutes": 60, "resolution_minutes": 600}]}
    await api.call("PUT", "/api/v1/sla", 200, json=sla)

    survey = await api.call(
        "POST", "/api/v1/surveys", 201, json={"name": "Q4", "question": "推荐意愿？", "opens_at": now.isoformat()}
    )
    survey_path = {"survey_id": survey["id"]}
    results = "/api/v1/surveys/{survey_id}/results"
    assert (await api.call("GET", results, 200, path=survey_path))["nps"] is None
    await api.call(
        "POST", "/api/v1/surveys/{survey_id}/responses", 201, path=survey_path, json={"customer_id": a, "score": 9}
    )
    assert (await api.call("GET", results, 200, path=survey_path))["nps"] == 100.0
    answers = "/api/v1/surveys/{survey_id}/responses"
    assert len((await api.call("GET", answers, 200, path=survey_path))["items"]) == 1
    await api.call("GET", answers + "/{customer_id}", 200, path={**survey_path, "customer_id": a})
    form = await api.call("POST", "/api/v1/intake-forms", 201, json={"name": "官网表单"})
    lead = {"name": "新客户", "email": "new@example.com", "subject": "报价"}
    await api.call("POST", "/api/v1/intake/{token}", 200, path={"token": form["token"]}, who=None, json=lead)

    mapping = {"姓名": "name", "手机": "phone"}
    upload = ("客户.csv", "姓名,手机\n王芳,13900139000\n".encode("gb18030"))
    form_data = {"mapping": json.dumps(mapping, ensure_ascii=False)}
    job = await api.call("POST", "/api/v1/imports", 202, files={"file": upload}, data=form_data)
    assert job["encoding"] == "gb18030" and job["status"] == "queued"
    job_path = {"job_id": job["id"]}
    await api.call("GET", "/api/v1/imports/{job_id}", 200, path=job_path)
    cancelled = await api.call("POST", "/api/v1/imports/{job_id}/cancel", 200, path=job_path)
    assert cancelled["status"] == "cancelled"

    assert DRIVEN - api.seen == set()


async def test_finished_imports_match_the_document(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    document: dict[str, Any],
) -> None:
    api = Checked(live_client, live_tenant, document)
    mapping = {"姓名": "name", "手机": "phone"}
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["姓名", "手机"], ["李娜", "13700137000"], ["", "not a phone"]):
        sheet.append(row)
    workbook = io.BytesIO()
    book.save(workbook)
    uploads = [("客户.csv", "姓名,手机\n王芳,13900139000\n".encode("utf-8-sig")), ("客户.xlsx", workbook.getvalue())]
    for upload in uploads:
        queued, job = await queue_and_run(
            app, pool, live_client, live_tenant, upload, kind="customers", mapping=mapping, who="admin", form={}
        )
        assert job.status == "done", job.error
        done = await api.call("GET", "/api/v1/imports/{job_id}", 200, path={"job_id": queued["id"]})
        assert done["started_at"] and done["finished_at"] and done["progress"]["created"] == 1
        assert done["encoding"] == ("utf-8-sig" if upload[0].endswith(".csv") else None)
