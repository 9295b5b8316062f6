"""The service desk's settings and records read back and changed: the SLA document and its calendar
(holidays and make-up working days, the mainland China calendar loaded from chinesecalendar),
surveys, intake forms and their tokens, ticket categories, ticket tags and attachments."""

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import chinese_calendar
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEntry, BusinessHours, IntakeForm, Survey, TicketCategory
from app.services.service_desk import tickets
from tests.factories import Tenant, customer_body

SLA = {"policies": [{"priority": "normal", "first_response_minutes": 120, "resolution_minutes": 600}]}


def cst(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


def utc_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _customer(client: httpx.AsyncClient, tenant: Tenant) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _ticket(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> httpx.Response:
    body = {"customer_id": await _customer(client, tenant), "type": "complaint", "channel": "phone", "subject": "破损"}
    return await client.post("/api/v1/tickets", json=body | fields, headers=tenant.headers())


def _ticket_clock_at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """Tickets open at `moment`; the credentials' own clock keeps the real time."""
    monkeypatch.setattr(tickets, "clock", SimpleNamespace(now=lambda: moment))


def _if_match(tenant: Tenant, etag: str, who: str = "admin") -> dict[str, str]:
    return {**tenant.headers(who), "If-Match": etag}


# --- The SLA document ---------------------------------------------------------------------------


async def test_sla_reads_back_what_put_stored_with_its_version(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    defaults = await client.get("/api/v1/sla", headers=tenant.headers("sales"))
    assert defaults.status_code == 200, defaults.text
    assert defaults.headers["ETag"] == '"1"'
    assert defaults.json()["version"] == 1 and defaults.json()["workdays"] == []
    assert {p["priority"] for p in defaults.json()["policies"]} == {"low", "normal", "high", "urgent"}

    body = SLA | {"holidays": ["2026-10-02", "2026-10-01"], "workdays": ["2026-10-10"]}
    put = await client.put("/api/v1/sla", json=body, headers=tenant.headers())
    assert put.status_code == 200, put.text
    assert put.headers["ETag"] == '"2"'
    stored = put.json()
    assert stored["holidays"] == ["2026-10-01", "2026-10-02"] and stored["workdays"] == ["2026-10-10"]
    assert stored["policies"] == [SLA["policies"][0] | {"tier": None}]
    assert (await client.get("/api/v1/sla", headers=tenant.headers())).json() == stored
    # Another workspace still has its defaults.
    assert (await client.get("/api/v1/sla", headers=other_tenant.headers())).json()["version"] == 1
    entries = await db.scalar(
        select(func.count()).where(
            AuditEntry.workspace_id == tenant.workspace.id, AuditEntry.entity_type == "sla_settings"
        )
    )
    assert entries == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"holidays": ["2026-10-10"], "workdays": ["2026-10-09", "2026-10-10"]}, ["body", "workdays", 1]),
        ({"workdays": ["2026-13-01"]}, ["body", "workdays", 0]),
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
    ],
)
async def test_bad_sla_documents_are_422_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, change: dict[str, Any], where: list[Any]
) -> None:
    assert (await client.put("/api/v1/sla", json=SLA, headers=tenant.headers())).status_code == 200
    refused = await client.put("/api/v1/sla", json=SLA | change, headers=tenant.headers())
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["errors"][0]["loc"] == where
    after = (await client.get("/api/v1/sla", headers=tenant.headers())).json()
    assert after["version"] == 2 and after["workdays"] == [] and after["timezone"] == "Asia/Shanghai"


async def test_only_service_admins_change_the_sla(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for who in ("sales", "support", "readonly"):
        assert (await client.put("/api/v1/sla", json=SLA, headers=tenant.headers(who))).status_code == 403
        load = await client.post("/api/v1/sla/calendar/load", json={"years": [2026]}, headers=tenant.headers(who))
        assert load.status_code == 403
    assert (await client.put("/api/v1/sla", json=SLA, headers=tenant.headers("manager"))).status_code == 200
    assert (await client.get("/api/v1/sla", headers=tenant.headers("readonly"))).status_code == 200


async def test_the_mainland_calendar_loads_as_the_workspaces_own_days(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    own = SLA | {"holidays": ["2026-03-08", "2026-02-14"], "workdays": ["2025-12-27"]}
    assert (await client.put("/api/v1/sla", json=own, headers=tenant.headers())).status_code == 200
    loaded = await client.post("/api/v1/sla/calendar/load", json={"years": [2026]}, headers=tenant.headers())
    assert loaded.status_code == 200, loaded.text
    settings = loaded.json()
    assert loaded.headers["ETag"] == '"3"'
    # The State Council's 2026: New Year, Spring Festival (15-23 February), Labour Day, National Day.
    assert {"2026-01-01", "2026-01-02", "2026-02-16", "2026-02-23", "2026-05-05", "2026-10-07"} <= set(
        settings["holidays"]
    )
    # Its make-up working days, the Saturday 14 February included: the official calendar wins over
    # the workspace's own holiday that day.
    assert {"2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"} <= set(
        settings["workdays"]
    )
    assert "2026-02-14" not in settings["holidays"]
    # The workspace's own days stay: its Women's Day holiday, a make-up day of another year.
    assert "2026-03-08" in settings["holidays"] and "2025-12-27" in settings["workdays"]
    assert settings["policies"] == [SLA["policies"][0] | {"tier": None}]

    # Then edited like any other day of the document: 1 October no longer a holiday.
    edited = settings | {"holidays": [d for d in settings["holidays"] if d != "2026-10-01"]}
    del edited["version"]
    put = await client.put("/api/v1/sla", json=edited, headers=tenant.headers())
    assert put.status_code == 200, put.text
    assert "2026-10-01" not in put.json()["holidays"] and put.json()["version"] == 4


async def test_a_year_the_calendar_does_not_know_is_422_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    """chinesecalendar publishes a year once the State Council has: the installed one knows 2004-2026."""
    refused = await client.post("/api/v1/sla/calendar/load", json={"years": [2026, 2027]}, headers=tenant.headers())
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", "years"]
    assert "2027" in refused.json()["errors"][0]["msg"]
    assert await db.get(BusinessHours, tenant.workspace.id) is None
    empty = await client.post("/api/v1/sla/calendar/load", json={"years": []}, headers=tenant.headers())
    assert empty.status_code == 422


async def test_a_ticket_before_a_make_up_saturday_counts_its_hours(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Friday 13 February 2026, 17:00: 120 business minutes are 17:00-18:00 that Friday and 9:00-10:00
    on Saturday 14 February, a make-up working day of the 2026 calendar."""
    assert (await client.put("/api/v1/sla", json=SLA, headers=tenant.headers())).status_code == 200
    assert (
        await client.post("/api/v1/sla/calendar/load", json={"years": [2026]}, headers=tenant.headers())
    ).status_code == 200
    _ticket_clock_at(monkeypatch, cst("2026-02-13T17:00"))
    opened = await _ticket(client, tenant)
    assert opened.status_code == 201, opened.text
    assert opened.json()["first_response_due_at"] == utc_z(cst("2026-02-14T10:00"))


async def test_holiday_weekdays_count_no_hours(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saturday 14 February 2026 (worked), 17:00: one hour that day, then the Spring Festival holiday
    (Sunday 15 to Monday 23 February, five weekdays among them) counts nothing: due Tuesday 24, 10:00."""
    assert (await client.put("/api/v1/sla", json=SLA, headers=tenant.headers())).status_code == 200
    assert (
        await client.post("/api/v1/sla/calendar/load", json={"years": [2026]}, headers=tenant.headers())
    ).status_code == 200
    _ticket_clock_at(monkeypatch, cst("2026-02-14T17:00"))
    opened = await _ticket(client, tenant)
    assert opened.json()["first_response_due_at"] == utc_z(cst("2026-02-24T10:00"))


async def test_without_the_calendar_the_same_saturday_is_closed(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.put("/api/v1/sla", json=SLA, headers=tenant.headers())).status_code == 200
    _ticket_clock_at(monkeypatch, cst("2026-02-13T17:00"))
    opened = await _ticket(client, tenant)
    assert opened.json()["first_response_due_at"] == utc_z(cst("2026-02-16T10:00"))


# --- Surveys ------------------------------------------------------------------------------------


async def _survey(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"name": "Q4 NPS", "question": "推荐意愿？", "opens_at": "2026-01-01T00:00:00Z"} | fields
    response = await client.post("/api/v1/surveys", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/api/v1/surveys/{response.json()['id']}"
    return dict(response.json())


async def test_surveys_list_read_change_and_close(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    first = await _survey(client, tenant, name="一")
    second = await _survey(client, tenant, name="二")
    await _survey(client, other_tenant, name="别人的")
    assert second["status"] == "open" and second["version"] == 1

    page = await client.get("/api/v1/surveys?limit=1", headers=tenant.headers("readonly"))
    assert page.status_code == 200 and [s["name"] for s in page.json()["items"]] == ["二"]
    rest = await client.get(f"/api/v1/surveys?limit=1&cursor={page.json()['next_cursor']}", headers=tenant.headers())
    assert [s["name"] for s in rest.json()["items"]] == ["一"] and rest.json()["next_cursor"] is None

    url = f"/api/v1/surveys/{first['id']}"
    read = await client.get(url, headers=tenant.headers())
    assert read.headers["ETag"] == '"1"' and read.json() == first
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404

    assert (await client.patch(url, json={"name": "改"}, headers=tenant.headers())).status_code == 428
    assert (await client.patch(url, json={"name": "改"}, headers=_if_match(tenant, '"7"'))).status_code == 412
    assert (await client.patch(url, json={"name": "改"}, headers=_if_match(tenant, '"1"', "sales"))).status_code == 403
    assert (await client.patch(url, json={"name": "改"}, headers=_if_match(other_tenant, "*"))).status_code == 404
    bad = await client.patch(url, json={"closes_at": "2025-12-31T00:00:00Z"}, headers=_if_match(tenant, '"1"'))
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "closes_at"]
    null = await client.patch(url, json={"question": None}, headers=_if_match(tenant, '"1"'))
    assert null.status_code == 422 and null.json()["errors"][0]["loc"] == ["body", "question"]
    assert (await db.get(Survey, (tenant.workspace.id, first["id"]), populate_existing=True)).version == 1  # type: ignore[union-attr]

    changed = await client.patch(url, json={"name": "改", "question": "满意吗？"}, headers=_if_match(tenant, '"1"'))
    assert changed.status_code == 200, changed.text
    assert changed.headers["ETag"] == '"2"' and changed.json()["question"] == "满意吗？"

    assert (await client.post(f"{url}/close", headers=other_tenant.headers())).status_code == 404
    assert (await client.post(f"{url}/close", headers=tenant.headers("support"))).status_code == 403
    closed = await client.post(f"{url}/close", headers=tenant.headers())
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed" and closed.json()["closed_at"] is not None
    again = await client.post(f"{url}/close", headers=tenant.headers())
    assert again.status_code == 409
    frozen = await client.patch(url, json={"name": "再改"}, headers=_if_match(tenant, "*"))
    assert frozen.status_code == 409

    answer = {"customer_id": await _customer(client, tenant), "score": 9}
    late = await client.post(f"{url}/responses", json=answer, headers=tenant.headers())
    assert late.status_code == 410, late.text
    assert late.json()["detail"].startswith("The survey was closed at ")
    assert late.json()["closed_at"] == closed.json()["closed_at"]
    audit = await db.scalar(
        select(func.count()).where(AuditEntry.entity_type == "survey", AuditEntry.entity_id == first["id"])
    )
    assert audit == 3  # created, changed, closed


async def test_a_survey_not_yet_open_is_409_and_its_window_moves_until_answered(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    survey = await _survey(client, tenant, opens_at="2099-01-01T00:00:00Z")
    assert survey["status"] == "scheduled"
    url = f"/api/v1/surveys/{survey['id']}"
    answer = {"customer_id": await _customer(client, tenant), "score": 9}
    early = await client.post(f"{url}/responses", json=answer, headers=tenant.headers())
    assert early.status_code == 409 and "opens at 2099-01-01T00:00:00Z" in early.json()["detail"]
    moved = await client.patch(url, json={"opens_at": "2026-01-01T00:00:00Z"}, headers=_if_match(tenant, "*"))
    assert moved.status_code == 200 and moved.json()["status"] == "open"
    assert (await client.post(f"{url}/responses", json=answer, headers=tenant.headers())).status_code == 201
    refused = await client.patch(url, json={"opens_at": "2026-02-01T00:00:00Z"}, headers=_if_match(tenant, "*"))
    assert refused.status_code == 409


# --- Intake forms -------------------------------------------------------------------------------


LEAD = {"name": "新客户", "email": "lead@example.com", "subject": "报价"}


async def test_intake_forms_list_read_and_change(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    made = await client.post("/api/v1/intake-forms", json={"name": "官网表单"}, headers=tenant.headers())
    assert made.status_code == 201 and made.json()["status"] == "active" and made.json()["token"].startswith("gxf_")
    form = made.json()
    await client.post("/api/v1/intake-forms", json={"name": "别人的"}, headers=other_tenant.headers())
    listed = await client.get("/api/v1/intake-forms", headers=tenant.headers())
    assert listed.status_code == 200
    assert [f["name"] for f in listed.json()["items"]] == ["官网表单"]
    assert "token" not in listed.json()["items"][0]
    assert (await client.get("/api/v1/intake-forms", headers=tenant.headers("sales"))).status_code == 403

    url = f"/api/v1/intake-forms/{form['id']}"
    read = await client.get(url, headers=tenant.headers())
    assert read.headers["ETag"] == '"1"' and "token" not in read.json()
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404
    assert (await client.patch(url, json={"name": "新名"}, headers=tenant.headers())).status_code == 428
    assert (await client.patch(url, json={"name": "新名"}, headers=_if_match(tenant, '"2"'))).status_code == 412
    bad = await client.patch(url, json={"channel": "pigeon"}, headers=_if_match(tenant, '"1"'))
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "channel"]
    row = await db.get(IntakeForm, (tenant.workspace.id, form["id"]), populate_existing=True)
    assert row is not None and row.version == 1 and row.channel == "web_form"
    changed = await client.patch(url, json={"name": "新名", "channel": "wechat"}, headers=_if_match(tenant, '"1"'))
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    ticket = await client.post(f"/api/v1/intake/{form['token']}", json=LEAD)
    assert ticket.status_code == 200, ticket.text


async def test_a_rotated_token_replaces_the_old_one_at_once_and_a_revoked_form_takes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    form = (await client.post("/api/v1/intake-forms", json={"name": "官网表单"}, headers=tenant.headers())).json()
    url = f"/api/v1/intake-forms/{form['id']}"
    assert (await client.post(f"{url}/rotate-token", headers=other_tenant.headers())).status_code == 404
    assert (await client.post(f"{url}/rotate-token", headers=tenant.headers("support"))).status_code == 403
    rotated = await client.post(f"{url}/rotate-token", headers=tenant.headers())
    assert rotated.status_code == 200, rotated.text
    new_token = rotated.json()["token"]
    assert new_token != form["token"] and rotated.json()["token_rotated_at"] is not None
    assert rotated.json()["version"] == 2
    assert (await client.post(f"/api/v1/intake/{form['token']}", json=LEAD)).status_code == 404
    assert (await client.post(f"/api/v1/intake/{new_token}", json=LEAD)).status_code == 200

    assert (await client.post(f"{url}/revoke", headers=other_tenant.headers())).status_code == 404
    revoked = await client.post(f"{url}/revoke", headers=tenant.headers())
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert (await client.post(f"/api/v1/intake/{new_token}", json=LEAD)).status_code == 404
    assert (await client.post(f"{url}/revoke", headers=tenant.headers())).status_code == 409
    assert (await client.post(f"{url}/rotate-token", headers=tenant.headers())).status_code == 409


# --- Ticket categories --------------------------------------------------------------------------


async def test_categories_change_and_only_unused_leaves_go(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    async def made(name: str, parent: str | None = None) -> dict[str, Any]:
        response = await client.post(
            "/api/v1/ticket-categories", json={"name": name, "parent_id": parent}, headers=tenant.headers()
        )
        assert response.status_code == 201 and response.headers["ETag"] == '"1"', response.text
        assert response.headers["Location"] == f"/api/v1/ticket-categories/{response.json()['id']}"
        return dict(response.json())

    logistics = await made("物流")
    damaged = await made("破损", logistics["id"])
    spare = await made("其他")
    url = f"/api/v1/ticket-categories/{logistics['id']}"
    read = await client.get(url, headers=tenant.headers("readonly"))
    assert read.status_code == 200 and read.headers["ETag"] == '"1"' and read.json() == logistics
    assert (await client.get(url, headers=other_tenant.headers())).status_code == 404

    assert (await client.patch(url, json={"name": "运输"}, headers=tenant.headers())).status_code == 428
    assert (await client.patch(url, json={"name": "运输"}, headers=_if_match(tenant, '"9"'))).status_code == 412
    assert (await client.patch(url, json={"name": "运输"}, headers=_if_match(other_tenant, "*"))).status_code == 404
    assert (await client.patch(url, json={"name": "运输"}, headers=_if_match(tenant, "*", "sales"))).status_code == 403
    cycle = await client.patch(url, json={"parent_id": damaged["id"]}, headers=_if_match(tenant, '"1"'))
    assert cycle.status_code == 422 and cycle.json()["errors"][0]["loc"] == ["body", "parent_id"]
    blank = await client.patch(url, json={"name": "  "}, headers=_if_match(tenant, '"1"'))
    assert blank.status_code == 422
    row = await db.get(TicketCategory, (tenant.workspace.id, logistics["id"]), populate_existing=True)
    assert row is not None and row.version == 1 and row.parent_id is None
    renamed = await client.patch(url, json={"name": "运输"}, headers=_if_match(tenant, '"1"'))
    assert renamed.status_code == 200 and renamed.json() == logistics | {"name": "运输", "version": 2}

    # In use by a ticket: 409 naming how many; with a subcategory: 409 too.
    filed = await _ticket(client, tenant, category_id=damaged["id"])
    used = await client.delete(f"/api/v1/ticket-categories/{damaged['id']}", headers=_if_match(tenant, "*"))
    assert used.status_code == 409 and used.json()["tickets"] == 1
    parent = await client.delete(url, headers=_if_match(tenant, "*"))
    assert parent.status_code == 409 and parent.json()["subcategories"] == 1

    spare_url = f"/api/v1/ticket-categories/{spare['id']}"
    assert (await client.delete(spare_url, headers=tenant.headers())).status_code == 428
    assert (await client.delete(spare_url, headers=_if_match(tenant, '"2"'))).status_code == 412
    assert (await client.delete(spare_url, headers=_if_match(other_tenant, "*"))).status_code == 404
    assert (await client.delete(spare_url, headers=_if_match(tenant, '"1"'))).status_code == 204
    names = [
        c["name"] for c in (await client.get("/api/v1/ticket-categories", headers=tenant.headers())).json()["items"]
    ]
    assert names == ["破损", "运输"]
    moved = await client.patch(
        f"/api/v1/tickets/{filed.json()['id']}", json={"category_id": None}, headers=_if_match(tenant, "*")
    )
    assert moved.status_code == 200
    gone = await client.delete(f"/api/v1/ticket-categories/{damaged['id']}", headers=_if_match(tenant, "*"))
    assert gone.status_code == 204


# --- Ticket tags and attachments ----------------------------------------------------------------

PHOTO = {
    "url": "https://files.example.com/t/1/photo.jpg",
    "name": "破损照片.jpg",
    "content_type": "image/jpeg",
    "size_bytes": 482133,
}


async def test_ticket_tags_and_attachments_round_trip_and_filter(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    opened = await _ticket(client, tenant, tags=[" 物流 ", "退款", "物流"], attachments=[PHOTO])
    assert opened.status_code == 201, opened.text
    ticket = opened.json()
    assert ticket["tags"] == ["物流", "退款"] and ticket["attachments"] == [PHOTO]
    plain = (await _ticket(client, tenant)).json()
    assert plain["tags"] == [] and plain["attachments"] == []
    await _ticket(client, other_tenant, tags=["物流"])

    async def tagged(*tags: str) -> list[str]:
        query = "&".join(f"tag={t}" for t in tags)
        response = await client.get(f"/api/v1/tickets?{query}", headers=tenant.headers())
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["items"]]

    assert await tagged("物流") == [ticket["id"]]
    assert await tagged("物流", "退款") == [ticket["id"]]
    assert await tagged("物流", "投诉") == []

    url = f"/api/v1/tickets/{ticket['id']}"
    receipt = PHOTO | {"name": "发票.pdf", "content_type": "application/pdf", "url": "https://files.example.com/r.pdf"}
    changed = await client.patch(
        url, json={"tags": ["投诉"], "attachments": [PHOTO, receipt]}, headers=_if_match(tenant, '"1"')
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["tags"] == ["投诉"] and changed.json()["attachments"] == [PHOTO, receipt]
    assert await tagged("投诉") == [ticket["id"]] and await tagged("物流") == []
    read = (await client.get(url, headers=tenant.headers())).json()
    assert read["tags"] == ["投诉"] and read["attachments"] == [PHOTO, receipt]
    history = (await client.get(f"{url}/history", headers=tenant.headers())).json()["events"]
    assert [(e["action"], e["from"], e["to"]) for e in history if e["action"] == "tags_changed"] == [
        ("tags_changed", "物流, 退款", "投诉")
    ]
    assert "attachments_changed" in [e["action"] for e in history]


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"attachments": [PHOTO | {"url": "file:///etc/passwd"}]}, ["body", "attachments", 0, "url"]),
        ({"attachments": [PHOTO | {"content_type": "JPEG"}]}, ["body", "attachments", 0, "content_type"]),
        ({"attachments": [PHOTO | {"size_bytes": 200 * 1024 * 1024}]}, ["body", "attachments", 0, "size_bytes"]),
        ({"attachments": [PHOTO] * 21}, ["body", "attachments"]),
        ({"tags": ["x" * 65]}, ["body", "tags", 0]),
        ({"tags": [" "]}, ["body", "tags", 0]),
        ({"tags": None}, ["body", "tags"]),
    ],
)
async def test_bad_tags_and_attachments_are_422_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, fields: dict[str, Any], where: list[Any]
) -> None:
    ticket = (await _ticket(client, tenant, tags=["物流"], attachments=[PHOTO])).json()
    url = f"/api/v1/tickets/{ticket['id']}"
    refused = await client.patch(url, json=fields, headers=_if_match(tenant, '"1"'))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == where
    after = (await client.get(url, headers=tenant.headers())).json()
    assert after["version"] == 1 and after["tags"] == ["物流"] and after["attachments"] == [PHOTO]


def test_make_up_day_dates_are_real_calendar_dates() -> None:
    """The dates the tests above rely on are the library's, not made up here."""
    assert date(2026, 2, 14) in chinese_calendar.workdays
    assert all(date(2026, 2, day) in chinese_calendar.holidays for day in range(15, 24))
