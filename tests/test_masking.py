"""Masking is a property of the caller: no route, list, event or file hands a caller without the
PII scope a customer's raw email, phone or street, wherever the value sits."""

import asyncio
import re
import uuid

import httpx
import pytest
from fastapi import FastAPI

from app.core.access import Scope
from app.core.masking import mask_contact, mask_personal
from app.core.settings import get_settings
from app.main import create_app
from app.services.bulk import exports
from tests.factories import Tenant, customer_body, make_api_key

# The customer's values before and after an update: the audit log and timeline hold both.
BEFORE = {"email": "li.na.before@example.com", "phone": "13612349876", "street": "滨海大道 2 号"}
AFTER = {"email": "zhang.wei.after@example.com", "phone": "13598761234", "street": "科技园路 1 号"}
CONTACT_PHONE = "13745671234"
RAW = [*BEFORE.values(), *AFTER.values(), CONTACT_PHONE, "滨海大道", "科技园路"]


def _get_paths() -> list[str]:
    """Every GET route of the API, read from the published OpenAPI document: a new one is walked
    the day it is added."""
    app = create_app(get_settings(), database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    return [
        path
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/v1") and "get" in operations
    ]


def _concrete(path: str, values: dict[str, str]) -> str:
    """The path with the seeded ids; a parameter nothing was seeded for gets an unknown id."""
    return re.sub(r"\{(\w+)\}", lambda found: values.get(found.group(1), str(uuid.uuid4())), path)


def _leaks(text: str) -> list[str]:
    return [value for value in RAW if value in text]


async def _seed(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """A customer whose email, phone and street changed, with an interaction naming a contact's phone,
    a ticket, an order, a static segment and events: every place customer data travels to."""
    admin = tenant.headers()
    body = customer_body(
        emails=[BEFORE["email"]],
        phones=[BEFORE["phone"]],
        address={"city": "深圳市", "street": BEFORE["street"]},
        owner_id=str(tenant.users["sales"].id),
    )
    created = await client.post("/api/v1/customers", json=body, headers=admin)
    assert created.status_code == 201, created.text
    customer_id = created.json()["id"]
    patch = {"emails": [AFTER["email"]], "phones": [AFTER["phone"]], "address": {"street": AFTER["street"]}}
    changed = await client.patch(f"/api/v1/customers/{customer_id}", json=patch, headers={**admin, "If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    contact = {
        "customer_id": customer_id,
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": "2026-03-01T02:00:00Z",
        "participants": {"contacts": [f"王经理 {CONTACT_PHONE}", BEFORE["email"]]},
    }
    interaction = await client.post("/api/v1/interactions", json=contact, headers=admin)
    assert interaction.status_code == 201, interaction.text
    ticket = {"customer_id": customer_id, "type": "complaint", "channel": "phone", "subject": "包装破损"}
    opened = await client.post("/api/v1/tickets", json=ticket, headers=admin)
    assert opened.status_code == 201, opened.text
    order = {
        "external_id": "SO-1",
        "customer_id": customer_id,
        "ordered_at": "2026-03-01T02:00:00Z",
        "currency": "CNY",
        "total_amount": "20.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20.00"}],
    }
    ordered = await client.post("/api/v1/orders", json=order, headers=admin)
    assert ordered.status_code == 201, ordered.text
    segment = (await client.post("/api/v1/segments", json={"name": "Call", "kind": "static"}, headers=admin)).json()
    added = await client.post(f"/api/v1/segments/{segment['id']}/members", json={"add": [customer_id]}, headers=admin)
    assert added.status_code == 200, added.text
    mail = {"host": "127.0.0.1", "port": 9, "tls": "none", "from_address": "crm@example.com"}
    channel = await client.post(
        "/api/v1/channels", json={"kind": "email", "name": "邮件", "settings": mail, "secrets": {}}, headers=admin
    )
    assert channel.status_code == 201, channel.text
    content = {"subject": "回访", "body": "您好"}
    sent = {
        "customer_id": customer_id,
        "channel_id": channel.json()["id"],
        "purpose": "transactional",
        "content": content,
    }
    message = await client.post("/api/v1/messages", json=sent, headers=admin)
    assert message.status_code == 201, message.text
    suppressed = {"medium": "email", "address": changed.json()["emails"][0], "reason": "manual"}
    suppression = await client.post("/api/v1/suppressions", json=suppressed, headers=admin)
    assert suppression.status_code == 201, suppression.text
    return {
        "customer_id": customer_id,
        "channel_id": channel.json()["id"],
        "message_id": message.json()["id"],
        "suppression_id": suppression.json()["id"],
        "interaction_id": interaction.json()["id"],
        "ticket_id": opened.json()["id"],
        "order_id": ordered.json()["id"],
        "segment_id": segment["id"],
    }


async def _settled_events(client: httpx.AsyncClient, tenant: Tenant, headers: dict[str, str]) -> None:
    """The stream shows an event once every older transaction has ended: wait until ours show."""
    async with asyncio.timeout(15):
        while True:
            if (await client.get("/api/v1/changes", params={"limit": 100}, headers=headers)).json()["items"]:
                return
            await asyncio.sleep(0.1)


async def test_a_masked_caller_never_reads_raw_personal_data_on_any_get_route(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    ids = await _seed(live_client, live_tenant)
    async with app.state.sessions() as session:
        key = await make_api_key(session, live_tenant, scopes=[s for s in Scope if s is not Scope.CUSTOMERS_PII])
        await session.commit()
    callers = {"readonly": live_tenant.headers("readonly"), "key without pii": {"X-API-Key": key}}
    await _settled_events(live_client, live_tenant, callers["readonly"])
    answered: set[tuple[str, str]] = set()
    for who, headers in callers.items():
        queued = await live_client.post("/api/v1/exports", json={}, headers=headers)
        assert queued.status_code == 202, queued.text
        await exports.process(app.state.sessions, uuid.UUID(queued.json()["id"]), live_tenant.id)
        values = {**ids, "job_id": queued.json()["id"]}
        for path in _get_paths():
            url = _concrete(path, values)
            for accept in ("application/json", "text/csv"):
                response = await live_client.get(url, headers={**headers, "Accept": accept})
                assert response.status_code < 500, f"{who} {url}: {response.status_code}"
                leaked = _leaks(response.content.decode("utf-8", errors="replace"))
                assert not leaked, f"{who} GET {url} ({accept}) shows {leaked}"
                if response.status_code == 200:
                    answered.add((who, path))
        found = await live_client.get("/api/v1/customers", params={"q": "张伟"}, headers=headers)
        assert found.status_code == 200 and found.json()["items"] and not _leaks(found.text)
        search = {"filter": {"field": "city", "op": "eq", "value": "深圳市"}}
        for route in ("/api/v1/customers/search", "/api/v1/segments/preview"):
            matched = await live_client.post(route, json=search, headers=headers)
            assert matched.status_code == 200 and "items" in matched.json() and not _leaks(matched.text), route
    # The walk reached the routes that carry the data, as each caller may read them.
    carrying = {
        "/api/v1/customers/{customer_id}",
        "/api/v1/customers/{customer_id}/timeline",
        "/api/v1/interactions/{interaction_id}",
        "/api/v1/segments/{segment_id}/members",
        "/api/v1/exports/{job_id}/download",
        "/api/v1/changes",
    }
    assert {("readonly", path) for path in carrying} <= answered
    with_audit_and_events = carrying | {"/api/v1/customers/{customer_id}/audit", "/api/v1/events"}
    assert {("key without pii", path) for path in with_audit_and_events} <= answered


async def test_a_caller_with_the_pii_scope_reads_the_values_unmasked(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    ids = await _seed(live_client, live_tenant)
    timeline = await live_client.get(
        f"/api/v1/customers/{ids['customer_id']}/timeline", params={"type": "change"}, headers=live_tenant.headers()
    )
    assert all(value in timeline.text for value in (*BEFORE.values(), *AFTER.values()))
    contact = await live_client.get(f"/api/v1/interactions/{ids['interaction_id']}", headers=live_tenant.headers())
    assert CONTACT_PHONE in contact.text


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (
            {"emails": {"before": ["li@example.com"], "after": None}},
            {"emails": {"before": ["l***@example.com"], "after": None}},
        ),
        (
            {"address": {"after": {"street": "科技园路", "city": "深圳"}}},
            {"address": {"after": {"street": "***", "city": "深圳"}}},
        ),
        (
            {"data": {"phones": ["+8613800138000"], "pii_masked": False}},
            {"data": {"phones": ["+861******8000"], "pii_masked": True}},
        ),
        ({"name": "张伟", "tags": ["vip"]}, {"name": "张伟", "tags": ["vip"]}),
    ],
)
def test_masking_finds_personal_fields_wherever_they_sit(value: object, masked: object) -> None:
    assert mask_personal(value) == masked


def test_a_free_form_contact_keeps_its_name_and_masks_its_numbers() -> None:
    assert mask_contact("王经理 138 0013 8000 / li@example.com") == "王经理 1380***8000 / l***@example.com"


async def test_a_masked_caller_cannot_search_out_a_masked_value(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """Search matches emails and phones only for callers who see them: otherwise `q` would spell
    out a masked phone a digit at a time."""
    body = customer_body(name="王秀英", emails=[AFTER["email"]], phones=[AFTER["phone"]])
    assert (await client.post("/api/v1/customers", json=body, headers=tenant.headers())).status_code == 201
    for q in (AFTER["phone"][2:9], "zhang.wei.after", "zhang.wei.afte"):
        unmasked = await client.get("/api/v1/customers", params={"q": q}, headers=tenant.headers())
        assert [c["name"] for c in unmasked.json()["items"]] == ["王秀英"], q
        masked = await client.get("/api/v1/customers", params={"q": q}, headers=tenant.headers("readonly"))
        assert masked.status_code == 200 and masked.json()["items"] == [], q
    by_name = await client.get("/api/v1/customers", params={"q": "王秀英"}, headers=tenant.headers("readonly"))
    assert [c["name"] for c in by_name.json()["items"]] == ["王秀英"]
