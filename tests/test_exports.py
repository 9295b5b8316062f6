"""Exports: the caller's visible customers, masked for it, formula cells escaped, CSV and XLSX."""

import io
import uuid

import asyncpg
import httpx
import openpyxl
from fastapi import FastAPI

from app.core.db import asyncpg_dsn
from app.services.bulk import exports
from tests.factories import Tenant, customer_body


async def _export(app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, who: str, **body: object) -> httpx.Response:
    queued = await client.post("/api/v1/exports", json=body, headers=tenant.headers(who))
    assert queued.status_code == 202, queued.text
    job = queued.json()
    early = await client.get(f"/api/v1/exports/{job['id']}/download", headers=tenant.headers(who))
    assert early.status_code == 409
    await exports.process(app.state.sessions, uuid.UUID(job["id"]), tenant.id)
    return await client.get(f"/api/v1/exports/{job['id']}/download", headers=tenant.headers(who))


async def test_csv_export_respects_visibility_masking_and_formulas(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    for name, owner in [("=cmd|' /C calc'!A0", "sales"), ("李娜", "sales2")]:
        body = customer_body(
            name=name,
            owner_id=str(live_tenant.users[owner].id),
            phones=["13800138000" if owner == "sales" else "13900139000"],
        )
        assert (
            await live_client.post("/api/v1/customers", json=body, headers=live_tenant.headers())
        ).status_code == 201
    own = await _export(app, live_client, live_tenant, "sales")
    lines = own.content.decode("utf-8-sig").strip().splitlines()
    assert len(lines) == 2 and lines[1].split(",")[1] == "'=cmd|' /C calc'!A0"
    masked = await _export(app, live_client, live_tenant, "readonly")
    text = masked.content.decode("utf-8-sig")
    assert "13800138000" not in text and "******" in text and len(text.strip().splitlines()) == 3


async def test_xlsx_export_with_a_filter(app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant) -> None:
    for city in ("深圳市", "北京市"):
        await live_client.post(
            "/api/v1/customers", json=customer_body(address={"city": city}), headers=live_tenant.headers()
        )
    response = await _export(
        app, live_client, live_tenant, "admin", format="xlsx", filter={"field": "city", "op": "eq", "value": "深圳市"}
    )
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "code" and len(rows) == 2 and rows[1][rows[0].index("city")] == "深圳市"


async def test_bad_exports_are_422_and_foreign_ones_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    assert (await client.post("/api/v1/exports", json={"format": "pdf"}, headers=tenant.headers())).status_code == 422
    bad_filter = {"filter": {"field": "shoe_size", "op": "eq", "value": 1}}
    assert (await client.post("/api/v1/exports", json=bad_filter, headers=tenant.headers())).status_code == 422
    job = (await client.post("/api/v1/exports", json={}, headers=tenant.headers())).json()
    assert (await client.get(f"/api/v1/exports/{job['id']}", headers=other_tenant.headers())).status_code == 404


async def test_a_running_export_whose_worker_is_gone_is_queued_again(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    queued = await live_client.post("/api/v1/exports", json={}, headers=live_tenant.headers())
    job_id = uuid.UUID(queued.json()["id"])
    await pool.execute(
        "UPDATE export_jobs SET status = 'running', started_at = now() - interval '2 minutes' WHERE id = $1", job_id
    )
    # A live worker's export transaction holds the job's lock: the job is left alone.
    worker = await asyncpg.connect(asyncpg_dsn(database_url))
    running = worker.transaction()
    await running.start()
    await worker.execute("SELECT pg_advisory_xact_lock(hashtextextended('export-job:' || $1, 0))", str(job_id))
    async with app.state.sessions() as session:
        assert (live_tenant.id, job_id) not in await exports.requeue_orphans(session)
        await session.commit()
    # The worker's connection is lost with its transaction: the next sweep queues the export again.
    await worker.close()
    async with app.state.sessions() as session:
        assert (live_tenant.id, job_id) in await exports.requeue_orphans(session)
        await session.commit()
    assert await pool.fetchval("SELECT status FROM export_jobs WHERE id = $1", job_id) == "queued"
    await exports.process(app.state.sessions, job_id, live_tenant.id)
    done = (await live_client.get(f"/api/v1/exports/{job_id}", headers=live_tenant.headers())).json()
    assert done["status"] == "done"
