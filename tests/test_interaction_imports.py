"""Interaction imports: CSV (UTF-8 BOM, GB18030) and XLSX, customer matching by code, email, phone
and id, idempotent upserts by (source, external_id), rejected rows, events, visibility and tenancy."""

import csv
import io
import json
import uuid

import asyncpg
import httpx
import openpyxl
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.models import AuditEntry, ImportJob, Interaction, OutboxEvent
from app.schemas.interaction import InteractionOut
from app.services.bulk import import_jobs, interaction_imports
from tests.factories import Tenant
from tests.import_helpers import create_customer, queue_and_run

MAPPING = {
    "客户编号": "customer_code",
    "邮箱": "customer_email",
    "手机": "customer_phone",
    "渠道": "channel",
    "方向": "direction",
    "时间": "occurred_at",
    "时长": "duration_seconds",
    "主题": "subject",
    "结果": "outcome",
    "来源": "source",
    "编号": "external_id",
    "跟进人": "user_email",
}


def _csv(rows: list[list[str]], encoding: str, header: list[str] | None = None) -> bytes:
    lines = [",".join(header or list(MAPPING)), *(",".join(row) for row in rows)]
    return ("\n".join(lines) + "\n").encode(encoding)


def _row(**cells: str) -> list[str]:
    """A file row by field name; blank for the rest."""
    by_field = {field: cells.get(field, "") for field in MAPPING.values()}
    return [by_field[field] for field in MAPPING.values()]


_customer = create_customer


async def _import(
    app: FastAPI,
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    tenant: Tenant,
    name: str,
    content: bytes,
    *,
    who: str = "admin",
    mapping: dict[str, str] | None = None,
    **form: str,
) -> tuple[str, dict[str, int]]:
    queued, job = await queue_and_run(
        app, pool, client, tenant, (name, content), kind="interactions", mapping=mapping or MAPPING, who=who, form=form
    )
    assert queued["type"] == "interactions"
    assert job.status == "done", job.error
    return str(job.id), dict(import_jobs.present(job)["progress"])


async def _errors(client: httpx.AsyncClient, tenant: Tenant, job_id: str) -> list[list[str]]:
    report = await client.get(f"/api/v1/imports/{job_id}/errors", headers=tenant.headers())
    assert report.status_code == 200
    header, *rows = csv.reader(io.StringIO(report.text))
    assert header == ["row", "column", "reason"]
    return rows


async def _interactions(app: FastAPI, tenant: Tenant) -> list[Interaction]:
    async with app.state.sessions() as session:
        rows = await session.scalars(
            select(Interaction).where(Interaction.workspace_id == tenant.id).order_by(Interaction.external_id)
        )
        return list(rows.all())


async def test_csv_import_matches_customers_by_code_email_and_phone_and_emits_events(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    zhang = await _customer(live_client, live_tenant, name="张伟", emails=["zhang@example.com"])
    li = await _customer(live_client, live_tenant, name="李娜", emails=[], phones=["13900139000"])
    rows = [
        _row(customer_code=zhang["code"], channel="phone", direction="outbound", occurred_at="2026-03-01 10:00",
             duration_seconds="120", subject="回访", outcome="reached", source="callcenter", external_id="C-1"),
        _row(customer_email="Zhang@Example.com", channel="wechat", direction="inbound",
             occurred_at="2026-03-02T09:30:00Z", source="callcenter", external_id="C-2"),
        _row(customer_phone="139 0013 9000", channel="visit", direction="outbound",
             occurred_at="2026-03-03T15:00:00+08:00", source="callcenter", external_id="C-3",
             user_email=live_tenant.users["sales"].email.upper()),
    ]  # fmt: skip
    job_id, progress = await _import(app, pool, live_client, live_tenant, "联系.csv", _csv(rows, "utf-8-sig"))
    assert progress == {"rows_read": 3, "created": 3, "updated": 0, "skipped": 0, "failed": 0}
    stored = await _interactions(app, live_tenant)
    assert [(str(i.customer_id), i.channel, i.external_id) for i in stored] == [
        (zhang["id"], "phone", "C-1"),
        (zhang["id"], "wechat", "C-2"),
        (li["id"], "visit", "C-3"),
    ]
    # A time without an offset is the workspace's (Asia/Shanghai) wall-clock time.
    assert stored[0].occurred_at.isoformat() == "2026-03-01T02:00:00+00:00"
    assert stored[0].duration_seconds == 120 and stored[0].outcome == "reached"
    assert stored[0].user_id == live_tenant.users["admin"].id
    assert stored[2].user_id == live_tenant.users["sales"].id
    async with app.state.sessions() as session:
        events = (
            await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "interaction.created"
                )
            )
        ).all()
    assert len(events) == 3
    by_external_id = {event.data["external_id"]: event.data for event in events}
    # The payload is the one the API's own events carry.
    assert InteractionOut.model_validate(by_external_id["C-1"]).id == stored[0].id
    assert set(by_external_id["C-1"]) == set(InteractionOut.model_fields)
    assert by_external_id["C-1"]["occurred_at"] == "2026-03-01T02:00:00Z"
    assert events[0].actor == {"type": "user", "id": str(live_tenant.users["admin"].id)}
    # The contacts show on the customer's timeline, as the API's do.
    timeline = await live_client.get(
        f"/api/v1/customers/{zhang['id']}/timeline", params={"type": "interaction"}, headers=live_tenant.headers()
    )
    assert timeline.status_code == 200, timeline.text
    assert [item["data"]["channel"] for item in timeline.json()["items"]] == ["wechat", "phone"]
    assert await _errors(live_client, live_tenant, job_id) == []


async def test_rerunning_an_upsert_changes_nothing_and_a_changed_row_is_updated_and_audited(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    customer = await _customer(live_client, live_tenant)
    rows = [
        _row(customer_code=customer["code"], channel="phone", direction="outbound", occurred_at="2026-03-01 10:00",
             subject="报价", source="crm", external_id=f"X-{n}")
        for n in range(3)
    ]  # fmt: skip
    content = _csv(rows, "gb18030")
    _, first = await _import(app, pool, live_client, live_tenant, "a.csv", content, mode="upsert")
    assert first["created"] == 3
    _, again = await _import(app, pool, live_client, live_tenant, "a.csv", content, mode="upsert")
    assert again == {"rows_read": 3, "created": 0, "updated": 0, "skipped": 3, "failed": 0}
    assert [i.version for i in await _interactions(app, live_tenant)] == [1, 1, 1]
    changed = [_row(customer_code=customer["code"], channel="phone", direction="outbound",
                    occurred_at="2026-03-01 10:00", subject="签约", source="crm", external_id="X-1")]  # fmt: skip
    _, third = await _import(app, pool, live_client, live_tenant, "b.csv", _csv(changed, "utf-8"), mode="upsert")
    assert third == {"rows_read": 1, "created": 0, "updated": 1, "skipped": 0, "failed": 0}
    stored = await _interactions(app, live_tenant)
    assert [(i.subject, i.version) for i in stored] == [("报价", 1), ("签约", 2), ("报价", 1)]
    async with app.state.sessions() as session:
        audit = (
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.workspace_id == live_tenant.id, AuditEntry.entity_id == stored[1].id
                )
            )
        ).one()
        created_events = await session.scalars(
            select(OutboxEvent.id).where(
                OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "interaction.created"
            )
        )
        assert len(created_events.all()) == 3
    assert audit.action == "updated" and audit.changes == {"subject": {"before": "报价", "after": "签约"}}
    # A contact is never moved to another customer.
    other = await _customer(live_client, live_tenant)
    moved = [_row(customer_code=other["code"], channel="phone", direction="outbound",
                  occurred_at="2026-03-01 10:00", source="crm", external_id="X-2")]  # fmt: skip
    job_id, refused = await _import(app, pool, live_client, live_tenant, "m.csv", _csv(moved, "utf-8"), mode="upsert")
    assert refused == {"rows_read": 1, "created": 0, "updated": 0, "skipped": 0, "failed": 1}
    assert await _errors(live_client, live_tenant, job_id) == [
        ["2", "编号", "this external_id is logged for another customer"]
    ]
    # create_only never touches a stored contact.
    _, create_only = await _import(app, pool, live_client, live_tenant, "c.csv", _csv(changed, "utf-8"))
    assert create_only == {"rows_read": 1, "created": 0, "updated": 0, "skipped": 1, "failed": 0}


async def test_xlsx_import_with_customer_ids(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    customer = await _customer(live_client, live_tenant)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["客户ID", "渠道", "方向", "时间", "时长", "编号"])
    sheet.append([customer["id"], "meeting", "outbound", "2026-04-01 14:30", 3600, "M-1"])
    buffer = io.BytesIO()
    book.save(buffer)
    mapping = {"客户ID": "customer_id", "渠道": "channel", "方向": "direction", "时间": "occurred_at",
               "时长": "duration_seconds", "编号": "external_id"}  # fmt: skip
    _, progress = await _import(app, pool, live_client, live_tenant, "联系.xlsx", buffer.getvalue(), mapping=mapping)
    assert progress["created"] == 1
    [stored] = await _interactions(app, live_tenant)
    assert stored.channel == "meeting" and stored.duration_seconds == 3600 and stored.source == "api"
    assert stored.occurred_at.isoformat() == "2026-04-01T06:30:00+00:00"


async def test_valid_rows_go_in_and_bad_ones_are_reported_by_row_column_and_reason(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    customer = await _customer(live_client, live_tenant, emails=["ok@example.com"])
    other = await _customer(live_client, live_tenant, emails=["other@example.com"])
    code = customer["code"]
    base = {"channel": "phone", "direction": "outbound", "occurred_at": "2026-03-01 10:00"}
    rows = [
        _row(customer_code=code, external_id="E-1", **base),  # row 2: fine
        _row(customer_code="KH-0000-999999", external_id="E-2", **base),  # unknown customer
        _row(customer_code=code, external_id="E-3", **{**base, "channel": "fax"}),  # not a channel
        _row(customer_code=code, external_id="E-4", **{**base, "occurred_at": "yesterday"}),  # not a time
        _row(customer_code=code, external_id="E-5", **{**base, "outcome": "sold"}),  # not a workspace outcome
        _row(customer_code=code, external_id="E-6", subject="x" * 301, **base),  # too long
        _row(customer_code=code, external_id="E-1", **base),  # the same external_id as row 2
        _row(customer_email="nobody", external_id="E-8", **base),  # not an email
        _row(customer_code=code, customer_email="other@example.com", external_id="E-9", **base),  # two customers
        _row(customer_code=code, external_id="E-\x0010", **base),  # NUL
        _row(customer_code=code, external_id="E-11", **{**base, "duration_seconds": "-5"}),  # negative
        _row(customer_code=code, external_id="E-12", **base),  # fine
        _row(customer_code=code, external_id="E-13", user_email="ghost@example.com", **base),  # unknown user
    ]
    job_id, progress = await _import(app, pool, live_client, live_tenant, "a.csv", _csv(rows, "utf-8"))
    assert progress == {"rows_read": 13, "created": 2, "updated": 0, "skipped": 0, "failed": 11}
    assert [i.external_id for i in await _interactions(app, live_tenant)] == ["E-1", "E-12"]
    report = await _errors(live_client, live_tenant, job_id)
    assert [(row, column) for row, column, _ in report] == [
        ("3", "客户编号"),
        ("4", "渠道"),
        ("5", "时间"),
        ("6", "结果"),
        ("7", "主题"),
        ("8", "编号"),
        ("9", "邮箱"),
        ("10", "邮箱"),
        ("11", "编号"),
        ("12", "时长"),
        ("14", "跟进人"),
    ]
    reasons = {row: reason for row, _, reason in report}
    assert reasons["3"] == "no customer with code KH-0000-999999"
    assert reasons["4"] == "Input should be 'phone', 'email', 'sms', 'wechat', 'meeting', 'visit', 'chat' or 'other'"
    assert "expected an RFC 3339 value" in reasons["5"]
    assert reasons["7"] == "String should have at most 300 characters"
    assert reasons["12"] == "Input should be greater than or equal to 0"
    assert "Unknown outcome 'sold'" in reasons["6"] and reasons["8"] == "the same external_id is on row 2"
    assert reasons["10"] == "names another customer than column '客户编号'" and other["id"]
    assert reasons["11"] == "contains a NUL character"
    assert reasons["14"] == "no user with this email in the workspace"


async def test_visibility_and_tenancy_limit_the_customers_rows_may_name(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_other_tenant: Tenant,
) -> None:
    own = await _customer(live_client, live_tenant, who="sales", emails=["own@example.com"])
    await _customer(live_client, live_tenant, who="sales2", emails=["theirs@example.com"])
    # Codes are per workspace: the third one there has no namesake here.
    for _ in range(2):
        await _customer(live_client, live_other_tenant)
    foreign = await _customer(live_client, live_other_tenant, emails=["foreign@example.com"])
    base = {"channel": "phone", "direction": "outbound", "occurred_at": "2026-03-01 10:00"}
    rows = [
        _row(customer_email="own@example.com", external_id="V-1", **base),
        _row(customer_email="theirs@example.com", external_id="V-2", **base),
        _row(customer_code=foreign["code"], external_id="V-3", **base),
        _row(customer_email="foreign@example.com", external_id="V-4", **base),
    ]
    content = _csv(rows, "utf-8")
    job_id, progress = await _import(app, pool, live_client, live_tenant, "a.csv", content, who="sales")
    assert progress["created"] == 1 and progress["failed"] == 3
    [stored] = await _interactions(app, live_tenant)
    assert str(stored.customer_id) == own["id"] and stored.user_id == live_tenant.users["sales"].id
    # A customer the uploader may not see reads as one that does not exist.
    assert [reason for _, _, reason in await _errors(live_client, live_tenant, job_id)] == [
        "no customer with email theirs@example.com",
        f"no customer with code {foreign['code']}",
        "no customer with email foreign@example.com",
    ]
    # An admin sees the colleague's customer, but never another workspace's.
    _, by_admin = await _import(app, pool, live_client, live_tenant, "b.csv", content)
    assert by_admin == {"rows_read": 4, "created": 1, "updated": 0, "skipped": 1, "failed": 2}
    assert await _interactions(app, live_other_tenant) == []


async def test_bad_interaction_uploads_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    async def upload(mapping: dict[str, str], **form: str) -> httpx.Response:
        return await client.post(
            "/api/v1/imports",
            files={"file": ("a.csv", _csv([], "utf-8"))},
            data={"mapping": json.dumps(mapping), "type": "interactions", **form},
            headers=tenant.headers(),
        )

    unknown = await upload({**MAPPING, "备注": "notes"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "mapping", "备注"]
    no_customer = await upload({k: v for k, v in MAPPING.items() if not v.startswith("customer_")})
    assert no_customer.status_code == 422 and "customer_code" in no_customer.json()["detail"]
    no_channel = await upload({k: v for k, v in MAPPING.items() if v != "channel"})
    assert no_channel.status_code == 422 and "channel" in no_channel.json()["detail"]
    twice = await upload({**MAPPING, "电话": "customer_phone"})
    assert twice.status_code == 422 and twice.json()["errors"][0]["loc"] == ["body", "mapping", "电话"]
    upsert_without_key = await upload({k: v for k, v in MAPPING.items() if v != "external_id"}, mode="upsert")
    assert upsert_without_key.status_code == 422 and "external_id" in upsert_without_key.json()["detail"]
    assert (await upload(MAPPING, match_on="email")).status_code == 422
    assert (await upload(MAPPING, type="tickets")).status_code == 422
    assert (await upload(MAPPING)).status_code == 202


async def test_cancelling_stops_after_the_current_batch_and_keeps_what_was_committed(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = (await _customer(live_client, live_tenant))["code"]
    monkeypatch.setattr(interaction_imports, "BATCH", 2)
    base = {"channel": "phone", "direction": "outbound", "occurred_at": "2026-03-01 10:00"}
    rows = [_row(customer_code=code, external_id=f"K-{n}", **base) for n in range(5)]
    queued = await live_client.post(
        "/api/v1/imports",
        files={"file": ("a.csv", _csv(rows, "utf-8"))},
        data={"mapping": json.dumps(MAPPING), "type": "interactions"},
        headers=live_tenant.headers(),
    )
    job_id = uuid.UUID(queued.json()["id"])
    # The cancel arrives while the job runs.
    async with app.state.sessions() as session:
        await session.execute(
            update(ImportJob)
            .where(ImportJob.workspace_id == live_tenant.id, ImportJob.id == job_id)
            .values(cancel_requested=True)
        )
        await session.commit()
    job = await import_jobs.process(app.state.job_sessions, pool, live_tenant.id, job_id)
    assert job.status == "cancelled" and (job.rows_read, job.created) == (2, 2)
    assert [i.external_id for i in await _interactions(app, live_tenant)] == ["K-0", "K-1"]


VISITS = MAPPING | {
    "纬度": "latitude",
    "经度": "longitude",
    "精度": "location_accuracy_m",
    "地址": "location_address",
    "签到": "checked_in_at",
    "签退": "checked_out_at",
}


def _visit_row(**cells: str) -> str:
    return ",".join(cells.get(field, "") for field in VISITS.values())


async def test_visits_come_in_by_file_with_the_api_rules_and_an_upsert_checks_out(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    customer = await _customer(live_client, live_tenant)
    visit = {
        "customer_code": customer["code"],
        "channel": "visit",
        "direction": "outbound",
        "occurred_at": "2026-03-01 10:00",
        "source": "app",
        "latitude": "31.2304",
        "longitude": "121.4737",
        "location_address": "南京东路 1 号",
        "checked_in_at": "2026-03-01 10:00",
    }
    rows = [
        _visit_row(**visit, external_id="V-1", location_accuracy_m="8", checked_out_at="2026-03-01 11:30"),
        _visit_row(**visit, external_id="V-2"),
        _visit_row(**{**visit, "latitude": "95"}, external_id="V-3"),
        _visit_row(**visit, external_id="V-4", checked_out_at="2026-03-01 09:00"),
        _visit_row(**{**visit, "channel": "phone"}, external_id="V-5"),
    ]
    content = ("\n".join([",".join(VISITS), *rows]) + "\n").encode()
    job_id, progress = await _import(app, pool, live_client, live_tenant, "v.csv", content, mapping=VISITS)
    assert progress == {"rows_read": 5, "created": 2, "updated": 0, "skipped": 0, "failed": 3}
    assert await _errors(live_client, live_tenant, job_id) == [
        ["4", "纬度", "Input should be less than or equal to 90"],
        ["5", "签退", "A check-out cannot come before the check-in."],
        ["6", "签到", "Only a visit has checked_in_at; this contact's channel is 'phone'."],
    ]
    first, second = await _interactions(app, live_tenant)
    assert first.location == {"latitude": 31.2304, "longitude": 121.4737, "accuracy_m": 8, "address": "南京东路 1 号"}
    assert first.checked_in_at is not None and first.checked_in_at.isoformat() == "2026-03-01T02:00:00+00:00"
    assert first.checked_out_at is not None and first.checked_out_at.isoformat() == "2026-03-01T03:30:00+00:00"
    assert second.checked_out_at is None
    # An upsert checks out of the open visit (with the event a PATCH emits) and cannot make a
    # checked-in visit a call.
    later = [
        _visit_row(**visit, external_id="V-2", checked_out_at="2026-03-01 12:00"),
        _visit_row(customer_code=customer["code"], channel="phone", direction="outbound",
                   occurred_at="2026-03-01 10:00", source="app", external_id="V-1"),
    ]  # fmt: skip
    content = ("\n".join([",".join(VISITS), *later]) + "\n").encode()
    job_id, progress = await _import(
        app, pool, live_client, live_tenant, "w.csv", content, mapping=VISITS, mode="upsert"
    )
    assert progress == {"rows_read": 2, "created": 0, "updated": 1, "skipped": 0, "failed": 1}
    assert await _errors(live_client, live_tenant, job_id) == [
        ["3", "渠道", "a visit with check-in times stays a visit"]
    ]
    first, second = await _interactions(app, live_tenant)
    assert (first.channel, first.version) == ("visit", 1)
    assert second.checked_out_at is not None and second.checked_out_at.isoformat() == "2026-03-01T04:00:00+00:00"
    async with app.state.sessions() as session:
        updated = (
            await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.workspace_id == live_tenant.id, OutboxEvent.type == "interaction.updated"
                )
            )
        ).one()
    assert updated.data["id"] == str(second.id) and updated.data["changed_fields"] == ["checked_out_at"]
    assert updated.data["checked_out_at"] == "2026-03-01T04:00:00Z" and updated.data["version"] == 2
