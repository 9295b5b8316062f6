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


async def test_an_export_belongs_to_its_creator_and_admins(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """Another user of the workspace gets 404 for an export, its status and its file: it holds what
    its creator may see, unmasked for an admin's."""
    by_admin = (await client.post("/api/v1/exports", json={}, headers=tenant.headers())).json()
    by_sales = (await client.post("/api/v1/exports", json={}, headers=tenant.headers("sales"))).json()
    for who in ("sales2", "manager", "readonly", "support"):
        for url in (f"/api/v1/exports/{by_admin['id']}", f"/api/v1/exports/{by_admin['id']}/download"):
            assert (await client.get(url, headers=tenant.headers(who))).status_code == 404, (who, url)
    assert (await client.get(f"/api/v1/exports/{by_sales['id']}", headers=tenant.headers("sales2"))).status_code == 404
    # Its creator and the admins read it; the file is not written yet.
    for who in ("sales", "admin"):
        assert (await client.get(f"/api/v1/exports/{by_sales['id']}", headers=tenant.headers(who))).status_code == 200
        download = await client.get(f"/api/v1/exports/{by_sales['id']}/download", headers=tenant.headers(who))
        assert download.status_code == 409
    own = (await client.get("/api/v1/exports", headers=tenant.headers("sales"))).json()
    assert [job["id"] for job in own["items"]] == [by_sales["id"]] and own["next_cursor"] is None
    assert (await client.get("/api/v1/exports", headers=tenant.headers("sales2"))).json()["items"] == []
    everyone = (await client.get("/api/v1/exports", headers=tenant.headers())).json()
    assert [job["id"] for job in everyone["items"]] == [by_sales["id"], by_admin["id"]]


async def test_the_export_list_pages_and_never_shows_another_workspace(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    made = [(await client.post("/api/v1/exports", json={}, headers=tenant.headers())).json()["id"] for _ in range(3)]
    await client.post("/api/v1/exports", json={}, headers=other_tenant.headers())
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/exports", params=params, headers=tenant.headers())).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    for query in ("limit=0", "limit=101", "cursor=garbage", "cursor=WzEsIm5vdC1hLXV1aWQiXQ"):
        refused = await client.get(f"/api/v1/exports?{query}", headers=tenant.headers())
        assert refused.status_code == 422, query
