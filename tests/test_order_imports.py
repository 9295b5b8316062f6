"""Order imports: one row per line grouped into orders, CSV (UTF-8 BOM, GB18030) and XLSX, idempotent
upserts by (source, external_id), whole-order rejection, value figures, events, visibility and tenancy."""

import asyncio
import csv
import io
import json
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openpyxl
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from app import cli
from app.core.access import system_caller
from app.models import (
    AuditEntry,
    CustomerStage,
    CustomerValue,
    ImportJob,
    Order,
    OrderLine,
    OutboxEvent,
)
from app.schemas.order import OrderOut
from app.services.bulk import import_jobs, order_imports
from app.services.segments import lifecycle
from app.services.value import customer_values
from tests.factories import Tenant
from tests.import_helpers import create_customer, queue_and_run

MAPPING = {
    "订单号": "external_id",
    "来源": "source",
    "客户编号": "customer_code",
    "手机": "customer_phone",
    "下单时间": "ordered_at",
    "状态": "status",
    "订单金额": "total_amount",
    "退款": "refunded_amount",
    "商品编码": "sku",
    "商品": "product_name",
    "品类": "category",
    "数量": "quantity",
    "单价": "unit_price",
}


def _row(**cells: str) -> list[str]:
    return [cells.get(field, "") for field in MAPPING.values()]


def _csv(rows: list[list[str]], encoding: str) -> bytes:
    return ("\n".join([",".join(MAPPING), *(",".join(row) for row in rows)]) + "\n").encode(encoding)


def _line(order: str, code: str, sku: str, quantity: str, price: str, **more: str) -> list[str]:
    cells = {"external_id": order, "source": "shop", "customer_code": code, "ordered_at": "2026-03-01 10:00"}
    return _row(
        **{**cells, "sku": sku, "product_name": f"商品 {sku}", "quantity": quantity, "unit_price": price, **more}
    )


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
    _queued, job = await queue_and_run(
        app, pool, client, tenant, (name, content), kind="orders", mapping=mapping or MAPPING, who=who, form=form
    )
    assert job.status == "done", job.error
    return str(job.id), dict(import_jobs.present(job)["progress"])


async def _errors(client: httpx.AsyncClient, tenant: Tenant, job_id: str) -> list[tuple[str, str, str]]:
    report = await client.get(f"/api/v1/imports/{job_id}/errors", headers=tenant.headers())
    assert report.status_code == 200
    header, *rows = csv.reader(io.StringIO(report.text))
    assert header == ["row", "column", "reason"]
    return [(row, column, reason) for row, column, reason in rows]


async def _value(client: httpx.AsyncClient, tenant: Tenant, customer_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/customers/{customer_id}/value", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _orders(app: FastAPI, tenant: Tenant) -> dict[str, tuple[Order, list[OrderLine]]]:
    async with app.state.sessions() as session:
        orders = (await session.scalars(select(Order).where(Order.workspace_id == tenant.id))).all()
        lines = (
            await session.scalars(
                select(OrderLine).where(OrderLine.workspace_id == tenant.id).order_by(OrderLine.line_no)
            )
        ).all()
    return {o.external_id: (o, [line for line in lines if line.order_id == o.id]) for o in orders}


async def _events(app: FastAPI, tenant: Tenant, event_type: str) -> list[dict[str, Any]]:
    async with app.state.sessions() as session:
        rows = await session.scalars(
            select(OutboxEvent.data)
            .where(OutboxEvent.workspace_id == tenant.id, OutboxEvent.type == event_type)
            .order_by(OutboxEvent.id)
        )
        return list(rows.all())


async def test_lines_are_grouped_into_orders_and_the_customers_figures_follow(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    zhang = await _customer(live_client, live_tenant, phones=["13800138000"])
    li = await _customer(live_client, live_tenant)
    rows = [
        _line("SO-1", zhang["code"], "TEA", "2", "168.00", category="tea", total_amount="356.00"),
        _line("SO-2", li["code"], "CUP", "1", "45.5", category="cup"),
        # The order's fields may be left blank on its other rows; they are the first row's.
        _row(external_id="SO-1", source="shop", sku="BAG", product_name="礼袋", quantity="1", unit_price="20",
             category="gift"),
        _line("SO-3", "", "TEA", "1", "168", customer_phone="138 0013 8000", ordered_at="2026-03-05T12:00:00+08:00",
              category="tea"),
        _line("SO-4", zhang["code"], "TEA", "1", "168", status="cancelled"),
    ]  # fmt: skip
    job_id, progress = await _import(app, pool, live_client, live_tenant, "订单.csv", _csv(rows, "utf-8-sig"))
    assert progress == {"rows_read": 5, "created": 5, "updated": 0, "skipped": 0, "failed": 0}
    assert await _errors(live_client, live_tenant, job_id) == []
    stored = await _orders(app, live_tenant)
    assert sorted(stored) == ["SO-1", "SO-2", "SO-3", "SO-4"]
    so1, so1_lines = stored["SO-1"]
    assert str(so1.customer_id) == zhang["id"] and so1.total_amount == Decimal("356") and so1.status == "paid"
    assert so1.currency == "CNY" and so1.ordered_at.isoformat() == "2026-03-01T02:00:00+00:00"
    assert [(line.line_no, line.sku, line.quantity) for line in so1_lines] == [
        (1, "TEA", Decimal(2)),
        (2, "BAG", Decimal(1)),
    ]
    # Without a total column value, the total is the lines' sum.
    assert stored["SO-2"][0].total_amount == Decimal("45.5")
    assert str(stored["SO-3"][0].customer_id) == zhang["id"]
    # Figures as the per-order path keeps them: cancelled orders do not count.
    value = await _value(live_client, live_tenant, zhang["id"])
    assert value["order_count"] == 2 and value["total_spend"] == "524.00"
    assert value["first_purchase_at"] == "2026-03-01T02:00:00Z"
    assert value["favourite_categories"][0] == {"category": "tea", "spend": "504.00", "orders": 2}
    assert (await _value(live_client, live_tenant, li["id"]))["total_spend"] == "45.50"
    async with app.state.sessions() as session:
        before = await session.get(CustomerValue, (live_tenant.id, uuid.UUID(zhang["id"])))
        assert before is not None
        imported = (before.order_count, before.total_spend, before.tier, before.favourite_categories)
        # The import moved the customer to a stage; the rules have nothing left to move.
        assert await session.get(CustomerStage, (live_tenant.id, uuid.UUID(zhang["id"]))) is not None
        # The per-order path computes the same figures from the same orders.
        ctx = system_caller(live_tenant.id)
        await customer_values.refresh_customer(session, ctx, uuid.UUID(zhang["id"]))
        assert await lifecycle.apply_rules(session, ctx, customer_id=uuid.UUID(zhang["id"])) == 0
        await session.flush()
        after = await session.get(CustomerValue, (live_tenant.id, uuid.UUID(zhang["id"])), populate_existing=True)
        assert after is not None
        assert (after.order_count, after.total_spend, after.tier, after.favourite_categories) == imported
        await session.rollback()
    created = sorted(await _events(app, live_tenant, "order.created"), key=lambda event: str(event["external_id"]))
    assert [event["external_id"] for event in created] == ["SO-1", "SO-2", "SO-3", "SO-4"]
    assert OrderOut.model_validate(created[0]).total_amount == "356.00"
    assert set(created[0]) == set(OrderOut.model_fields)
    assert created[0]["lines"][1] == {
        "sku": "BAG",
        "product_name": "礼袋",
        "category": "gift",
        "quantity": "1",
        "unit_price": "20.00",
    }
    async with app.state.sessions() as session:
        audit = await session.scalar(
            select(func.count()).where(AuditEntry.workspace_id == live_tenant.id, AuditEntry.entity_type == "order")
        )
    assert audit == 4
    # The orders show on the customer's timeline, as the API's do.
    timeline = await live_client.get(
        f"/api/v1/customers/{zhang['id']}/timeline", params={"type": "order"}, headers=live_tenant.headers()
    )
    assert sorted(item["data"]["external_id"] for item in timeline.json()["items"]) == ["SO-1", "SO-3", "SO-4"]


async def test_rerunning_an_upsert_changes_nothing_and_changed_orders_are_brought_in_line(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    zhang = await _customer(live_client, live_tenant)
    li = await _customer(live_client, live_tenant)
    rows = [
        _line("SO-1", zhang["code"], "TEA", "2", "168.00", category="tea"),
        _line("SO-1", zhang["code"], "CUP", "1", "45.50", category="cup"),
        _line("SO-2", zhang["code"], "TEA", "1", "168.00", category="tea"),
    ]
    content = _csv(rows, "gb18030")
    _, first = await _import(app, pool, live_client, live_tenant, "订单.csv", content, mode="upsert")
    assert first == {"rows_read": 3, "created": 3, "updated": 0, "skipped": 0, "failed": 0}
    figures = await _value(live_client, live_tenant, zhang["id"])
    assert figures["order_count"] == 2 and figures["total_spend"] == "549.50"
    _, again = await _import(app, pool, live_client, live_tenant, "订单.csv", content, mode="upsert")
    assert again == {"rows_read": 3, "created": 0, "updated": 0, "skipped": 3, "failed": 0}
    assert {key: order.version for key, (order, _) in (await _orders(app, live_tenant)).items()} == {
        "SO-1": 1,
        "SO-2": 1,
    }
    assert await _value(live_client, live_tenant, zhang["id"]) == figures
    assert await _events(app, live_tenant, "order.updated") == []
    # SO-1 is partly refunded and loses a line; SO-2 moves to another customer.
    changed = [
        _line("SO-1", zhang["code"], "TEA", "2", "168.00", category="tea", status="partially_refunded",
              refunded_amount="100"),
        _line("SO-2", li["code"], "TEA", "1", "168.00", category="tea"),
    ]  # fmt: skip
    _, third = await _import(app, pool, live_client, live_tenant, "b.csv", _csv(changed, "utf-8"), mode="upsert")
    assert third == {"rows_read": 2, "created": 0, "updated": 2, "skipped": 0, "failed": 0}
    stored = await _orders(app, live_tenant)
    so1, so1_lines = stored["SO-1"]
    assert (so1.version, so1.status, so1.total_amount, so1.refunded_amount) == (
        2,
        "partially_refunded",
        Decimal("336"),
        Decimal("100"),
    )
    assert [line.sku for line in so1_lines] == ["TEA"]
    assert str(stored["SO-2"][0].customer_id) == li["id"]
    updated = {event["external_id"]: event for event in await _events(app, live_tenant, "order.updated")}
    assert updated["SO-1"]["changed_fields"] == ["lines", "refunded_amount", "status", "total_amount"]
    assert updated["SO-2"]["changed_fields"] == ["customer_id"] and updated["SO-2"]["version"] == 2
    async with app.state.sessions() as session:
        audit = await session.scalar(
            select(AuditEntry.changes).where(
                AuditEntry.workspace_id == live_tenant.id,
                AuditEntry.entity_id == so1.id,
                AuditEntry.action == "updated",
            )
        )
    assert audit is not None and audit["status"] == {"before": "paid", "after": "partially_refunded"}
    assert audit["total_amount"] == {"before": "381.5000", "after": "336.00"}
    # Both customers' figures follow: the one who lost an order and the one who gained it.
    old_owner = await _value(live_client, live_tenant, zhang["id"])
    assert old_owner["order_count"] == 1 and old_owner["total_spend"] == "236.00"
    new_owner = await _value(live_client, live_tenant, li["id"])
    assert new_owner["order_count"] == 1 and new_owner["total_spend"] == "168.00"
    # create_only leaves stored orders as they are.
    _, create_only = await _import(app, pool, live_client, live_tenant, "c.csv", content)
    assert create_only == {"rows_read": 3, "created": 0, "updated": 0, "skipped": 3, "failed": 0}
    assert stored["SO-1"][0].version == (await _orders(app, live_tenant))["SO-1"][0].version


async def test_xlsx_import_with_date_and_number_cells(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    customer = await _customer(live_client, live_tenant, emails=["buyer@example.com"])
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["订单号", "邮箱", "下单时间", "商品编码", "商品", "数量", "单价"])
    sheet.append(["X-1", "Buyer@Example.com", datetime(2026, 5, 4, 9, 15), "TEA", "龙井", 3, 19.9])
    sheet.append(["X-1", "Buyer@Example.com", datetime(2026, 5, 4, 9, 15), "CUP", "杯", 1, 40])
    buffer = io.BytesIO()
    book.save(buffer)
    mapping = {"订单号": "external_id", "邮箱": "customer_email", "下单时间": "ordered_at", "商品编码": "sku",
               "商品": "product_name", "数量": "quantity", "单价": "unit_price"}  # fmt: skip
    _, progress = await _import(app, pool, live_client, live_tenant, "orders.xlsx", buffer.getvalue(), mapping=mapping)
    assert progress == {"rows_read": 2, "created": 2, "updated": 0, "skipped": 0, "failed": 0}
    order, lines = (await _orders(app, live_tenant))["X-1"]
    assert str(order.customer_id) == customer["id"] and order.source == "api"
    assert order.total_amount == Decimal("99.7") and [line.unit_price for line in lines] == [
        Decimal("19.9"),
        Decimal(40),
    ]
    assert order.ordered_at.isoformat() == "2026-05-04T01:15:00+00:00"


async def test_a_bad_row_rejects_its_whole_order_and_valid_orders_go_in(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    code = (await _customer(live_client, live_tenant))["code"]
    rows = [
        _line("OK-1", code, "TEA", "1", "10"),  # row 2
        _line("BAD-1", code, "TEA", "1", "10"),  # row 3: its other line has a bad price
        _line("BAD-1", code, "CUP", "1", "ten"),  # row 4
        _line("BAD-2", code, "TEA", "1", "10"),  # row 5: its rows disagree on the date
        _line("BAD-2", code, "CUP", "1", "10", ordered_at="2026-03-02 10:00"),  # row 6
        _line("BAD-3", "KH-0000-999999", "TEA", "1", "10"),  # row 7: unknown customer
        _line("BAD-4", code, "TEA", "1", "10", total_amount="12"),  # row 8: lines do not add up
        _line("BAD-5", code, "TEA", "1", "10.001"),  # row 9: more decimals than CNY has
        _line("BAD-6", code, "TEA", "1", "10", status="shipped"),  # row 10: not an order status
        _line("BAD-7", code, "TEA", "1", "10", refunded_amount="5"),  # row 11: a refund on a paid order
        _line("", code, "TEA", "1", "10"),  # row 12: no order id
        _line("BAD-8", code, "TEA", "1", "10", ordered_at="2026-13-01"),  # row 13: not a date
        _line("BAD-9", code, "T\x00A", "1", "10", product_name="茶"),  # row 14: NUL
        _line("BAD-9", code, "CUP", "1", "10"),  # row 15
        _line("OK-2", code, "TEA", "2", "10"),  # row 16
    ]
    job_id, progress = await _import(app, pool, live_client, live_tenant, "a.csv", _csv(rows, "utf-8"))
    assert progress == {"rows_read": 15, "created": 2, "updated": 0, "skipped": 0, "failed": 13}
    assert sorted(await _orders(app, live_tenant)) == ["OK-1", "OK-2"]
    report = await _errors(live_client, live_tenant, job_id)
    assert [(row, column) for row, column, _ in report] == [
        ("3", "订单号"),
        ("4", "单价"),
        ("5", "订单号"),
        ("6", "下单时间"),
        ("7", "客户编号"),
        ("8", "订单金额"),
        ("9", "单价"),
        ("10", "状态"),
        ("11", "状态"),
        ("12", "订单号"),
        ("13", "下单时间"),
        ("14", "商品编码"),
        ("15", "订单号"),
    ]
    reasons = {row: reason for row, _, reason in report}
    assert reasons["3"] == "order BAD-1 is rejected: see row 4"
    assert reasons["6"] == "differs from row 5 of order BAD-2"
    assert reasons["7"] == "no customer with code KH-0000-999999"
    assert reasons["8"] == "The lines add up to 10, not 12."
    assert reasons["9"] == "CNY amounts have at most 2 decimals."
    assert reasons["11"] == "refunded_amount does not fit status paid."
    assert reasons["12"] == "external_id is required: it names the order"
    assert reasons["14"] == "contains a NUL character" and reasons["15"] == "order BAD-9 is rejected: see row 14"
    assert len(await _events(app, live_tenant, "order.created")) == 2
    assert (await _value(live_client, live_tenant, (await _orders(app, live_tenant))["OK-1"][0].customer_id.hex))[
        "total_spend"
    ] == "30.00"


async def test_visibility_and_tenancy_limit_the_customers_orders_may_name(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_other_tenant: Tenant,
) -> None:
    own = await _customer(live_client, live_tenant, who="sales", phones=["13800138000"])
    theirs = await _customer(live_client, live_tenant, who="sales2", phones=["13900139000"])
    # The other workspace holds the same phone, and (codes being per workspace) a third code.
    await _customer(live_client, live_other_tenant, phones=["13800138000"])
    await _customer(live_client, live_other_tenant)
    foreign = await _customer(live_client, live_other_tenant, phones=["13700137000"])
    rows = [
        _line("V-1", "", "TEA", "1", "10", customer_phone="13800138000"),
        _line("V-2", "", "TEA", "1", "10", customer_phone="13900139000"),
        _line("V-3", foreign["code"], "TEA", "1", "10"),
        _line("V-4", "", "TEA", "1", "10", customer_phone="13700137000"),
    ]
    content = _csv(rows, "utf-8")
    job_id, progress = await _import(app, pool, live_client, live_tenant, "a.csv", content, who="sales")
    assert progress == {"rows_read": 4, "created": 1, "updated": 0, "skipped": 0, "failed": 3}
    assert str((await _orders(app, live_tenant))["V-1"][0].customer_id) == own["id"]
    assert [reason for _, _, reason in await _errors(live_client, live_tenant, job_id)] == [
        "no customer with phone +8613900139000",
        f"no customer with code {foreign['code']}",
        "no customer with phone +8613700137000",
    ]
    _, by_admin = await _import(app, pool, live_client, live_tenant, "b.csv", content)
    assert by_admin == {"rows_read": 4, "created": 1, "updated": 0, "skipped": 1, "failed": 2}
    assert str((await _orders(app, live_tenant))["V-2"][0].customer_id) == theirs["id"]
    assert await _orders(app, live_other_tenant) == {}


async def test_bad_order_uploads_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    async def upload(mapping: dict[str, str], who: str = "admin", **form: str) -> httpx.Response:
        return await client.post(
            "/api/v1/imports",
            files={"file": ("a.csv", _csv([], "utf-8"))},
            data={"mapping": json.dumps(mapping), "type": "orders", **form},
            headers=tenant.headers(who),
        )

    # Support may write customers but not orders.
    assert (await upload(MAPPING, who="support")).status_code == 403
    unknown = await upload({**MAPPING, "备注": "custom.note"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "mapping", "备注"]
    without = await upload({k: v for k, v in MAPPING.items() if v not in ("unit_price", "ordered_at")})
    assert without.status_code == 422 and without.json()["detail"] == "Map a column to each of: ordered_at, unit_price."
    assert (await upload(MAPPING, match_on="code")).status_code == 422
    response = await client.post(
        "/api/v1/imports",
        files={"file": ("a.xlsx", b"not a zip")},
        data={"mapping": json.dumps(MAPPING), "type": "orders"},
        headers=tenant.headers(),
    )
    assert response.status_code == 422 and response.json()["errors"][0]["type"] == "file_type"
    assert (await upload(MAPPING)).status_code == 202


async def test_the_command_line_imports_orders_with_the_same_engine(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    app: FastAPI,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = await _customer(live_client, live_tenant)
    path = tmp_path / "订单.csv"
    rows = [_line("CLI-1", customer["code"], "TEA", "2", "10"), _line("CLI-1", customer["code"], "CUP", "1", "5")]
    path.write_bytes(_csv(rows, "gb18030"))
    monkeypatch.setattr(cli, "resolve_database_url", lambda *_, **__: database_url)
    maps = [f"--map={column}={field}" for column, field in MAPPING.items()]
    arguments = ["import", str(path), "--workspace", live_tenant.workspace.slug, "--type", "orders", *maps]
    result = await asyncio.to_thread(CliRunner().invoke, cli.cli, arguments)
    assert result.exit_code == 0, result.output
    assert "done: 2 rows read, 2 created, 0 updated, 0 unchanged, 0 rejected" in result.output
    order, lines = (await _orders(app, live_tenant))["CLI-1"]
    assert order.total_amount == Decimal("25") and len(lines) == 2
    bad = await asyncio.to_thread(CliRunner().invoke, cli.cli, [*arguments[:5], "--type", "tickets", *maps])
    assert bad.exit_code != 0


async def test_cancelling_stops_after_the_current_page_and_keeps_what_was_committed(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = (await _customer(live_client, live_tenant))["code"]
    monkeypatch.setattr(order_imports, "ORDERS_PER_PAGE", 2)
    rows = [_line(f"P-{n}", code, "TEA", "1", "10") for n in range(5)]
    queued = await live_client.post(
        "/api/v1/imports",
        files={"file": ("a.csv", _csv(rows, "utf-8"))},
        data={"mapping": json.dumps(MAPPING), "type": "orders"},
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
    assert job.status == "cancelled" and (job.rows_read, job.created) == (5, 2)
    assert sorted(await _orders(app, live_tenant)) == ["P-0", "P-1"]
    status = await live_client.get(f"/api/v1/imports/{job_id}", headers=live_tenant.headers())
    assert status.json()["status"] == "cancelled" and status.json()["progress"]["created"] == 2
