"""One serialiser for times (RFC 3339, UTC, `Z`) and one for money (the currency's decimals), in
responses, exports and event payloads alike, and their SQL forms writing the same text."""

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.wire import money_text, money_text_sql, utc_text, utc_text_sql
from app.models import OutboxEvent, Workspace
from app.services.bulk import exports
from tests.factories import Tenant, customer_body

SHANGHAI = timezone(timedelta(hours=8))


async def _customer(client: httpx.AsyncClient, tenant: Tenant) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _event_data(db: AsyncSession, tenant: Tenant, event_type: str) -> dict[str, object]:
    data = await db.scalar(
        select(OutboxEvent.data)
        .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == event_type)
        .order_by(OutboxEvent.id.desc())
        .limit(1)
    )
    assert isinstance(data, dict), event_type
    return data


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 22, 8, 30, tzinfo=UTC),
        datetime(2026, 11, 22, 8, 30, 5, 120000, tzinfo=UTC),
        datetime(2026, 11, 22, 16, 30, 0, 1, tzinfo=SHANGHAI),
        datetime(1900, 1, 1, 7, 59, 59, 500000, tzinfo=SHANGHAI),
    ],
)
async def test_the_time_serialisers_write_one_text(db: AsyncSession, moment: datetime) -> None:
    expected = utc_text(moment)
    assert expected.endswith("Z") and datetime.fromisoformat(expected) == moment
    # The JSON encoder of every response, for the UTC times that reach it.
    assert orjson.dumps(moment.astimezone(UTC), option=orjson.OPT_UTC_Z).decode() == f'"{expected}"'
    written = await db.scalar(text(f"SELECT {utc_text_sql('CAST(:t AS timestamptz)')}"), {"t": moment})
    assert written == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12900", "CNY", "12900.00"),
        ("12900.0000", "JPY", "12900"),
        ("0", "CNY", "0.00"),
        ("45.5", "CNY", "45.50"),
        ("1.005", "CNY", "1.01"),
        ("2.5", "JPY", "3"),
        ("-2.5", "JPY", "-3"),
        ("1.2345", "KWD", "1.235"),
    ],
)
async def test_the_money_serialisers_write_one_text(
    db: AsyncSession, amount: str, currency: str, expected: str
) -> None:
    assert money_text(Decimal(amount), currency) == expected
    places = {"CNY": 2, "JPY": 0, "KWD": 3}[currency]
    written = await db.scalar(
        text(f"SELECT {money_text_sql('CAST(:a AS numeric)', 'CAST(:p AS integer)')}"), {"a": amount, "p": places}
    )
    assert written == expected


async def test_a_time_sent_at_plus_eight_comes_back_in_utc_everywhere(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    contact = {
        "customer_id": customer,
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": "2026-11-22T16:30:00+08:00",
        "outcome": "reached",
    }
    created = await client.post("/api/v1/interactions", json=contact, headers=tenant.headers())
    assert created.status_code == 201, created.text
    assert created.json()["occurred_at"] == "2026-11-22T08:30:00Z"
    read = await client.get(f"/api/v1/interactions/{created.json()['id']}", headers=tenant.headers())
    assert read.json()["occurred_at"] == "2026-11-22T08:30:00Z"
    assert (await _event_data(db, tenant, "interaction.created"))["occurred_at"] == "2026-11-22T08:30:00Z"
    due = (datetime.now(SHANGHAI) + timedelta(days=2)).replace(microsecond=0)
    task = await client.post(
        "/api/v1/tasks",
        json={"customer_id": customer, "title": "回访", "due_at": due.isoformat()},
        headers=tenant.headers(),
    )
    assert task.status_code == 201, task.text
    assert task.json()["due_at"] == utc_text(due)
    summary = (await client.get(f"/api/v1/customers/{customer}/summary", headers=tenant.headers())).json()
    assert summary["last_contact"]["at"] == "2026-11-22T08:30:00Z"
    assert summary["next_follow_up"]["due_at"] == utc_text(due)


async def test_an_export_writes_times_in_utc(app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant) -> None:
    assert (
        await live_client.post("/api/v1/customers", json=customer_body(), headers=live_tenant.headers())
    ).status_code == 201
    queued = (await live_client.post("/api/v1/exports", json={}, headers=live_tenant.headers())).json()
    await exports.process(app.state.sessions, uuid.UUID(queued["id"]), live_tenant.id)
    download = await live_client.get(f"/api/v1/exports/{queued['id']}/download", headers=live_tenant.headers())
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert len(rows) == 1
    created_at = rows[0]["created_at"]
    assert created_at.endswith("Z") and datetime.fromisoformat(created_at).tzinfo is not None


@pytest.mark.parametrize(("currency", "amount", "expected"), [("CNY", "12900", "12900.00"), ("JPY", "12900", "12900")])
async def test_money_is_written_in_its_currencys_decimals(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, currency: str, amount: str, expected: str
) -> None:
    await db.execute(update(Workspace).where(Workspace.id == tenant.id).values(currency=currency))
    await db.commit()
    customer = await _customer(client, tenant)
    order = {
        "external_id": "SO-1",
        "customer_id": customer,
        "ordered_at": "2026-11-01T18:00:00+08:00",
        "currency": currency,
        "total_amount": amount,
        "lines": [{"sku": "TEA-1", "product_name": "龙井茶", "quantity": "1", "unit_price": amount}],
    }
    created = await client.post("/api/v1/orders", json=order, headers=tenant.headers())
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["total_amount"], body["refunded_amount"]) == (expected, money_text(Decimal(0), currency))
    assert body["lines"][0]["unit_price"] == expected and body["lines"][0]["quantity"] == "1"
    assert body["ordered_at"] == "2026-11-01T10:00:00Z"
    event = await _event_data(db, tenant, "order.created")
    assert event["total_amount"] == expected and event["ordered_at"] == "2026-11-01T10:00:00Z"
    listed = (await client.get(f"/api/v1/customers/{customer}/orders", headers=tenant.headers())).json()
    assert listed["items"][0]["total_amount"] == expected
    value = (await client.get(f"/api/v1/customers/{customer}/value", headers=tenant.headers())).json()
    assert value["total_spend"] == value["ltv_historical"] == value["avg_order_value"] == expected
    assert value["favourite_categories"] == [] or value["favourite_categories"][0]["spend"] == expected
    report = (await client.get("/api/v1/reports/value", headers=tenant.headers())).json()
    assert report["top_customers"][0]["total_spend"] == expected
    assert report["by_tier"][0]["revenue"] == expected
    timeline = (await client.get(f"/api/v1/customers/{customer}/timeline", headers=tenant.headers())).json()
    assert [i["data"]["total_amount"] for i in timeline["items"] if i["type"] == "order"] == [expected]
    report_csv = await client.get("/api/v1/reports/value", headers={**tenant.headers(), "Accept": "text/csv"})
    assert expected in {row[3] for row in csv.reader(io.StringIO(report_csv.text))}


async def test_the_document_describes_money_and_times_as_sent(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    total = schemas["OrderOut"]["properties"]["total_amount"]
    assert total["type"] == "string" and total["pattern"] and total["examples"] == ["12900.00"]
    spend = schemas["CustomerValueOut"]["properties"]["total_spend"]
    assert spend["type"] == "string" and spend["pattern"]
    assert schemas["OrderOut"]["properties"]["ordered_at"] == {
        "format": "date-time",
        "title": "Ordered At",
        "type": "string",
    }


def _times_in(value: object) -> list[str]:
    """Every string in a JSON document that reads as a date-time."""
    if isinstance(value, dict):
        return [t for item in value.values() for t in _times_in(item)]
    if isinstance(value, list):
        return [t for item in value for t in _times_in(item)]
    if isinstance(value, str) and len(value) > 10 and value[10:11] == "T":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return []
        return [value]
    return []


async def test_a_ticket_and_its_deadlines_are_written_in_utc(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    # Deadlines are counted in the workspace's business hours (Asia/Shanghai), never sent as such.
    customer = await _customer(client, tenant)
    body = {"customer_id": customer, "type": "complaint", "channel": "phone", "subject": "包装破损"}
    created = await client.post("/api/v1/tickets", json=body, headers=tenant.headers())
    assert created.status_code == 201, created.text
    times = _times_in(created.json())
    assert times and all(t.endswith("Z") for t in times), times
    read = await client.get(f"/api/v1/tickets/{created.json()['id']}", headers=tenant.headers())
    assert read.json() == created.json()
    event = await _event_data(db, tenant, "ticket.created")
    assert all(t.endswith("Z") for t in _times_in(event)), event
