"""What a client creates it can read: every 201 names in `Location` a URL that a GET answers with the
record created, and the reads added for the creates that had none (a ticket's comments, a survey's
answers, an API key) keep to the caller's workspace and visibility."""

import uuid
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from app.core import clock
from tests.factories import Tenant, customer_body
from tests.response_headers import mismatches


async def _created(client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _ticket(client: httpx.AsyncClient, tenant: Tenant, owner: str = "sales") -> dict[str, Any]:
    customer = await _created(client, tenant, "/api/v1/customers", customer_body(owner_id=str(tenant.users[owner].id)))
    ticket = {"customer_id": customer["id"], "type": "inquiry", "channel": "phone", "subject": "报价"}
    return await _created(client, tenant, "/api/v1/tickets", ticket)


# Creates that take an Idempotency-Key and answer a secret once: the fields their replay sends as null.
SHOWN_ONCE = {"/api/v1/rewards/{reward_id}/redeem": ("code",), "/api/v1/vouchers": ("code",)}


def _created_201s(app: FastAPI) -> set[str]:
    return {
        path
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method == "post" and "201" in operation["responses"]
    }


async def test_every_201_in_the_document_names_a_location_that_reads_what_it_created(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Each create the document answers 201 is driven here (a new one fails the test until it is):
    its Location is sent, as the document declares it, and a GET of it answers 200 with the same
    record and the same ETag."""
    now = clock.now()
    document = app.openapi()
    answers: dict[str, httpx.Response] = {}
    without_key: set[str] = set()

    async def create(
        template: str, body: dict[str, Any], headers: dict[str, str] | None = None, **ids: str
    ) -> dict[str, Any]:
        operation = document["paths"][template]["post"]
        takes_key = any(parameter["name"] == "Idempotency-Key" for parameter in operation.get("parameters", []))
        headers = {
            **tenant.headers(),
            **({"Idempotency-Key": uuid.uuid4().hex} if takes_key else {}),
            **(headers or {}),
        }
        created = await client.post(template.format(**ids), json=body, headers=headers)
        assert created.status_code == 201, (template, created.text)
        if takes_key:
            # A retry after a lost answer: the first response again, nothing created twice.
            again = await client.post(template.format(**ids), json=body, headers=headers)
            assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true", (template, again.text)
            # A voucher's code is in the first answer only: its replay says null (never stored in clear).
            first = {**created.json(), **dict.fromkeys(SHOWN_ONCE.get(template, ()))}
            assert all(created.json()[name] for name in SHOWN_ONCE.get(template, ())), template
            assert again.json() == first and again.headers["location"] == created.headers["location"], template
        else:
            without_key.add(template)
        assert mismatches(document, "post", template, 201, created.headers) == [], template
        location = created.headers["location"]
        # Read at once: a later create may change the record (a comment bumps its ticket's version).
        read = await client.get(location, headers=tenant.headers())
        assert read.status_code == 200, (template, location, read.text)
        # A survey's answer is named by its customer (one answer each); every other record by its id.
        key = "customer_id" if template.endswith("/responses") else "id"
        assert read.json()[key] == created.json()[key], template
        assert read.headers.get("etag") == created.headers.get("etag"), template
        answers[template] = created
        return dict(created.json())

    customer = (await create("/api/v1/customers", customer_body()))["id"]
    company = (await create("/api/v1/customers", customer_body(kind="company", name="深圳腾达科技")))["id"]
    await create(
        "/api/v1/customers/{customer_id}/relations",
        {"kind": "contact_of", "to_customer_id": company},
        customer_id=customer,
    )
    segment = (await create("/api/v1/segments", {"name": "展会名单", "kind": "static"}))["id"]
    await create("/api/v1/segments/{segment_id}/snapshot", {}, segment_id=segment)
    await create("/api/v1/custom-fields", {"key": "level", "label": "等级", "type": "text"})
    order = {
        "external_id": "SO-1",
        "customer_id": customer,
        "ordered_at": now.isoformat(),
        "currency": "CNY",
        "total_amount": "20.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20.00"}],
    }
    await create("/api/v1/orders", order)
    contact = {"customer_id": customer, "channel": "phone", "direction": "inbound", "occurred_at": now.isoformat()}
    await create("/api/v1/interactions", contact)
    await create("/api/v1/tasks", {"customer_id": customer, "title": "回电", "due_at": now.isoformat()})
    await create(
        "/api/v1/follow-up-plans", {"name": "月度回访", "rule": "every_n_days", "days": 30, "task_title": "回访"}
    )
    await create("/api/v1/care-rules", {"name": "生日", "kind": "birthday", "lead_days": 3, "task_title": "生日祝福"})
    birthday = {"kind": "date", "date": "birthday"}
    await create(
        "/api/v1/automation-rules", {"name": "生日", "trigger": birthday, "actions": [{"type": "add_tag", "tag": "x"}]}
    )
    ticket = await create(
        "/api/v1/tickets", {"customer_id": customer, "type": "inquiry", "channel": "phone", "subject": "报价"}
    )
    await create("/api/v1/tickets/{ticket_id}/comments", {"body": "内部备注", "public": False}, ticket_id=ticket["id"])
    await create("/api/v1/ticket-categories", {"name": "物流"})
    survey = await create("/api/v1/surveys", {"name": "Q4", "question": "推荐意愿？", "opens_at": now.isoformat()})
    await create("/api/v1/surveys/{survey_id}/responses", {"customer_id": customer, "score": 9}, survey_id=survey["id"])
    await create("/api/v1/intake-forms", {"name": "官网表单"})
    user = {"email": "new-colleague@example.com", "name": "李娜", "password": "a-long-password", "role": "sales"}
    await create("/api/v1/users", user)
    await create("/api/v1/teams", {"name": "North"})
    await create("/api/v1/api-keys", {"name": "reader", "scopes": ["customers:read"]})
    await create("/api/v1/webhook-endpoints", {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
    template = {"name": "生日", "channel": "wecom", "body": "{{ customer.name }} 生日"}
    await create("/api/v1/message-templates", template)
    robot = {"kind": "wecom_robot", "name": "群机器人", "settings": {"endpoint": "http://127.0.0.1:9/"}}
    channel = await create("/api/v1/channels", {**robot, "secrets": {"key": "robot-key"}})
    note = {
        "customer_id": customer,
        "channel_id": channel["id"],
        "purpose": "transactional",
        "content": {"text": "您好"},
    }
    await create("/api/v1/messages", note)
    await create("/api/v1/suppressions", {"medium": "email", "address": "bounced@example.com", "reason": "bounce"})
    points = {"customer_id": customer, "points": 100, "reason": "开卡礼"}
    assert (await client.post("/api/v1/loyalty/adjustments", json=points, headers=tenant.headers())).status_code == 200
    redemption = {"customer_id": customer, "points": 30, "description": "茶具一套"}
    await create("/api/v1/loyalty/redemptions", redemption, headers={"Idempotency-Key": "redeem-1"})
    reward = await create("/api/v1/rewards", {"name": "茶具", "points_cost": 20, "kind": "gift", "stock": 3})
    await create(
        "/api/v1/rewards/{reward_id}/redeem",
        {"customer_id": customer},
        headers={"Idempotency-Key": "reward-1"},
        reward_id=reward["id"],
    )
    offer = {"customer_id": customer, "name": "新客礼", "kind": "discount_amount", "value": "20", "reason": "新客"}
    await create("/api/v1/vouchers", offer)
    stages = [{"code": "qualify", "name": "资格确认", "probability": 10}]
    pipeline = await create("/api/v1/pipelines", {"name": "新业务", "stages": stages})
    deal = {"customer_id": customer, "pipeline_id": pipeline["id"], "title": "团购", "amount": "10", "currency": "CNY"}
    await create("/api/v1/opportunities", deal)

    assert set(answers) == _created_201s(app)
    # Their responses hold a secret stored only hashed, which a stored replay would keep in clear.
    assert without_key == {"/api/v1/api-keys", "/api/v1/intake-forms"}


async def test_a_csat_request_and_an_intake_submission_answer_200_without_a_location(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Neither creates a record its caller reads: a CSAT token is a credential for the customer, a
    submission's ticket is the workspace's (docs/decisions.md)."""
    ticket = await _ticket(client, tenant)
    resolved = await client.post(
        f"/api/v1/tickets/{ticket['id']}/transition", json={"status": "resolved"}, headers=tenant.headers()
    )
    assert resolved.status_code == 200, resolved.text
    asked = await client.post(f"/api/v1/tickets/{ticket['id']}/csat-request", headers=tenant.headers())
    assert asked.status_code == 200 and "location" not in asked.headers
    assert mismatches(app.openapi(), "post", "/api/v1/tickets/{ticket_id}/csat-request", 200, asked.headers) == []
    form = await _created(client, tenant, "/api/v1/intake-forms", {"name": "官网表单"})
    lead = {"name": "新客户", "email": "new@example.com", "subject": "报价"}
    submitted = await client.post(f"/api/v1/intake/{form['token']}", json=lead)
    assert submitted.status_code == 200 and "location" not in submitted.headers
    assert submitted.json().keys() == {"ticket_number", "status"}
    assert mismatches(app.openapi(), "post", "/api/v1/intake/{token}", 200, submitted.headers) == []


async def test_a_tickets_comments_are_read_as_its_history_shows_them(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    ticket = await _ticket(client, tenant)
    url = f"/api/v1/tickets/{ticket['id']}/comments"
    note = await _created(client, tenant, url, {"body": "内部备注", "public": False})
    reply = await _created(client, tenant, url, {"body": "您好", "public": True})
    # Internal notes as well as replies, to every role that sees the ticket, as in its history.
    history = (await client.get(f"/api/v1/tickets/{ticket['id']}/history", headers=tenant.headers("sales"))).json()
    for who in ("admin", "sales", "support", "readonly"):
        first = await client.get(url, params={"limit": 1}, headers=tenant.headers(who))
        assert first.status_code == 200, (who, first.text)
        rest = await client.get(url, params={"cursor": first.json()["next_cursor"]}, headers=tenant.headers(who))
        assert [c["id"] for c in first.json()["items"] + rest.json()["items"]] == [note["id"], reply["id"]]
        assert rest.json()["next_cursor"] is None
        assert first.json()["items"] + rest.json()["items"] == history["comments"]
        one = await client.get(f"{url}/{note['id']}", headers=tenant.headers(who))
        assert one.status_code == 200 and one.json() == note
    # Another workspace's caller, the ticket of a customer the caller may not see, a comment of
    # another ticket, an unknown id: all 404.
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404
    assert (await client.get(f"{url}/{note['id']}", headers=other_tenant.headers())).status_code == 404
    west = await _ticket(client, tenant, owner="sales_west")
    west_url = f"/api/v1/tickets/{west['id']}/comments"
    west_note = await _created(client, tenant, west_url, {"body": "内部备注", "public": False})
    assert (await client.get(west_url, headers=tenant.headers("sales"))).status_code == 404
    assert (await client.get(f"{west_url}/{west_note['id']}", headers=tenant.headers("sales"))).status_code == 404
    assert (await client.get(f"{url}/{west_note['id']}", headers=tenant.headers())).status_code == 404
    assert (await client.get(f"{url}/not-an-id", headers=tenant.headers())).status_code == 422
    assert (await client.get(url, params={"limit": 0}, headers=tenant.headers())).status_code == 422


async def test_a_surveys_answers_are_read_for_the_customers_the_caller_sees(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    survey = await _created(
        client,
        tenant,
        "/api/v1/surveys",
        {"name": "Q4", "question": "推荐意愿？", "opens_at": (clock.now() - timedelta(minutes=1)).isoformat()},
    )
    url = f"/api/v1/surveys/{survey['id']}/responses"
    own = await _created(client, tenant, "/api/v1/customers", customer_body(owner_id=str(tenant.users["sales"].id)))
    west = await _created(
        client, tenant, "/api/v1/customers", customer_body(owner_id=str(tenant.users["sales_west"].id))
    )
    mine = await _created(client, tenant, url, {"customer_id": own["id"], "score": 9, "comment": "很好"})
    theirs = await _created(client, tenant, url, {"customer_id": west["id"], "score": 3})
    assert mine["survey_id"] == survey["id"] and mine["comment"] == "很好" and mine["answered_at"].endswith("Z")

    listed = (await client.get(url, headers=tenant.headers())).json()
    assert [a["customer_id"] for a in listed["items"]] == [west["id"], own["id"]]
    assert listed["items"] == [theirs, mine] and listed["next_cursor"] is None
    assert (await client.get(f"{url}/{own['id']}", headers=tenant.headers("sales"))).json() == mine
    # A salesperson reads the answers of its own customers only; the NPS still counts every answer.
    narrow = (await client.get(url, headers=tenant.headers("sales"))).json()
    assert [a["customer_id"] for a in narrow["items"]] == [own["id"]]
    assert (await client.get(f"{url}/{west['id']}", headers=tenant.headers("sales"))).status_code == 404
    results = await client.get(f"/api/v1/surveys/{survey['id']}/results", headers=tenant.headers("sales"))
    assert results.json()["responses"] == 2
    # Another workspace, a customer who did not answer: 404.
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404
    assert (await client.get(f"{url}/{own['id']}", headers=other_tenant.headers())).status_code == 404
    silent = await _created(client, tenant, "/api/v1/customers", customer_body())
    assert (await client.get(f"{url}/{silent['id']}", headers=tenant.headers())).status_code == 404
    first = await client.get(url, params={"limit": 1}, headers=tenant.headers())
    second = await client.get(url, params={"cursor": first.json()["next_cursor"]}, headers=tenant.headers())
    assert first.json()["items"] + second.json()["items"] == listed["items"]
    assert (await client.get(url, params={"cursor": "forged"}, headers=tenant.headers())).status_code == 422
    assert (await client.get(f"{url}/not-an-id", headers=tenant.headers())).status_code == 422


async def test_an_api_key_is_read_by_id_without_its_secret(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = await client.post(
        "/api/v1/api-keys", json={"name": "reader", "scopes": ["customers:read"]}, headers=tenant.headers()
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert created.headers["location"] == f"/api/v1/api-keys/{key['id']}"
    read = await client.get(created.headers["location"], headers=tenant.headers())
    assert read.status_code == 200
    assert read.json() == {name: value for name, value in key.items() if name != "key"}
    assert key["key"] not in read.text
    assert (await client.get(f"/api/v1/api-keys/{key['id']}", headers=other_tenant.headers())).status_code == 404
    assert (await client.get(f"/api/v1/api-keys/{key['id']}", headers=tenant.headers("manager"))).status_code == 403
    assert (await client.get(f"/api/v1/api-keys/{key['id']}", headers={"X-API-Key": key["key"]})).status_code == 403
    assert (await client.get("/api/v1/api-keys/not-an-id", headers=tenant.headers())).status_code == 422
    revoked = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=tenant.headers())
    again = await client.get(f"/api/v1/api-keys/{key['id']}", headers=tenant.headers())
    assert again.status_code == 200 and again.json() == revoked.json() and again.json()["revoked_at"] is not None
