"""Automation rules through HTTP and the worker's own job functions against the database: each
trigger and action, exactly once on a re-run and under concurrent runners, the self-trigger refusal
and the chain depth stop, previews against the filter's own count, and care rules moved in."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker, create_async_engine

from app.core import clock, migrations
from app.core.settings import get_settings
from app.models import (
    AutomationRule,
    AutomationRun,
    Customer,
    CustomerStage,
    OutboxEvent,
    SegmentMember,
    Task,
    Ticket,
    WebhookDelivery,
)
from app.services.automation import runs, triggers
from app.workers import automation
from app.workers.worker import Worker
from tests.database import TEST_DATABASE, fresh_database
from tests.factories import Tenant, customer_body
from tests.outreach_helpers import email_channel, events, make_channel, make_customer, message_rows, run_worker
from tests.outreach_stand_ins import mail_server
from tests.receiver import Receiver
from tests.webhook_helpers import run_due

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _job_sessions(db: AsyncSession) -> async_sessionmaker[AsyncSession]:
    """Sessions as a job opens them, on the test's connection: their commits are savepoints."""
    assert isinstance(db.bind, AsyncConnection)
    return async_sessionmaker(bind=db.bind, join_transaction_mode="create_savepoint", expire_on_commit=False)


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _rule(client: httpx.AsyncClient, tenant: Tenant, trigger: dict[str, Any], *actions: dict[str, Any]) -> Any:
    body = {"name": "规则", "trigger": trigger, "actions": list(actions) or [_TASK]}
    response = await client.post("/api/v1/automation-rules", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return response.json()


def _if_match(tenant: Tenant, version: object, who: str = "admin") -> dict[str, str]:
    return {**tenant.headers(who), "If-Match": f'"{version}"'}


_TASK = {"type": "create_task", "title": "生日祝福"}
_BIRTHDAY = {"kind": "date", "date": "birthday", "offset_days": -3}


async def _runs(db: AsyncSession, rule_id: object) -> list[AutomationRun]:
    rows = await db.scalars(
        select(AutomationRun).where(AutomationRun.rule_id == uuid.UUID(str(rule_id))).order_by(AutomationRun.id)
    )
    return list(rows.all())


async def _tasks(db: AsyncSession, tenant: Tenant) -> list[Task]:
    rows = await db.scalars(select(Task).where(Task.workspace_id == tenant.id, Task.origin == "automation"))
    return list(rows.all())


# Saving rules: what is refused, with the field, and changes nothing.


async def test_a_rule_is_created_read_listed_changed_and_deleted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    rule = await _rule(client, tenant, _BIRTHDAY)
    url = f"/api/v1/automation-rules/{rule['id']}"
    read = await client.get(url, headers=tenant.headers("readonly"))
    assert read.status_code == 200 and read.headers["etag"] == '"1"' and read.json() == rule
    assert rule["trigger"]["offset_days"] == -3 and rule["actions"][0]["kind"] == "follow_up"
    listed = await client.get("/api/v1/automation-rules", headers=tenant.headers())
    assert [r["id"] for r in listed.json()["items"]] == [rule["id"]]
    assert (await client.patch(url, json={"active": False}, headers=tenant.headers())).status_code == 428
    assert (await client.patch(url, json={"active": False}, headers=_if_match(tenant, 1, "sales"))).status_code == 403
    changed = await client.patch(url, json={"active": False, "name": "改"}, headers=_if_match(tenant, 1))
    assert changed.status_code == 200, changed.text
    assert (changed.json()["active"], changed.json()["name"], changed.json()["version"]) == (False, "改", 2)
    assert (await client.delete(url, headers=_if_match(tenant, 1))).status_code == 412
    assert (await client.delete(url, headers=_if_match(tenant, 2))).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
    assert (await client.get("/api/v1/automation-rules", headers=tenant.headers())).json()["items"] == []


async def test_a_create_is_idempotent_with_a_key(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    body = {"name": "r", "trigger": _BIRTHDAY, "actions": [_TASK]}
    headers = {**tenant.headers(), "Idempotency-Key": "rule-1"}
    first = await client.post("/api/v1/automation-rules", json=body, headers=headers)
    again = await client.post("/api/v1/automation-rules", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert first.headers["location"] == f"/api/v1/automation-rules/{first.json()['id']}"
    count = await db.scalar(select(func.count()).where(AutomationRule.workspace_id == tenant.id))
    assert count == 1


@pytest.mark.parametrize(
    ("trigger", "actions", "loc", "error_type"),
    [
        ({"kind": "event", "event_type": "customer.exploded"}, None, ["trigger", "event_type"], "value_error"),
        ({"kind": "event", "event_type": "automation.run_failed"}, None, ["trigger", "event_type"], "value_error"),
        ({"kind": "event", "event_type": "team.created"}, None, ["trigger", "event_type"], "value_error"),
        (
            {"kind": "event", "event_type": "lifecycle.stage_changed", "conditions": {"field": "to_planet", "op": "eq",
                                                                                      "value": "x"}},
            None,
            ["trigger", "conditions", "field"],
            "invalid_condition",
        ),
        (
            {"kind": "event", "event_type": "customer.updated", "conditions": {"field": "tags", "op": "like"}},
            None,
            ["trigger", "conditions", "op"],
            "invalid_condition",
        ),
        ({"kind": "schedule", "cron": "every day 9", "audience": {"field": "city", "op": "eq", "value": "x"}}, None,
         ["trigger", "cron"], "invalid_cron"),
        ({"kind": "schedule", "cron": "*/2 * * * *", "audience": {"field": "city", "op": "eq", "value": "x"}}, None,
         ["trigger", "cron"], "invalid_cron"),
        ({"kind": "schedule", "cron": "0,3 9 * * *", "audience": {"field": "city", "op": "eq", "value": "x"}}, None,
         ["trigger", "cron"], "invalid_cron"),
        ({"kind": "schedule", "cron": "0 9 * * *", "audience": {"field": "planet", "op": "eq", "value": "x"}}, None,
         ["trigger", "audience", "field"], "invalid_filter"),
        ({"kind": "date", "date": "fixed", "month": 2, "day": 30}, None, ["trigger", "day"], "value_error"),
        ({"kind": "date", "date": "fixed", "calendar": "lunar", "month": 1}, None, ["trigger", "day"], "value_error"),
        ({"kind": "date", "date": "custom_field", "field_key": "nope"}, None, ["trigger", "field_key"], "value_error"),
        (
            {"kind": "event", "event_type": "customer.updated"},
            [_TASK, {"type": "add_tag", "tag": "x"}],
            ["actions", 1, "type"],
            "self_triggering",
        ),
        (
            {"kind": "event", "event_type": "lifecycle.stage_changed"},
            [{"type": "set_lifecycle_stage", "stage": "loyal"}],
            ["actions", 0, "type"],
            "self_triggering",
        ),
        (_BIRTHDAY, [{"type": "set_lifecycle_stage", "stage": "martian"}], ["actions", 0, "stage"], "value_error"),
        (_BIRTHDAY, [{"type": "add_to_segment", "segment_id": str(uuid.uuid4())}], ["actions", 0, "segment_id"],
         "value_error"),
        (_BIRTHDAY, [{"type": "call_webhook", "endpoint_id": str(uuid.uuid4())}], ["actions", 0, "endpoint_id"],
         "value_error"),
        (_BIRTHDAY, [{**_TASK, "assignee_id": str(uuid.uuid4())}], ["actions", 0, "assignee_id"], "value_error"),
        (_BIRTHDAY, [], ["actions"], "too_short"),
        (_BIRTHDAY, [_TASK] * 11, ["actions"], "too_long"),
        ({"kind": "birthday"}, None, ["trigger"], "union_tag_invalid"),
    ],
)  # fmt: skip
async def test_a_bad_rule_is_422_naming_the_field_and_saves_nothing(
    client: httpx.AsyncClient,
    tenant: Tenant,
    db: AsyncSession,
    trigger: dict[str, Any],
    actions: list[dict[str, Any]] | None,
    loc: list[str | int],
    error_type: str,
) -> None:
    body = {"name": "r", "trigger": trigger, "actions": [_TASK] if actions is None else actions}
    response = await client.post("/api/v1/automation-rules", json=body, headers=tenant.headers())
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["loc"][1 : 1 + len(loc)] == loc, error
    assert error["type"] == error_type, error
    assert await db.scalar(select(func.count()).where(AutomationRule.workspace_id == tenant.id)) == 0


async def test_a_dynamic_segment_is_refused_for_add_to_segment(client: httpx.AsyncClient, tenant: Tenant) -> None:
    dynamic = await client.post(
        "/api/v1/segments",
        json={"name": "d", "kind": "dynamic", "filter": {"field": "city", "op": "eq", "value": "x"}},
        headers=tenant.headers(),
    )
    body = {
        "name": "r",
        "trigger": _BIRTHDAY,
        "actions": [{"type": "add_to_segment", "segment_id": dynamic.json()["id"]}],
    }
    response = await client.post("/api/v1/automation-rules", json=body, headers=tenant.headers())
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "actions", 0, "segment_id"]


async def test_a_bad_change_is_422_and_changes_nothing(client: httpx.AsyncClient, tenant: Tenant) -> None:
    rule = await _rule(client, tenant, {"kind": "event", "event_type": "customer.updated"})
    url = f"/api/v1/automation-rules/{rule['id']}"
    bad = await client.patch(url, json={"actions": [{"type": "add_tag", "tag": "x"}]}, headers=_if_match(tenant, 1))
    assert bad.status_code == 422 and bad.json()["errors"][0]["type"] == "self_triggering"
    null = await client.patch(url, json={"name": None}, headers=_if_match(tenant, 1))
    assert null.status_code == 422 and null.json()["errors"][0]["loc"] == ["body", "name"]
    assert (await client.get(url, headers=tenant.headers())).json() == rule


async def test_another_workspaces_rule_is_404_everywhere(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    rule = await _rule(client, other_tenant, _BIRTHDAY)
    url = f"/api/v1/automation-rules/{rule['id']}"
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
    assert (await client.patch(url, json={"name": "x"}, headers=_if_match(tenant, 1))).status_code == 404
    assert (await client.delete(url, headers=_if_match(tenant, 1))).status_code == 404
    assert (await client.post(f"{url}/preview", headers=tenant.headers())).status_code == 404
    assert (await client.get(f"{url}/runs", headers=tenant.headers())).status_code == 404
    assert (await client.post(f"{url}/run", headers=tenant.headers())).status_code == 404
    stored = await db.get(AutomationRule, (other_tenant.id, uuid.UUID(rule["id"])))
    assert stored is not None and stored.name == "规则" and stored.deleted_at is None


# Date triggers.


async def test_a_birthday_rule_runs_three_days_ahead_once_a_year(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    today = clock.now().astimezone(SHANGHAI).date()
    soon = await _customer(client, tenant, birthday=(today + timedelta(days=2)).replace(year=1990).isoformat())
    await _customer(client, tenant, birthday=(today + timedelta(days=9)).replace(year=1990).isoformat())
    declined = {"email": False, "sms": False}
    await _customer(
        client, tenant, birthday=(today + timedelta(days=1)).replace(year=1991).isoformat(), consent=declined
    )
    rule = await _rule(client, tenant, _BIRTHDAY, {**_TASK, "due_in_days": 1, "priority": "high"})
    sessions = _job_sessions(db)
    assert await automation.run_dates(sessions, now=clock.now(), parallel=1) == 1
    assert await automation.run_dates(sessions, now=clock.now(), parallel=1) == 0
    ran = await client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())
    assert ran.status_code == 200 and ran.json() == {"runs": 0}
    (task,) = await _tasks(db, tenant)
    occasion = today + timedelta(days=2)
    assert str(task.customer_id) == soon and task.priority == "high"
    # Due a day after the occasion's midnight in the workspace's time zone.
    assert task.due_at == datetime(occasion.year, occasion.month, occasion.day, tzinfo=SHANGHAI) + timedelta(days=1)
    (run,) = await _runs(db, rule["id"])
    assert (run.trigger_key, run.occasion, run.depth, run.outcome) == (str(occasion.year), occasion, 1, "ok")
    # The run record keeps the task from being made twice; only care rules' tasks carry a key.
    assert task.dedupe_key is None
    listed = await client.get(f"/api/v1/automation-rules/{rule['id']}/runs", headers=tenant.headers())
    assert listed.json()["items"][0]["actions"] == [
        {"index": 0, "type": "create_task", "outcome": "ok", "detail": None}
    ]


async def test_a_lunar_fixed_date_and_a_positive_offset(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    # 中秋 2027 is 2027-09-15; two days after it is the 17th.
    rule = await _rule(
        client, tenant, {"kind": "date", "date": "fixed", "calendar": "lunar", "month": 8, "day": 15, "offset_days": 2}
    )
    sessions = _job_sessions(db)
    assert await automation.run_dates(sessions, now=datetime(2027, 9, 16, 4, tzinfo=UTC), parallel=1) == 0
    assert await automation.run_dates(sessions, now=datetime(2027, 9, 17, 4, tzinfo=UTC), parallel=1) == 1
    assert await automation.run_dates(sessions, now=datetime(2027, 9, 17, 8, tzinfo=UTC), parallel=1) == 0
    (run,) = await _runs(db, rule["id"])
    assert (str(run.customer_id), run.trigger_key, run.occasion) == (customer, "lunar:2027", date(2027, 9, 15))


async def test_a_date_field_rule_with_an_audience(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    field = {"key": "contract_end", "label": "合同到期", "type": "date"}
    assert (await client.post("/api/v1/custom-fields", json=field, headers=tenant.headers())).status_code == 201
    in_shenzhen = await _customer(
        client, tenant, address={"country": "CN", "city": "深圳"}, custom_fields={"contract_end": "2027-05-10"}
    )
    await _customer(
        client, tenant, address={"country": "CN", "city": "北京"}, custom_fields={"contract_end": "2027-05-10"}
    )
    trigger = {"kind": "date", "date": "custom_field", "field_key": "contract_end", "offset_days": -30,
               "audience": {"field": "city", "op": "eq", "value": "深圳"}}  # fmt: skip
    rule = await _rule(client, tenant, trigger)
    assert await automation.run_dates(_job_sessions(db), now=datetime(2027, 4, 20, 4, tzinfo=UTC), parallel=1) == 1
    (run,) = await _runs(db, rule["id"])
    assert str(run.customer_id) == in_shenzhen and run.occasion == date(2027, 5, 10)


# Schedule triggers.


async def test_a_schedule_fires_once_per_firing_over_its_audience(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    vip = await _customer(client, tenant, tags=["vip"])
    await _customer(client, tenant)
    trigger = {"kind": "schedule", "cron": "0 9 * * 1", "audience": {"field": "tags", "op": "contains", "value": "vip"}}
    rule = await _rule(client, tenant, trigger, {"type": "add_tag", "tag": "周报"})
    stored = await db.get(AutomationRule, (tenant.id, uuid.UUID(rule["id"])))
    assert stored is not None and stored.next_run_at is not None
    first = stored.next_run_at
    # Mondays at 09:00 in Shanghai.
    assert first.astimezone(SHANGHAI).weekday() == 0 and first.astimezone(SHANGHAI).hour == 9
    sessions = _job_sessions(db)
    assert await automation.run_schedules(sessions, now=first - timedelta(minutes=1), parallel=1) == 0
    assert await automation.run_schedules(sessions, now=first + timedelta(minutes=1), parallel=1) == 1
    assert await automation.run_schedules(sessions, now=first + timedelta(minutes=2), parallel=1) == 0
    (run,) = await _runs(db, rule["id"])
    assert (str(run.customer_id), run.trigger_key) == (vip, f"schedule:{first.isoformat().replace('+00:00', 'Z')}")
    await db.refresh(stored)
    assert stored.next_run_at == first + timedelta(days=7)
    # The same firing again records nothing and does nothing.
    async with sessions() as session:
        again = await session.get(AutomationRule, (tenant.id, stored.id))
        assert again is not None
        assert await triggers.fire_schedule(session, again, fired_at=first, now=first) == 0
    customer = await db.get(Customer, (tenant.id, uuid.UUID(vip)))
    assert customer is not None and customer.tags == ["vip", "周报"] and customer.version == 2


# Actions.


async def test_every_internal_action_runs_for_the_customer(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    today = clock.now().astimezone(SHANGHAI).date()
    customer = await _customer(client, tenant, birthday=today.replace(year=1985).isoformat(), tags=["新客"])
    segment = await client.post(
        "/api/v1/segments", json={"name": "生日名单", "kind": "static"}, headers=tenant.headers()
    )
    actions = [
        {"type": "create_task", "title": "电话", "kind": "call_back", "assignee_id": str(tenant.users["sales"].id)},
        {"type": "open_ticket", "subject": "生日礼品寄送", "ticket_type": "inquiry", "priority": "high"},
        {"type": "add_tag", "tag": "生日月"},
        {"type": "remove_tag", "tag": "新客"},
        {"type": "add_to_segment", "segment_id": segment.json()["id"]},
        {"type": "set_lifecycle_stage", "stage": "lead"},
    ]
    rule = await _rule(client, tenant, {"kind": "date", "date": "birthday"}, *actions)
    ran = await client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())
    assert ran.status_code == 200 and ran.json() == {"runs": 1}
    (task,) = await _tasks(db, tenant)
    assert (task.title, task.kind, task.assignee_id) == ("电话", "call_back", tenant.users["sales"].id)
    (ticket,) = (await db.scalars(select(Ticket).where(Ticket.workspace_id == tenant.id))).all()
    assert (ticket.subject, ticket.channel, ticket.priority, str(ticket.customer_id)) == (
        "生日礼品寄送", "automation", "high", customer)  # fmt: skip
    stored = await db.get(Customer, (tenant.id, uuid.UUID(customer)))
    assert stored is not None and stored.tags == ["生日月"]
    member = await db.scalar(select(SegmentMember.customer_id).where(SegmentMember.workspace_id == tenant.id))
    assert str(member) == customer
    seg = (await client.get(f"/api/v1/segments/{segment.json()['id']}", headers=tenant.headers())).json()
    assert seg["member_count"] == 1
    stage = await db.scalar(select(CustomerStage.stage).where(CustomerStage.workspace_id == tenant.id))
    assert stage == "lead"
    # The events its actions emitted name the rule and the chain depth.
    events = (
        await db.scalars(
            select(OutboxEvent).where(
                OutboxEvent.workspace_id == tenant.id, OutboxEvent.actor["type"].astext == "automation"
            )
        )
    ).all()
    assert {e.type for e in events} >= {"ticket.created", "customer.updated", "lifecycle.stage_changed"}
    assert all(e.actor == {"type": "automation", "id": rule["id"], "depth": 1} for e in events)
    assert await client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers()) is not None
    assert len((await db.scalars(select(Ticket).where(Ticket.workspace_id == tenant.id))).all()) == 1


async def test_a_failed_action_is_recorded_on_the_run_with_an_event(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    today = clock.now().astimezone(SHANGHAI).date()
    customer = await _customer(client, tenant, birthday=today.replace(year=1985).isoformat())
    segment = (
        await client.post("/api/v1/segments", json={"name": "s", "kind": "static"}, headers=tenant.headers())
    ).json()
    rule = await _rule(
        client,
        tenant,
        {"kind": "date", "date": "birthday"},
        _TASK,
        {"type": "add_to_segment", "segment_id": segment["id"]},
    )
    gone = await client.delete(f"/api/v1/segments/{segment['id']}", headers=_if_match(tenant, segment["version"]))
    assert gone.status_code == 204
    assert (await client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())).json() == {
        "runs": 1
    }
    failed = await client.get(
        f"/api/v1/automation-rules/{rule['id']}/runs", params={"outcome": "failed"}, headers=tenant.headers()
    )
    (run,) = failed.json()["items"]
    assert run["customer_id"] == customer and run["reason"].startswith("action 1: the segment is gone")
    assert [a["outcome"] for a in run["actions"]] == ["ok", "failed"]
    # The task of the action that worked stays: it ran once, with its run record.
    assert len(await _tasks(db, tenant)) == 1
    event = await db.scalar(
        select(OutboxEvent).where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "automation.run_failed")
    )
    assert event is not None and event.data["run_id"] == run["id"] and event.data["outcome"] == "failed"
    ok = await client.get(
        f"/api/v1/automation-rules/{rule['id']}/runs", params={"outcome": "ok"}, headers=tenant.headers()
    )
    assert ok.json()["items"] == []
    bad = await client.get(
        f"/api/v1/automation-rules/{rule['id']}/runs", params={"outcome": "x"}, headers=tenant.headers()
    )
    assert bad.status_code == 422


async def test_runs_list_by_customer_with_a_cursor(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    today = clock.now().astimezone(SHANGHAI).date()
    ids = [await _customer(client, tenant, birthday=today.replace(year=1980 + i).isoformat()) for i in range(3)]
    rule = await _rule(client, tenant, {"kind": "date", "date": "birthday"})
    assert (await client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())).json() == {
        "runs": 3
    }
    url = f"/api/v1/automation-rules/{rule['id']}/runs"
    first = (await client.get(url, params={"limit": 2}, headers=tenant.headers())).json()
    rest = (await client.get(url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=tenant.headers())).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert {r["customer_id"] for r in first["items"] + rest["items"]} == set(ids)
    one = (await client.get(url, params={"customer_id": ids[1]}, headers=tenant.headers())).json()["items"]
    assert [r["customer_id"] for r in one] == [ids[1]]
    # A salesperson sees the runs of their own customers only.
    assert (await client.get(url, headers=tenant.headers("sales"))).json()["items"] == []


async def test_call_webhook_is_delivered_signed_after_commit(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, receiver: Receiver
) -> None:
    tenant = live_tenant
    today = clock.now().astimezone(SHANGHAI).date()
    customer = await _customer(live_client, tenant, birthday=today.replace(year=1985).isoformat())
    endpoint = await live_client.post(
        "/api/v1/webhook-endpoints",
        json={"url": receiver.url, "event_types": ["ticket.created"]},
        headers=tenant.headers(),
    )
    assert endpoint.status_code == 201, endpoint.text
    receiver.secrets = [endpoint.json()["secret"]]
    rule = await _rule(
        live_client,
        tenant,
        {"kind": "date", "date": "birthday"},
        {"type": "call_webhook", "endpoint_id": endpoint.json()["id"]},
    )
    ran = await live_client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())
    assert ran.json() == {"runs": 1}
    await run_due(app, pool, tenant.id, clock.now())
    (received,) = receiver.received
    body = orjson.loads(received.body)
    assert body["type"] == "automation.webhook_requested"
    assert body["data"]["customer_id"] == customer and body["data"]["rule_id"] == rule["id"]
    assert body["data"]["endpoint_id"] == endpoint.json()["id"] and body["data"]["action_index"] == 0
    async with app.state.sessions() as session:
        (delivery,) = (
            await session.scalars(select(WebhookDelivery).where(WebhookDelivery.workspace_id == tenant.id))
        ).all()
        # The event's id is the idempotency key: a retry of the same call carries the same one.
        assert delivery.state == "succeeded" and received.headers["webhook-id"] == str(delivery.event_id) == body["id"]
        (run,) = (await session.scalars(select(AutomationRun).where(AutomationRun.workspace_id == tenant.id))).all()
        assert run.actions == [{"index": 0, "type": "call_webhook", "outcome": "queued"}]
    # A re-run queues nothing.
    assert (await live_client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())).json() == {
        "runs": 0
    }


# Event triggers: committed events, read by the worker's reaction.


_CAUGHT_UP = text(
    """
SELECT NOT EXISTS (SELECT 1 FROM automation_rules r WHERE r.workspace_id = :ws AND r.trigger_kind = 'event'
                   AND r.active AND r.deleted_at IS NULL)
    OR NOT EXISTS (SELECT 1 FROM outbox_events e JOIN automation_event_cursors c ON c.workspace_id = e.workspace_id
                   WHERE e.workspace_id = :ws AND (e.txid, e.id) > (c.txid, c.event_id))
"""
)


async def _drain(app: FastAPI, tenant: Tenant) -> int:
    """The event reaction's passes until the workspace's cursor is past its every event and a pass
    runs nothing. Events wait below the oldest transaction still running on the server (other
    work's too), so a pass may find nothing yet: it is tried again for up to 30 s."""
    total = 0
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        async with app.state.sessions() as session:
            before = int(await session.scalar(select(func.count()).select_from(AutomationRun)) or 0)
        await automation.run_events(app.state.sessions, now=clock.now())
        async with app.state.sessions() as session:
            after = int(await session.scalar(select(func.count()).select_from(AutomationRun)) or 0)
            caught_up = bool(await session.scalar(_CAUGHT_UP, {"ws": tenant.id}))
        total += after - before
        if caught_up and after == before:
            return total
        if not caught_up:
            await asyncio.sleep(0.1)
    raise AssertionError("the event rules did not settle")


async def test_an_event_rule_runs_on_committed_events_with_conditions_once(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    before = await _customer(live_client, tenant, tags=["vip"])
    trigger = {"kind": "event", "event_type": "customer.created",
               "conditions": {"field": "tags", "op": "contains", "value": "vip"}}  # fmt: skip
    rule = await _rule(live_client, tenant, trigger, {"type": "add_tag", "tag": "欢迎"}, _TASK)
    vip = await _customer(live_client, tenant, tags=["vip"])
    await _customer(live_client, tenant, tags=["普通"])
    assert await _drain(app, tenant) == 1
    async with app.state.sessions() as session:
        (run,) = (await session.scalars(select(AutomationRun).where(AutomationRun.workspace_id == tenant.id))).all()
        assert (str(run.customer_id), run.depth, run.outcome, str(run.rule_id)) == (vip, 1, "ok", rule["id"])
        event = await session.get(OutboxEvent, (tenant.id, run.event_id))
        assert event is not None and event.type == "customer.created" and run.trigger_key == str(event.id)
        tagged = await session.get(Customer, (tenant.id, uuid.UUID(vip)))
        assert tagged is not None and tagged.tags == ["vip", "欢迎"]
        # The customer created before the rule was saved is not its business.
        untouched = await session.get(Customer, (tenant.id, uuid.UUID(before)))
        assert untouched is not None and untouched.tags == ["vip"]
        assert await session.scalar(select(func.count()).where(Task.workspace_id == tenant.id)) == 1
    # Reading the stream again (a cursor put back, say) runs nothing twice.
    async with app.state.sessions() as session:
        await session.execute(
            text("UPDATE automation_event_cursors SET txid = 0 WHERE workspace_id = :ws"), {"ws": tenant.id}
        )
        await session.commit()
    assert await _drain(app, tenant) == 0


async def test_a_chain_of_rules_stops_at_the_depth_limit(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    customer = await _customer(live_client, tenant)
    # A customer change opens a ticket; a ticket tags the customer, which is a customer change...
    opens = await _rule(
        live_client, tenant, {"kind": "event", "event_type": "customer.updated"},
        {"type": "open_ticket", "subject": "跟进"},
    )  # fmt: skip
    tags = await _rule(
        live_client, tenant, {"kind": "event", "event_type": "ticket.created"}, {"type": "add_tag", "tag": "有工单"}
    )
    current = (await live_client.get(f"/api/v1/customers/{customer}", headers=tenant.headers())).json()
    patched = await live_client.patch(
        f"/api/v1/customers/{customer}", json={"name": "李雷"}, headers=_if_match(tenant, current["version"])
    )
    assert patched.status_code == 200
    await _drain(app, tenant)
    async with app.state.sessions() as session:
        done = (
            await session.execute(
                select(AutomationRun.rule_id, AutomationRun.depth, AutomationRun.outcome, AutomationRun.reason)
                .where(AutomationRun.workspace_id == tenant.id)
                .order_by(AutomationRun.depth)
            )
        ).all()
        assert [(str(r), d, o) for r, d, o, _ in done] == [
            (opens["id"], 1, "ok"),
            (tags["id"], 2, "ok"),
            (opens["id"], 3, "ok"),
            (tags["id"], 4, "skipped"),
        ]
        assert done[-1].reason == runs.CHAIN_TOO_DEEP
        assert await session.scalar(select(func.count()).where(Ticket.workspace_id == tenant.id)) == 2
        failed = (
            await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == "automation.run_failed"
                )
            )
        ).all()
        assert [(e.data["outcome"], e.data["depth"], e.data["rule_id"]) for e in failed] == [("skipped", 4, tags["id"])]


async def test_two_concurrent_runners_record_one_run_and_one_task(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    today = clock.now().astimezone(SHANGHAI).date()
    await _customer(live_client, tenant, birthday=today.replace(year=1985).isoformat())
    rule = await _rule(live_client, tenant, {"kind": "date", "date": "birthday"})
    started = asyncio.Barrier(2)

    async def runner() -> int:
        async with app.state.sessions() as session:
            stored = await session.get(AutomationRule, (tenant.id, uuid.UUID(rule["id"])))
            assert stored is not None
            await started.wait()
            made = await triggers.run_date_rule(session, stored, now=clock.now())
            await session.commit()
            return made

    assert sorted(await asyncio.gather(runner(), runner())) == [0, 1]
    async with app.state.sessions() as session:
        assert await session.scalar(select(func.count()).where(AutomationRun.workspace_id == tenant.id)) == 1
        assert await session.scalar(select(func.count()).where(Task.workspace_id == tenant.id)) == 1


# Preview.


async def test_preview_counts_what_the_filter_counts_for_the_caller(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    sales = str(tenant.users["sales"].id)
    for i in range(5):
        await _customer(
            client,
            tenant,
            address={"country": "CN", "city": "深圳" if i % 2 == 0 else "广州"},
            owner_id=sales if i < 2 else None,
        )
    audience = {"field": "city", "op": "eq", "value": "深圳"}
    rule = await _rule(client, tenant, {"kind": "schedule", "cron": "0 9 * * *", "audience": audience})
    url = f"/api/v1/automation-rules/{rule['id']}/preview"
    for who in ("admin", "sales"):
        expected = await client.post("/api/v1/segments/preview", json={"filter": audience}, headers=tenant.headers(who))
        preview = await client.post(url, json={"limit": 2}, headers=tenant.headers(who))
        assert preview.status_code == 200, preview.text
        assert preview.json()["count"] == expected.json()["count"]
        assert len(preview.json()["customers"]) == min(2, expected.json()["count"])
    assert (await client.post(url, json={"limit": 0}, headers=tenant.headers())).status_code == 422
    # A date rule's preview: today's occasions not yet run.
    today = clock.now().astimezone(SHANGHAI).date()
    born = await _customer(client, tenant, birthday=today.replace(year=1970).isoformat())
    dated = await _rule(client, tenant, {"kind": "date", "date": "birthday"})
    durl = f"/api/v1/automation-rules/{dated['id']}"
    shown = (await client.post(f"{durl}/preview", headers=tenant.headers())).json()
    assert shown["count"] == 1
    assert [(c["id"], c["occasion"]) for c in shown["customers"]] == [(born, today.isoformat())]
    await client.post(f"{durl}/run", headers=tenant.headers())
    assert (await client.post(f"{durl}/preview", headers=tenant.headers())).json() == {"count": 0, "customers": []}
    # An event rule cannot run on demand.
    event_rule = await _rule(client, tenant, {"kind": "event", "event_type": "order.created"})
    assert (
        await client.post(f"/api/v1/automation-rules/{event_rule['id']}/run", headers=tenant.headers())
    ).status_code == 409


# Care rules moved into automation rules.


async def test_the_migration_moves_care_rules_and_their_reminders() -> None:
    url = await asyncio.to_thread(fresh_database, f"{TEST_DATABASE}_care_move")
    await asyncio.to_thread(migrations.upgrade, url, "c7e1a0d29f41")
    ws, customer, user = "01900000-0000-7000-8000-00000000000a", "01900000-0000-7000-8000-00000000000b", None
    rule = "01900000-0000-7000-8000-00000000000c"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO workspaces (id, slug, name) VALUES (:ws, 'm', 'M')"), {"ws": ws})
        await conn.execute(
            text(
                "INSERT INTO customers (workspace_id, id, code, kind, name, search_text) "
                "VALUES (:ws, :c, 'KH-1', 'individual', '张伟', '张伟')"
            ),
            {"ws": ws, "c": customer},
        )
        user = await conn.scalar(
            text(
                "INSERT INTO users (workspace_id, id, email, email_key, name, role, password_hash, created_at, "
                "updated_at) VALUES (:ws, guanxi_uuid7(), 'a@example.com', 'a@example.com', 'A', 'admin', 'x', now(), "
                "now()) RETURNING id"
            ),
            {"ws": ws},
        )
        await conn.execute(
            text(
                "INSERT INTO care_rules (workspace_id, id, name, kind, calendar, month, day, lead_days, task_title, "
                "active, created_at, updated_at, version) VALUES (:ws, :r, '春节', 'fixed_date', 'lunar', 1, 1, 3, "
                "'拜年', true, now(), now(), 2)"
            ),
            {"ws": ws, "r": rule},
        )
        await conn.execute(
            text(
                "INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, "
                "origin, dedupe_key, created_at, updated_at, version) VALUES (:ws, guanxi_uuid7(), :c, '拜年', 'care', "
                ":u, '2027-02-05T16:00:00Z', 'normal', 'open', 'care', :key, now(), now(), 1)"
            ),
            {"ws": ws, "c": customer, "u": user, "key": f"care:{rule}:{customer}:lunar:2027"},
        )
    await asyncio.to_thread(migrations.upgrade, url)
    async with engine.connect() as conn:
        moved = (await conn.execute(text("SELECT * FROM automation_rules"))).mappings().one()
        run = (await conn.execute(text("SELECT * FROM automation_runs"))).mappings().one()
    assert (str(moved["id"]), moved["name"], moved["managed_by"], moved["version"]) == (rule, "春节", "care_rules", 2)
    assert moved["trigger"] == {"kind": "date", "date": "fixed", "field_key": None, "month": 1, "day": 1,
                                "calendar": "lunar", "offset_days": -3, "audience": None}  # fmt: skip
    assert moved["actions"] == [{"type": "create_task", "title": "拜年", "kind": "care", "priority": "normal",
                                 "due_in_days": 0, "assignee_id": None}]  # fmt: skip
    assert (str(run["customer_id"]), run["trigger_key"], run["occasion"]) == (customer, "lunar:2027", date(2027, 2, 6))
    await engine.dispose()
    await asyncio.to_thread(migrations.downgrade, url, "c7e1a0d29f41")
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        back = (await conn.execute(text("SELECT name, lead_days, task_title FROM care_rules"))).all()
    await engine.dispose()
    assert back == [("春节", 3, "拜年")]


async def test_care_rules_are_listed_among_automation_rules(client: httpx.AsyncClient, tenant: Tenant) -> None:
    care = await client.post(
        "/api/v1/care-rules", json={"name": "生日", "kind": "birthday", "task_title": "问候"}, headers=tenant.headers()
    )
    listed = (await client.get("/api/v1/automation-rules", headers=tenant.headers())).json()["items"]
    assert [(r["id"], r["managed_by"], r["trigger"]["offset_days"]) for r in listed] == [
        (care.json()["id"], "care_rules", -3)
    ]
    spec = (await client.get("/openapi.json")).json()
    assert spec["paths"]["/api/v1/care-rules"]["post"]["deprecated"] is True


async def test_tasks_of_automation_say_so(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    today = clock.now().astimezone(SHANGHAI).date()
    customer = await _customer(client, tenant, birthday=today.replace(year=1985).isoformat())
    rule = await _rule(client, tenant, {"kind": "date", "date": "birthday"})
    await client.post(f"/api/v1/automation-rules/{rule['id']}/run", headers=tenant.headers())
    listed = await client.get(
        "/api/v1/tasks", params={"customer_id": customer, "view": "all"}, headers=tenant.headers()
    )
    assert [t["origin"] for t in listed.json()["items"]] == ["automation"]


async def test_the_date_schedule_makes_care_reminders(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    today = clock.now().astimezone(SHANGHAI).date()
    customer = await _customer(client, tenant, birthday=(today + timedelta(days=1)).replace(year=1980).isoformat())
    care = await client.post(
        "/api/v1/care-rules", json={"name": "生日", "kind": "birthday", "task_title": "问候"}, headers=tenant.headers()
    )
    assert await automation.run_dates(_job_sessions(db), now=clock.now(), parallel=1) == 1
    (task,) = (await db.scalars(select(Task).where(Task.workspace_id == tenant.id))).all()
    occasion = today + timedelta(days=1)
    assert (task.origin, task.kind, task.title) == ("care", "care", "问候")
    assert task.dedupe_key == f"care:{care.json()['id']}:{customer}:{occasion.year}"
    # The care API's own run now finds it made already.
    ran = await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())
    assert ran.json() == {"created": 0}


async def test_a_large_run_goes_range_by_range_in_parallel_once(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = live_tenant
    today = clock.now().astimezone(SHANGHAI).date()
    made = {await _customer(live_client, tenant, birthday=today.replace(year=1970 + i).isoformat()) for i in range(7)}
    rule = await _rule(live_client, tenant, {"kind": "date", "date": "birthday"}, {"type": "add_tag", "tag": "寿"})
    monkeypatch.setattr(triggers, "CHUNK_CUSTOMERS", 2)
    async with app.state.sessions() as session:
        assert len(await triggers.id_ranges(session, tenant.id)) == 4
    # Two workers' ticks at once, each with two ranges in flight.
    first, second = await asyncio.gather(
        automation.run_dates(app.state.sessions, now=clock.now()),
        automation.run_dates(app.state.sessions, now=clock.now()),
    )
    async with app.state.sessions() as session:
        ran = (
            await session.scalars(
                select(AutomationRun.customer_id).where(AutomationRun.rule_id == uuid.UUID(rule["id"]))
            )
        ).all()
        tagged = (await session.scalars(select(Customer.version).where(Customer.workspace_id == tenant.id))).all()
    assert sorted(str(c) for c in ran) == sorted(made)
    assert first + second == 7
    assert sorted(tagged) == [2] * 7  # each tagged once


async def test_a_running_worker_runs_an_event_rule_on_the_commit(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    rule = await _rule(
        live_client, tenant, {"kind": "event", "event_type": "customer.created"}, {"type": "add_tag", "tag": "新"}
    )
    # With the webhook sweep an hour away, only the NOTIFY sent at commit wakes the worker.
    worker = Worker(get_settings(), database_url, sweep_seconds=3600)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), timeout=10)
        customer = await _customer(live_client, tenant)
        for _ in range(300):  # events wait below the oldest transaction running on the server
            async with app.state.sessions() as session:
                found = await session.scalar(
                    select(AutomationRun).where(AutomationRun.rule_id == uuid.UUID(rule["id"]))
                )
            if found is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=20)
    assert found is not None and str(found.customer_id) == customer and found.outcome == "ok"
    read = await live_client.get(f"/api/v1/customers/{customer}", headers=tenant.headers())
    assert read.json()["tags"] == ["新"]


async def test_a_paused_rule_neither_fires_nor_catches_up_when_resumed(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    rule = await _rule(live_client, tenant, {"kind": "event", "event_type": "customer.created"}, _TASK)
    url = f"/api/v1/automation-rules/{rule['id']}"
    paused = await live_client.patch(url, json={"active": False}, headers=_if_match(tenant, 1))
    assert paused.status_code == 200 and paused.json()["active"] is False
    await _customer(live_client, tenant)
    assert await _drain(app, tenant) == 0
    resumed = await live_client.patch(url, json={"active": True}, headers=_if_match(tenant, 2))
    assert resumed.status_code == 200
    after = await _customer(live_client, tenant)
    assert await _drain(app, tenant) == 1
    async with app.state.sessions() as session:
        (run,) = (await session.scalars(select(AutomationRun).where(AutomationRun.workspace_id == tenant.id))).all()
    assert str(run.customer_id) == after
    # A schedule rule paused has no next firing; resumed, it has one again.
    schedule = await _rule(
        live_client, tenant, {"kind": "schedule", "cron": "*/5 * * * *", "audience": {"field": "tags", "op": "is_null"}}
    )
    surl = f"/api/v1/automation-rules/{schedule['id']}"
    assert schedule["next_run_at"] is not None
    off = await live_client.patch(surl, json={"active": False}, headers=_if_match(tenant, 1))
    assert off.json()["next_run_at"] is None
    on = await live_client.patch(surl, json={"active": True}, headers=_if_match(tenant, 2))
    assert on.json()["next_run_at"] is not None


async def test_an_audience_that_no_longer_compiles_fails_the_run_and_the_stream_moves_on(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    field = await live_client.post(
        "/api/v1/custom-fields", json={"key": "level", "label": "等级", "type": "text"}, headers=tenant.headers()
    )
    audience = {"field": "custom.level", "op": "eq", "value": "A"}
    rule = await _rule(live_client, tenant, {"kind": "event", "event_type": "customer.created", "audience": audience})
    gone = await live_client.delete(
        f"/api/v1/custom-fields/{field.json()['id']}", headers={**tenant.headers(), "If-Match": "*"}
    )
    assert gone.status_code == 204, gone.text
    customer = await _customer(live_client, tenant)
    assert await _drain(app, tenant) == 1
    runs_page = await live_client.get(f"/api/v1/automation-rules/{rule['id']}/runs", headers=tenant.headers())
    (run,) = runs_page.json()["items"]
    assert (run["customer_id"], run["outcome"]) == (customer, "failed") and "level" in run["reason"]
    # Events after it still run (the cursor moved past the failed one).
    async with app.state.sessions() as session:
        cursor = await session.scalar(
            text("SELECT event_id FROM automation_event_cursors WHERE workspace_id = :ws"), {"ws": tenant.id}
        )
        event = await session.get(OutboxEvent, (tenant.id, uuid.UUID(run["event_id"])))
    assert event is not None and cursor is not None and cursor >= event.id


async def test_send_message_goes_through_the_message_writer_once(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    tenant = live_tenant
    today = clock.now().astimezone(SHANGHAI).date()
    birthday = today.replace(year=1985).isoformat()
    template = {
        "name": "生日祝福",
        "channel": "email",
        "subject": "{{ customer.name }}，生日快乐",
        "body": "亲爱的{{ customer.name }}：优惠码 {{ vars.coupon }}",
        "variables": ["coupon"],
    }
    made = await live_client.post("/api/v1/message-templates", json=template, headers=tenant.headers())
    assert made.status_code == 201, made.text
    with mail_server() as mail:
        channel = await make_channel(live_client, tenant, email_channel(mail))
        consenting = await make_customer(live_client, tenant, name="王芳", birthday=birthday, consent={"email": True})
        declined = await make_customer(
            live_client, tenant, name="李雷", birthday=birthday, consent={"email": False, "sms": True}
        )
        action = {"type": "send_message", "channel_id": channel["id"], "template_id": made.json()["id"],
                  "variables": {"coupon": "BDAY-2026"}}  # fmt: skip
        # Refused at save: another kind's template would fail for every customer, a variable missing too.
        bad = await live_client.post(
            "/api/v1/automation-rules",
            json={
                "name": "r",
                "trigger": {"kind": "date", "date": "birthday"},
                "actions": [{**action, "variables": {}}],
            },
            headers=tenant.headers(),
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == [
            "body",
            "actions",
            0,
            "variables",
            "coupon",
        ]
        rule = await _rule(live_client, tenant, {"kind": "date", "date": "birthday"}, action)
        url = f"/api/v1/automation-rules/{rule['id']}"
        assert (await live_client.post(f"{url}/run", headers=tenant.headers())).json() == {"runs": 2}
        assert (await live_client.post(f"{url}/run", headers=tenant.headers())).json() == {"runs": 0}
        # A second runner of the same trigger (its run records gone, say) finds the message queued.
        async with app.state.sessions() as session:
            await session.execute(text("DELETE FROM automation_runs WHERE rule_id = :r"), {"r": rule["id"]})
            await session.commit()
        assert (await live_client.post(f"{url}/run", headers=tenant.headers())).json() == {"runs": 2}
        queued = await message_rows(app, tenant.id)
        assert [(str(m.customer_id), m.source) for m in queued] == [(consenting["id"], f"automation:{rule['id']}")]
        assert await run_worker(app, database_url) == 1
    (mail_to,) = mail.received
    assert mail_to["Subject"] == "王芳，生日快乐" and "BDAY-2026" in mail_to.get_content()
    # Its outcome carries the rule and the chain depth, so rules reacting to it count in the chain.
    (sent,) = await events(app, tenant.id, "message.sent")
    assert sent.actor == {"type": "automation", "id": rule["id"], "depth": 1}
    page = (await live_client.get(f"{url}/runs", headers=tenant.headers())).json()["items"]
    by_customer = {r["customer_id"]: r for r in page}
    assert by_customer[consenting["id"]]["actions"][0]["outcome"] == "queued"
    skipped = by_customer[declined["id"]]
    assert skipped["outcome"] == "ok" and skipped["actions"][0]["outcome"] == "skipped"
    assert skipped["actions"][0]["detail"].startswith("consent_required")
