"""Care rules read, changed and deleted; follow-up plans deleted; lunar care dates against known
days; and every path that makes a task gives it somebody."""

import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from lunar_python import LunarMonth, Solar
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models import AuditEntry, AutomationRule, FollowUpPlan, Task, User
from app.services.engagement import follow_ups, lunar_dates
from tests.factories import Tenant, customer_body, make_api_key


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _rule(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> dict[str, Any]:
    body: dict[str, object] = {"name": "关怀", "kind": "birthday", "task_title": "问候"} | fields
    response = await client.post("/api/v1/care-rules", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/v1/care-rules/{response.json()['id']}"
    return dict(response.json())


def _at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """The plans' and care rules' runs see `moment` as now; tokens keep the real time."""
    monkeypatch.setattr(follow_ups, "clock", SimpleNamespace(now=lambda: moment))


def _if_match(tenant: Tenant, version: object, who: str = "admin") -> dict[str, str]:
    return {**tenant.headers(who), "If-Match": f'"{version}"'}


async def _run(client: httpx.AsyncClient, tenant: Tenant) -> int:
    response = await client.post("/api/v1/follow-up-plans/run", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return int(response.json()["created"])


async def _tasks(db: AsyncSession, tenant: Tenant, **where: object) -> list[Task]:
    clauses = [getattr(Task, name) == value for name, value in where.items()]
    rows = await db.scalars(select(Task).where(Task.workspace_id == tenant.id, *clauses).order_by(Task.id))
    return list(rows.all())


# Lunar dates against days the library and the published calendars agree on.


def test_spring_festival_and_mid_autumn_2027() -> None:
    assert lunar_dates.to_gregorian(2027, 1, 1) == date(2027, 2, 6)
    assert lunar_dates.to_gregorian(2027, 8, 15) == date(2027, 9, 15)
    assert lunar_dates.to_gregorian(2026, 1, 1) == date(2026, 2, 17)


def test_a_30th_the_month_lacks_is_its_last_day() -> None:
    # Lunar 2024's twelfth month has 29 days: 除夕 is its 29th, 2025-01-28.
    assert LunarMonth.fromYm(2024, 12).getDayCount() == 29
    assert lunar_dates.to_gregorian(2024, 12, 30) == date(2025, 1, 28)
    assert lunar_dates.to_gregorian(2024, 12, 29) == date(2025, 1, 28)
    on_the_eve = {(o.month, o.day) for o in lunar_dates.occurrences(date(2025, 1, 28), 0)}
    assert on_the_eve == {(12, 29), (12, 30), (12, 31)}
    # A 30-day month keeps its 30th: lunar 2023's twelfth month ends 2024-02-09.
    assert LunarMonth.fromYm(2023, 12).getDayCount() == 30
    assert lunar_dates.to_gregorian(2023, 12, 30) == date(2024, 2, 9)


def test_a_leap_month_is_no_occurrence() -> None:
    # 2025 has a leap sixth month (闰六月), 2025-07-25 to 2025-08-22; the ordinary 6/10 is 2025-07-04.
    assert Solar.fromYmd(2025, 7, 25).getLunar().getMonth() == -6
    assert lunar_dates.to_gregorian(2025, 6, 10) == date(2025, 7, 4)
    in_leap_month = lunar_dates.occurrences(date(2025, 7, 25), 28)
    assert in_leap_month == []
    assert [(o.month, o.day, o.on) for o in lunar_dates.occurrences(date(2025, 8, 23), 0)] == [
        (7, 1, date(2025, 8, 23))
    ]


def test_occurrences_carry_the_lunar_year_across_new_year() -> None:
    found = {(o.lunar_year, o.month, o.day): o.on for o in lunar_dates.occurrences(date(2027, 2, 5), 1)}
    assert found == {
        (2026, 12, 29): date(2027, 2, 5),
        (2026, 12, 30): date(2027, 2, 5),
        (2026, 12, 31): date(2027, 2, 5),
        (2027, 1, 1): date(2027, 2, 6),
    }


def test_the_range_1900_to_2100() -> None:
    assert lunar_dates.to_gregorian(1900, 1, 1) == date(1900, 1, 31)
    assert lunar_dates.to_gregorian(2100, 1, 1) == date(2100, 2, 9)


# Lunar care rules through the API and the scheduler's statement.


async def test_spring_festival_reminders_fall_on_2027_02_06_for_everyone(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    owned = await _customer(client, tenant, owner_id=str(tenant.users["sales"].id))
    nobodys = await _customer(client, tenant, owner_id=None)
    rule = await _rule(client, tenant, name="春节", kind="fixed_date", calendar="lunar", month=1, day=1, lead_days=3)
    assert rule["calendar"] == "lunar"
    # 2027-02-02 in Asia/Shanghai: the festival is four days away, outside a three-day lead.
    _at(monkeypatch, datetime(2027, 2, 2, 2, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 0
    _at(monkeypatch, datetime(2027, 2, 3, 2, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 2
    assert await _run(client, tenant) == 0
    tasks = {str(t.customer_id): t for t in await _tasks(db, tenant, origin="care")}
    assert set(tasks) == {owned, nobodys}
    # Midnight of 2027-02-06 in the workspace's time zone.
    assert {t.due_at for t in tasks.values()} == {datetime(2027, 2, 5, 16, 0, tzinfo=UTC)}
    assert tasks[owned].assignee_id == tenant.users["sales"].id
    assert tasks[nobodys].assignee_id == tenant.users["admin"].id
    assert tasks[owned].dedupe_key == f"care:{rule['id']}:{owned}:lunar:2027"


async def test_mid_autumn_2027(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _customer(client, tenant)
    await _rule(client, tenant, name="中秋", kind="fixed_date", calendar="lunar", month=8, day=15, lead_days=0)
    _at(monkeypatch, datetime(2027, 9, 14, 17, 0, tzinfo=UTC))  # 01:00 on the 15th in Shanghai
    assert await _run(client, tenant) == 1
    (task,) = await _tasks(db, tenant, origin="care")
    assert task.due_at == datetime(2027, 9, 14, 16, 0, tzinfo=UTC)


async def test_a_lunar_birthday_on_a_30th_the_year_lacks_falls_on_the_29th(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Born on lunar 12/30 (stored as the lunar month and day); lunar 2024's twelfth month has 29 days.
    born_30th = await _customer(client, tenant, birthday="1990-12-30")
    born_29th = await _customer(client, tenant, birthday="1992-12-29")
    await _customer(client, tenant, birthday="1992-12-30", consent={"email": False, "sms": False})
    await _rule(client, tenant, name="农历生日", kind="birthday", calendar="lunar", lead_days=3)
    _at(monkeypatch, datetime(2025, 1, 25, 4, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 2
    tasks = await _tasks(db, tenant, origin="care")
    assert {str(t.customer_id) for t in tasks} == {born_30th, born_29th}
    assert {t.due_at for t in tasks} == {datetime(2025, 1, 27, 16, 0, tzinfo=UTC)}  # 2025-01-28 in Shanghai


async def test_a_lunar_birthday_is_kept_in_the_ordinary_month_not_the_leap_one(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = await _customer(client, tenant, birthday="1980-06-10")
    await _rule(client, tenant, name="农历生日", kind="birthday", calendar="lunar", lead_days=5)
    # The leap sixth month's 10th is 2025-08-03: no reminder.
    _at(monkeypatch, datetime(2025, 7, 30, 4, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 0
    # The ordinary sixth month's 10th is 2025-07-04.
    _at(monkeypatch, datetime(2025, 7, 1, 4, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 1
    (task,) = await _tasks(db, tenant, origin="care")
    assert str(task.customer_id) == customer
    assert task.due_at == datetime(2025, 7, 3, 16, 0, tzinfo=UTC)


async def test_a_lunar_date_custom_field(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    field = await client.post(
        "/api/v1/custom-fields", json={"key": "wedding", "label": "婚礼", "type": "date"}, headers=tenant.headers()
    )
    assert field.status_code == 201, field.text
    customer = await _customer(client, tenant, custom_fields={"wedding": "2010-08-15"})
    await _rule(client, tenant, name="纪念日", kind="custom_date", calendar="lunar", field_key="wedding", lead_days=1)
    _at(monkeypatch, datetime(2027, 9, 14, 4, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 1
    (task,) = await _tasks(db, tenant, origin="care")
    assert str(task.customer_id) == customer and task.due_at == datetime(2027, 9, 14, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "fixed_date", "calendar": "lunar", "month": 1, "day": 31}, "day"),
        ({"kind": "fixed_date", "calendar": "gregorian", "month": 2, "day": 30}, "day"),
        ({"kind": "fixed_date", "calendar": "lunar", "month": 1}, "day"),
        ({"kind": "birthday", "calendar": "chinese"}, "calendar"),
    ],
)
async def test_impossible_dates_are_422_and_add_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, body: dict[str, object], field: str
) -> None:
    response = await client.post(
        "/api/v1/care-rules", json={"name": "x", "task_title": "t"} | body, headers=tenant.headers()
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == field
    assert (await db.scalars(select(AutomationRule).where(AutomationRule.workspace_id == tenant.id))).all() == []


# Care rules: read, change, delete.


async def test_read_change_and_delete_a_care_rule(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = await _rule(client, tenant, lead_days=3)
    read = await client.get(f"/api/v1/care-rules/{rule['id']}", headers=tenant.headers("readonly"))
    assert read.status_code == 200 and read.headers["etag"] == '"1"'
    assert read.json() == rule
    url = f"/api/v1/care-rules/{rule['id']}"
    assert (await client.patch(url, json={"lead_days": 5}, headers=tenant.headers())).status_code == 428
    assert (await client.patch(url, json={"lead_days": 5}, headers=_if_match(tenant, 7))).status_code == 412
    assert (await client.patch(url, json={"lead_days": 5}, headers=_if_match(tenant, 1, "sales"))).status_code == 403
    changed = await client.patch(
        url,
        json={"kind": "fixed_date", "calendar": "lunar", "month": 8, "day": 15, "name": "中秋"},
        headers=_if_match(tenant, 1, "manager"),
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"'
    assert {k: changed.json()[k] for k in ("kind", "calendar", "month", "day", "name", "version")} == {
        "kind": "fixed_date",
        "calendar": "lunar",
        "month": 8,
        "day": 15,
        "name": "中秋",
        "version": 2,
    }
    entry = await db.scalar(
        select(AuditEntry).where(AuditEntry.entity_id == uuid.UUID(rule["id"]), AuditEntry.action == "updated")
    )
    assert entry is not None and entry.changes["calendar"] == {"before": "gregorian", "after": "lunar"}
    # Unchanged values keep the version.
    same = await client.patch(url, json={"day": 15}, headers=_if_match(tenant, 2))
    assert same.json()["version"] == 2
    # A reminder it created stays when it goes.
    _at(monkeypatch, datetime(2027, 9, 14, 4, 0, tzinfo=UTC))
    await _customer(client, tenant)
    assert await _run(client, tenant) == 1
    assert (await client.delete(url, headers=tenant.headers())).status_code == 428
    assert (await client.delete(url, headers=_if_match(tenant, 1))).status_code == 412
    assert (await client.delete(url, headers=_if_match(tenant, 2, "support"))).status_code == 403
    assert (await client.delete(url, headers=_if_match(tenant, 2))).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
    assert [t.status for t in await _tasks(db, tenant, origin="care")] == ["open"]
    assert await _run(client, tenant) == 0
    deleted = await db.scalar(
        select(AuditEntry).where(AuditEntry.entity_id == uuid.UUID(rule["id"]), AuditEntry.action == "deleted")
    )
    assert deleted is not None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"kind": "fixed_date"}, "month"),
        ({"kind": "custom_date", "field_key": "nope"}, "field_key"),
        ({"name": None}, "name"),
        ({"lead_days": 61}, "lead_days"),
        ({"calendar": "lunar", "kind": "fixed_date", "month": 2, "day": 31}, "day"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_a_bad_care_rule_change_is_422_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, patch: dict[str, object], field: str
) -> None:
    rule = await _rule(client, tenant)
    url = f"/api/v1/care-rules/{rule['id']}"
    response = await client.patch(url, json=patch, headers=_if_match(tenant, 1))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == field
    assert (await client.get(url, headers=tenant.headers())).json() == rule


async def test_another_workspaces_care_rule_and_plan_are_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: AsyncSession
) -> None:
    rule = await _rule(client, other_tenant)
    plan = await client.post(
        "/api/v1/follow-up-plans",
        json={"name": "月度", "rule": "every_n_days", "days": 30, "task_title": "回访"},
        headers=other_tenant.headers(),
    )
    rule_url, plan_url = f"/api/v1/care-rules/{rule['id']}", f"/api/v1/follow-up-plans/{plan.json()['id']}"
    assert (await client.get(rule_url, headers=tenant.headers())).status_code == 404
    assert (await client.patch(rule_url, json={"lead_days": 1}, headers=_if_match(tenant, 1))).status_code == 404
    assert (await client.delete(rule_url, headers=_if_match(tenant, 1))).status_code == 404
    assert (await client.delete(plan_url, headers=_if_match(tenant, 1))).status_code == 404
    assert await db.get(AutomationRule, (other_tenant.id, uuid.UUID(rule["id"]))) is not None
    assert await db.get(FollowUpPlan, (other_tenant.id, uuid.UUID(plan.json()["id"]))) is not None


async def test_deleting_a_plan_keeps_its_tasks(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    customer = await _customer(client, tenant)
    plan = (
        await client.post(
            "/api/v1/follow-up-plans",
            json={"name": "月度", "rule": "every_n_days", "days": 30, "task_title": "回访"},
            headers=tenant.headers(),
        )
    ).json()
    assert await _run(client, tenant) == 1
    url = f"/api/v1/follow-up-plans/{plan['id']}"
    assert (await client.delete(url, headers=tenant.headers())).status_code == 428
    assert (await client.delete(url, headers=_if_match(tenant, 9))).status_code == 412
    assert (await client.delete(url, headers=_if_match(tenant, 1, "sales"))).status_code == 403
    assert (await client.delete(url, headers=_if_match(tenant, 1, "manager"))).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
    (task,) = await _tasks(db, tenant, origin="plan")
    assert (str(task.customer_id), task.status, task.plan_id, task.version) == (customer, "open", None, 2)
    assert await _run(client, tenant) == 0
    assert (await client.delete(url, headers=_if_match(tenant, 1))).status_code == 404


async def test_a_task_completes_without_a_body(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    task = await client.post(
        "/api/v1/tasks",
        json={"customer_id": customer, "title": "回电", "due_at": clock.now().isoformat()},
        headers=tenant.headers(),
    )
    done = await client.post(f"/api/v1/tasks/{task.json()['id']}/complete", headers=tenant.headers())
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["interaction_id"]) == ("done", None)
    other = await client.post(
        "/api/v1/tasks",
        json={"customer_id": customer, "title": "回电", "due_at": clock.now().isoformat()},
        headers=tenant.headers(),
    )
    bad = await client.post(
        f"/api/v1/tasks/{other.json()['id']}/complete", json={"interaction_id": "x"}, headers=tenant.headers()
    )
    assert bad.status_code == 422


# A task is never nobody's.


async def test_every_path_gives_a_customer_without_owner_somebody(
    app: Any, client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobodys = await _customer(client, tenant, owner_id=None, birthday="1990-03-10")
    admin, sales = tenant.users["admin"].id, tenant.users["sales"].id
    # An API key is nobody: its task goes to the fallback.
    key = await make_api_key(db, tenant)
    made = await client.post(
        "/api/v1/tasks",
        json={"customer_id": nobodys, "title": "回电", "due_at": clock.now().isoformat()},
        headers={"X-API-Key": key},
    )
    assert made.status_code == 201, made.text
    assert made.json()["assignee_id"] == str(admin)
    await client.post(
        "/api/v1/follow-up-plans",
        json={"name": "月度", "rule": "every_n_days", "days": 30, "task_title": "回访"},
        headers=tenant.headers(),
    )
    await _rule(client, tenant, name="生日", kind="birthday", lead_days=3)
    await _rule(client, tenant, name="春节", kind="fixed_date", calendar="lunar", month=1, day=1, lead_days=3)
    _at(monkeypatch, datetime(2027, 2, 4, 4, 0, tzinfo=UTC))
    assert await _run(client, tenant) == 2  # the plan and 春节; the birthday is in March
    _at(monkeypatch, datetime(2027, 3, 8, 4, 0, tzinfo=UTC))
    # With a default assignee, it is theirs.
    workspace = (await client.get("/api/v1/workspace", headers=tenant.headers())).json()
    patched = await client.patch(
        "/api/v1/workspace", json={"default_assignee_id": str(sales)}, headers=_if_match(tenant, workspace["version"])
    )
    assert patched.status_code == 200, patched.text
    assert await _run(client, tenant) == 1  # the birthday
    by_origin: dict[str, set[uuid.UUID]] = {}
    for task in await _tasks(db, tenant):
        by_origin.setdefault(task.origin, set()).add(task.assignee_id)
    assert by_origin == {"manual": {admin}, "plan": {admin}, "care": {admin, sales}}
    # A default assignee who is deactivated is passed over for the earliest active admin.
    await db.execute(update(User).where(User.workspace_id == tenant.id, User.id == sales).values(is_active=False))
    later = await client.post(
        "/api/v1/tasks",
        json={"customer_id": nobodys, "title": "回电", "due_at": clock.now().isoformat()},
        headers={"X-API-Key": key},
    )
    assert later.json()["assignee_id"] == str(admin)


async def test_a_task_cannot_be_unassigned(client: httpx.AsyncClient, tenant: Tenant) -> None:
    customer = await _customer(client, tenant)
    task = (
        await client.post(
            "/api/v1/tasks",
            json={"customer_id": customer, "title": "回电", "due_at": clock.now().isoformat()},
            headers=tenant.headers(),
        )
    ).json()
    response = await client.patch(
        f"/api/v1/tasks/{task['id']}", json={"assignee_id": None}, headers=_if_match(tenant, task["version"])
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "assignee_id"]


async def test_purchase_and_ticket_plans_give_a_customer_without_owner_the_fallback(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobodys = await _customer(client, tenant, owner_id=None)
    for rule in ("days_after_first_purchase", "days_after_ticket_resolved"):
        plan = await client.post(
            "/api/v1/follow-up-plans",
            json={"name": rule, "rule": rule, "days": 1, "task_title": rule},
            headers=tenant.headers(),
        )
        assert plan.status_code == 201, plan.text
    order = {
        "external_id": "SO-1",
        "customer_id": nobodys,
        "ordered_at": clock.now().isoformat(),
        "currency": "CNY",
        "total_amount": "10.00",
        "lines": [{"sku": "s", "product_name": "p", "quantity": "1", "unit_price": "10.00"}],
    }
    assert (await client.post("/api/v1/orders", json=order, headers=tenant.headers())).status_code == 201
    ticket = await client.post(
        "/api/v1/tickets",
        json={"customer_id": nobodys, "type": "complaint", "channel": "phone", "subject": "包装破损"},
        headers=tenant.headers(),
    )
    resolved = await client.post(
        f"/api/v1/tickets/{ticket.json()['id']}/transition", json={"status": "resolved"}, headers=tenant.headers()
    )
    assert resolved.status_code == 200, resolved.text
    _at(monkeypatch, clock.now() + timedelta(days=3))
    assert await _run(client, tenant) == 2
    tasks = await _tasks(db, tenant, origin="plan")
    assert sorted(t.title for t in tasks) == ["days_after_first_purchase", "days_after_ticket_resolved"]
    assert {t.assignee_id for t in tasks} == {tenant.users["admin"].id}
