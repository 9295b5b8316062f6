"""Customer imports: CSV in UTF-8 (BOM) and GB18030, XLSX, rejected rows, idempotent re-runs."""

import asyncio
import io
import json
import uuid

import asyncpg
import httpx
import openpyxl
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.core.db import asyncpg_dsn, create_asyncpg_pool
from app.core.settings import get_settings
from app.models import Customer, ImportJob
from app.services.bulk import import_jobs, imports
from app.workers.worker import Worker
from tests.factories import Tenant

MAPPING = {"姓名": "name", "手机": "phone", "邮箱": "email", "城市": "city", "标签": "tags"}
ROWS = [
    ["张伟", "13800138000", "zhang@example.com", "深圳市", "vip;wholesale"],
    ["李娜", "13900139000", "", "广州市", ""],
    ["", "13700137000", "", "", ""],  # no name
    ["王芳", "12345", "", "", ""],  # bad phone
    ["赵磊", "13800138000", "", "", ""],  # same phone as row 2
    ["O\x00Brien", "", "ob@example.com", "", ""],  # NUL
]


def _csv(rows: list[list[str]], encoding: str) -> bytes:
    buffer = io.StringIO()
    buffer.write(",".join(MAPPING) + "\n")
    for row in rows:
        buffer.write(",".join(row) + "\n")
    return buffer.getvalue().encode(encoding)


async def _upload(client: httpx.AsyncClient, tenant: Tenant, name: str, content: bytes, **form: str) -> httpx.Response:
    data = {"mapping": json.dumps(MAPPING), **form}
    return await client.post("/api/v1/imports", files={"file": (name, content)}, data=data, headers=tenant.headers())


async def _run(app: FastAPI, pool: asyncpg.Pool, tenant: Tenant, job_id: str) -> dict[str, object]:
    job = await import_jobs.process(app.state.job_sessions, pool, tenant.id, uuid.UUID(job_id))
    return dict(import_jobs.present(job)["progress"])


async def test_csv_import_creates_valid_rows_and_reports_the_rest(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    queued = await _upload(live_client, live_tenant, "客户.csv", _csv(ROWS, "utf-8-sig"))
    assert queued.status_code == 202, queued.text
    assert queued.json()["encoding"] == "utf-8-sig"
    progress = await _run(app, pool, live_tenant, queued.json()["id"])
    assert progress == {"rows_read": 6, "created": 2, "updated": 0, "skipped": 0, "failed": 4}
    report = await live_client.get(f"/api/v1/imports/{queued.json()['id']}/errors", headers=live_tenant.headers())
    lines = report.text.strip().splitlines()
    assert lines[0] == "row,column,reason" and [line.split(",")[0] for line in lines[1:]] == ["4", "5", "6", "7"]
    found = (await live_client.get("/api/v1/customers", params={"q": "138001"}, headers=live_tenant.headers())).json()
    [zhang] = found["items"]
    assert zhang["name"] == "张伟" and zhang["tags"] == ["vip", "wholesale"] and zhang["phones"] == ["+8613800138000"]
    assert zhang["code"].endswith("000001")


async def test_an_imported_customer_has_the_audit_entry_a_create_through_the_api_writes(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    queued = await _upload(live_client, live_tenant, "客户.csv", _csv(ROWS[:1], "utf-8"))
    assert (await _run(app, pool, live_tenant, queued.json()["id"]))["created"] == 1
    [imported] = (await live_client.get("/api/v1/customers", headers=live_tenant.headers())).json()["items"]
    made = await live_client.post(
        "/api/v1/customers",
        json={
            "name": "张伟",
            "phones": ["13800138001"],
            "emails": ["zhang2@example.com"],
            "address": {"city": "深圳市"},
            "tags": ["vip", "wholesale"],
        },
        headers=live_tenant.headers(),
    )
    assert made.status_code == 201, made.text

    async def created_entry(customer_id: str, actor: dict[str, str | None]) -> dict[str, object]:
        history = await live_client.get(f"/api/v1/customers/{customer_id}/audit", headers=live_tenant.headers())
        [entry] = history.json()["items"]
        assert entry["action"] == "created"
        assert entry["actor"] == actor
        return dict(entry["changes"])

    # The import's writes are the worker's, as its updates' entries and its events are.
    from_file = await created_entry(imported["id"], {"type": "system", "id": None})
    from_api = await created_entry(made.json()["id"], {"type": "user", "id": str(live_tenant.users["admin"].id)})
    # A create through the API makes its caller the owner; an imported row has none.
    assert from_api.keys() - from_file.keys() == {"owner_id"} and from_file.keys() <= from_api.keys()
    assert from_file["name"] == {"before": None, "after": "张伟"}
    assert from_file["tags"] == {"before": None, "after": ["vip", "wholesale"]}


async def test_batches_are_not_held_to_the_api_statement_timeout(
    app: FastAPI, database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """The worker's connections carry the API's per-statement limit; a batch of 5,000 rows (its
    insert takes longer than 50 ms here) still goes in whole."""
    rows = [[f"客户{n}", f"139{n:08d}", f"c{n}@example.com", "深圳市", ""] for n in range(imports.BATCH)]
    queued = await _upload(live_client, live_tenant, "many.csv", _csv(rows, "utf-8"))
    assert queued.status_code == 202, queued.text
    strict = get_settings().model_copy(update={"statement_timeout_ms": 50})
    pool = await create_asyncpg_pool(database_url, strict, size=3)
    try:
        progress = await _run(app, pool, live_tenant, queued.json()["id"])
    finally:
        await pool.close()
    assert progress == {"rows_read": imports.BATCH, "created": imports.BATCH, "updated": 0, "skipped": 0, "failed": 0}


async def test_rerunning_an_upsert_changes_nothing(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    content = _csv(ROWS[:2], "gb18030")
    first = await _upload(live_client, live_tenant, "a.csv", content, mode="upsert", match_on="phone")
    assert first.json()["encoding"] == "gb18030"
    assert (await _run(app, pool, live_tenant, first.json()["id"]))["created"] == 2
    again = await _upload(live_client, live_tenant, "a.csv", content, mode="upsert", match_on="phone")
    assert await _run(app, pool, live_tenant, again.json()["id"]) == {
        "rows_read": 2,
        "created": 0,
        "updated": 0,
        "skipped": 2,
        "failed": 0,
    }
    changed = _csv([["张伟", "13800138000", "", "北京市", ""]], "utf-8")
    third = await _upload(live_client, live_tenant, "b.csv", changed, mode="upsert", match_on="phone")
    assert (await _run(app, pool, live_tenant, third.json()["id"]))["updated"] == 1
    async with app.state.sessions() as session:
        count = await session.scalar(select(func.count()).where(Customer.workspace_id == live_tenant.id))
        city = await session.scalar(
            select(Customer.city).where(Customer.workspace_id == live_tenant.id, Customer.name == "张伟")
        )
    assert count == 2 and city == "北京市"


async def test_xlsx_import(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(MAPPING))
    sheet.append(["陈静", 13600136000, "chen@example.com", "杭州市", "vip"])
    buffer = io.BytesIO()
    book.save(buffer)
    queued = await _upload(live_client, live_tenant, "customers.xlsx", buffer.getvalue())
    assert queued.status_code == 202
    assert (await _run(app, pool, live_tenant, queued.json()["id"]))["created"] == 1


async def test_bad_uploads_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await _upload(client, tenant, "notes.txt", b"hello")).status_code == 422
    assert (await _upload(client, tenant, "fake.xlsx", b"not a zip")).status_code == 422
    latin1 = "姓名\nJosé\n".encode("utf-16")
    assert (await _upload(client, tenant, "bad.csv", latin1)).status_code == 422
    bad_mapping = await client.post(
        "/api/v1/imports",
        files={"file": ("a.csv", b"a\n1\n")},
        data={"mapping": json.dumps({"a": "shoe_size"})},
        headers=tenant.headers(),
    )
    assert bad_mapping.status_code == 422 and bad_mapping.json()["errors"][0]["loc"] == ["body", "mapping", "a"]
    upsert_without_key = await _upload(client, tenant, "a.csv", _csv(ROWS[:1], "utf-8"), mode="upsert")
    assert upsert_without_key.status_code == 422
    assert (
        await client.post(
            "/api/v1/imports", files={"file": ("a.csv", b"x")}, data={"mapping": "{"}, headers=tenant.headers()
        )
    ).status_code == 422
    assert (await _upload(client, tenant, "a.csv", _csv(ROWS[:1], "utf-8"))).status_code == 202


async def test_cancel_a_queued_import(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    queued = (await _upload(client, tenant, "a.csv", _csv(ROWS[:1], "utf-8"))).json()
    assert (await client.get(f"/api/v1/imports/{queued['id']}", headers=other_tenant.headers())).status_code == 404
    cancelled = await client.post(f"/api/v1/imports/{queued['id']}/cancel", headers=tenant.headers())
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.post(f"/api/v1/imports/{queued['id']}/cancel", headers=tenant.headers())).status_code == 409


async def test_a_large_utf8_file_cut_mid_character_by_the_encoding_sample_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    content = "姓名\n李\n".encode("utf-8-sig") + "张伟\n".encode() * 12_000
    # The sample ends inside 张 (3 bytes): the byte right after it continues a character.
    assert content[imports.SNIFF_BYTES] & 0xC0 == 0x80
    queued = await _upload(client, tenant, "大文件.csv", content)
    assert queued.status_code == 202, queued.text
    assert queued.json()["encoding"] == "utf-8-sig"


async def test_the_worker_runs_an_import_and_then_an_export(
    database_url: str, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    worker = Worker(get_settings(), database_url, sweep_seconds=3600)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), timeout=10)
        imported = (await _upload(live_client, live_tenant, "a.csv", _csv(ROWS[:2], "utf-8"))).json()
        exported = (await live_client.post("/api/v1/exports", json={}, headers=live_tenant.headers())).json()
        for path in (f"/api/v1/imports/{imported['id']}", f"/api/v1/exports/{exported['id']}"):
            for _ in range(200):
                status = (await live_client.get(path, headers=live_tenant.headers())).json()["status"]
                if status not in ("queued", "running"):
                    break
                await asyncio.sleep(0.05)
            assert status == "done", path
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, timeout=20)


async def test_a_running_import_whose_worker_is_gone_is_failed_not_left_running(
    pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    queued = await _upload(live_client, live_tenant, "a.csv", _csv(ROWS[:2], "utf-8"))
    job_id = uuid.UUID(queued.json()["id"])
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE import_jobs SET status = 'running', started_at = now() - interval '2 minutes' WHERE id = $1",
            job_id,
        )
    # A live worker holds the job's lock: the job is left alone.
    worker = await asyncpg.connect(asyncpg_dsn(database_url))
    await worker.execute(f"SELECT pg_advisory_lock({import_jobs.JOB_KEY})", str(job_id))
    assert (live_tenant.id, job_id) not in await import_jobs.fail_orphans(pool)
    # The worker's session ends (killed, or its connection lost): the next sweep fails the job.
    await worker.close()
    assert (live_tenant.id, job_id) in await import_jobs.fail_orphans(pool)
    job = (await live_client.get(f"/api/v1/imports/{job_id}", headers=live_tenant.headers())).json()
    assert job["status"] == "failed" and "interrupted" in job["error"]
    assert job["finished_at"] is not None


def _many(count: int, *, offset: int = 0) -> bytes:
    rows = [[f"客户{n}", f"139{n:08d}", f"c{n}@example.com", "深圳市", ""] for n in range(offset, offset + count)]
    return _csv(rows, "utf-8")


async def test_batches_written_side_by_side_keep_file_order_codes_and_counts(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create_only import without a match key writes its batches on two connections at once."""
    monkeypatch.setattr(imports, "BATCH", 400)
    rows = imports.BATCH * 4 + 123
    queued = await _upload(live_client, live_tenant, "five-batches.csv", _many(rows))
    assert queued.status_code == 202, queued.text
    progress = await _run(app, pool, live_tenant, queued.json()["id"])
    assert progress == {"rows_read": rows, "created": rows, "updated": 0, "skipped": 0, "failed": 0}
    stored = (await live_client.get(f"/api/v1/imports/{queued.json()['id']}", headers=live_tenant.headers())).json()
    assert stored["progress"] == progress
    async with app.state.sessions() as session:
        found = (
            await session.execute(
                select(Customer.name, Customer.code).where(
                    Customer.workspace_id == live_tenant.id, Customer.deleted_at.is_(None)
                )
            )
        ).all()
    assert len(found) == rows
    # Codes run without gaps from 1 in the file's order, whichever connection wrote the batch.
    by_name = {name: int(code[-6:]) for name, code in found}
    assert [by_name[f"客户{n}"] for n in range(rows)] == list(range(1, rows + 1))


async def test_an_imports_events_need_no_fan_out_unless_an_endpoint_listens(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    async def unpublished() -> tuple[int, int]:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE published_at IS NULL) AS waiting, count(*) AS events "
                "FROM outbox_events WHERE workspace_id = $1 AND type = 'customer.created'",
                live_tenant.id,
            )
        return row["waiting"], row["events"]

    first = await _upload(live_client, live_tenant, "a.csv", _many(3))
    await _run(app, pool, live_tenant, first.json()["id"])
    # Nobody subscribes: the events are written as fanned out already.
    assert await unpublished() == (0, 3)
    endpoint = await live_client.post(
        "/api/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["customer.*"]},
        headers=live_tenant.headers(),
    )
    assert endpoint.status_code == 201
    second = await _upload(live_client, live_tenant, "b.csv", _many(2, offset=3))
    await _run(app, pool, live_tenant, second.json()["id"])
    # An endpoint listens: these two wait for the fan-out, which makes their deliveries.
    assert await unpublished() == (2, 5)


async def test_a_cancel_while_batches_are_written_keeps_the_counts_true(
    app: FastAPI,
    pool: asyncpg.Pool,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imports, "BATCH", 400)
    queued = await _upload(live_client, live_tenant, "four-batches.csv", _many(imports.BATCH * 4))
    checks = 0
    asked = imports._cancelled

    async def cancelled_at_the_third_batch(conn: asyncpg.Connection, job: ImportJob) -> bool:
        nonlocal checks
        checks += 1
        return checks >= 3 or await asked(conn, job)

    monkeypatch.setattr(imports, "_cancelled", cancelled_at_the_third_batch)
    job = await import_jobs.process(app.state.job_sessions, pool, live_tenant.id, uuid.UUID(queued.json()["id"]))
    assert job.status == "cancelled"
    async with app.state.sessions() as session:
        customers = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.workspace_id == live_tenant.id)
        )
    # Two batches went in, the second still being written when the cancel was seen.
    assert customers == imports.BATCH * 2
    stored = (await live_client.get(f"/api/v1/imports/{job.id}", headers=live_tenant.headers())).json()
    assert stored["status"] == "cancelled"
    assert stored["progress"]["created"] == job.created == customers


async def test_an_import_and_its_rejected_rows_belong_to_its_uploader_and_admins(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """The error report can echo the file's personal data: another user of the workspace gets 404."""
    data = {"mapping": json.dumps(MAPPING)}
    upload = {"file": ("a.csv", _csv(ROWS, "utf-8"))}
    queued = await client.post("/api/v1/imports", files=upload, data=data, headers=tenant.headers("sales"))
    assert queued.status_code == 202, queued.text
    url = f"/api/v1/imports/{queued.json()['id']}"
    for who in ("sales2", "manager", "support", "readonly"):
        for path in (url, f"{url}/errors"):
            assert (await client.get(path, headers=tenant.headers(who))).status_code == 404, (who, path)
    assert (await client.post(f"{url}/cancel", headers=tenant.headers("sales2"))).status_code == 404
    for who in ("sales", "admin"):
        assert (await client.get(url, headers=tenant.headers(who))).status_code == 200
        assert (await client.get(f"{url}/errors", headers=tenant.headers(who))).status_code == 200
