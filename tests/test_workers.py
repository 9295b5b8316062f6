"""The worker's job families, each job run alone against the database, without starting a worker."""

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app import healthcheck
from app.core import clock, migrations
from app.core.db import asyncpg_dsn
from app.core.settings import get_settings
from app.models import (
    CustomerStage,
    CustomerValue,
    ExportJob,
    ImportJob,
    Segment,
    Task,
    Ticket,
    ValueModel,
    WebhookDelivery,
)
from app.services.bulk import import_jobs
from app.services.events import outbox
from app.services.events.webhook_dispatch import DueAttempt
from app.services.segments import segments as segment_service
from app.workers import automation, bulk, deliveries, schedules, segments, value
from app.workers.registry import Reaction, Registry, Resources
from app.workers.worker import FAMILIES, Worker, react
from tests.database import TEST_DATABASE, fresh_database
from tests.factories import Tenant, customer_body
from tests.receiver import free_port


def _job_sessions(db: AsyncSession) -> async_sessionmaker[AsyncSession]:
    """Sessions as a job opens them, on the test's connection: their commits are savepoints that
    the test's rollback undoes."""
    assert isinstance(db.bind, AsyncConnection)
    return async_sessionmaker(
        bind=db.bind, join_transaction_mode="create_savepoint", expire_on_commit=False, autoflush=False
    )


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _order(client: httpx.AsyncClient, tenant: Tenant, customer: str) -> None:
    body = {
        "source": "shop",
        "external_id": f"SO-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "ordered_at": (clock.now() - timedelta(days=3)).isoformat(),
        "currency": "CNY",
        "total_amount": "336.00",
        "lines": [{"sku": "TEA-1", "product_name": "龙井茶", "quantity": "2", "unit_price": "168.00"}],
    }
    response = await client.post("/api/v1/orders", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text


# Deliveries


async def test_dispatch_queues_a_committed_events_delivery_as_a_job_of_its_attempts(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    endpoint = {"url": "http://127.0.0.1:9/hook", "event_types": ["customer.*"]}
    assert (await client.post("/api/v1/webhook-endpoints", json=endpoint, headers=tenant.headers())).status_code == 201
    await _customer(client, tenant)
    # The job goes onto the queue inside the test's transaction, and leaves with it.
    raw = await (await db.connection()).get_raw_connection()
    queries = Queries(AsyncpgDriver(raw.driver_connection))
    assert await deliveries.dispatch(_job_sessions(db), queries, now=clock.now()) >= 1
    [delivery] = (await db.scalars(select(WebhookDelivery).where(WebhookDelivery.workspace_id == tenant.id))).all()
    entrypoint, payload = (
        await db.execute(
            text("SELECT entrypoint, payload FROM pgqueuer WHERE dedupe_key = :key"), {"key": delivery.job_key}
        )
    ).one()
    assert entrypoint == deliveries.DELIVER
    assert deliveries.decode(payload) == [DueAttempt(tenant.id, delivery.id, 1)]


# Imports and exports


async def _queued_import(client: httpx.AsyncClient, tenant: Tenant) -> uuid.UUID:
    content = "姓名,手机\n张伟,13800138000\n李娜,13900139000\n".encode()
    response = await client.post(
        "/api/v1/imports",
        files={"file": ("a.csv", content)},
        data={"mapping": '{"姓名": "name", "手机": "phone"}'},
        headers=tenant.headers(),
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def _queued_export(client: httpx.AsyncClient, tenant: Tenant) -> uuid.UUID:
    response = await client.post("/api/v1/exports", json={}, headers=tenant.headers())
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def test_run_next_runs_a_queued_export_then_a_queued_import_then_finds_none(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    import_id = await _queued_import(live_client, live_tenant)
    export_id = await _queued_export(live_client, live_tenant)
    sessions = app.state.sessions
    assert await bulk.run_next(sessions, pool)
    async with sessions() as session:
        export = await session.get(ExportJob, (live_tenant.id, export_id))
        waiting = await session.get(ImportJob, (live_tenant.id, import_id))
    assert export is not None and export.status == "done"
    assert waiting is not None and waiting.status == "queued"
    assert await bulk.run_next(sessions, pool)
    async with sessions() as session:
        imported = await session.get(ImportJob, (live_tenant.id, import_id))
    assert imported is not None and imported.status == "done" and imported.created == 2
    # The export ran first: the workspace had no customers yet.
    assert export.rows == 0
    assert not await bulk.run_next(sessions, pool)


async def test_recover_interrupted_queues_an_export_again_fails_an_import_and_wakes_the_workers(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant, database_url: str
) -> None:
    import_id = await _queued_import(live_client, live_tenant)
    export_id = await _queued_export(live_client, live_tenant)
    # Both claimed by a worker that is gone: running, long enough ago, and no lock held.
    started = clock.now() - timedelta(minutes=2)
    for table, job_id in (("import_jobs", import_id), ("export_jobs", export_id)):
        await pool.execute(f"UPDATE {table} SET status = 'running', started_at = $1 WHERE id = $2", started, job_id)
    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    woken: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(outbox.CHANNEL, lambda *args: woken.put_nowait(args[2]))
    try:
        assert await bulk.recover_interrupted(app.state.job_sessions, pool) >= 2
        await asyncio.wait_for(woken.get(), timeout=5)
    finally:
        await listener.close()
    async with app.state.sessions() as session:
        export = await session.get(ExportJob, (live_tenant.id, export_id))
        imported = await session.get(ImportJob, (live_tenant.id, import_id))
    assert export is not None and export.status == "queued" and export.started_at is None
    assert imported is not None and imported.status == "failed" and imported.error == import_jobs.INTERRUPTED


async def test_expired_files_are_purged_and_their_export_answers_410(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    export_id = await _queued_export(live_client, live_tenant)
    assert await bulk.run_next(app.state.job_sessions, pool)
    download = f"/api/v1/exports/{export_id}/download"
    assert (await live_client.get(download, headers=live_tenant.headers())).status_code == 200
    await pool.execute(
        "UPDATE stored_files SET expires_at = now() - interval '1 minute' WHERE workspace_id = $1", live_tenant.id
    )
    assert await bulk.purge_expired_files(app.state.sessions) >= 1
    gone = await live_client.get(download, headers=live_tenant.headers())
    assert gone.status_code == 410 and gone.headers["content-type"] == "application/problem+json"
    assert await pool.fetchval("SELECT count(*) FROM stored_file_chunks WHERE workspace_id = $1", live_tenant.id) == 0


async def test_an_import_whose_upload_was_purged_fails_saying_so(
    app: FastAPI, pool: asyncpg.Pool, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    import_id = await _queued_import(live_client, live_tenant)
    await pool.execute("DELETE FROM stored_files WHERE workspace_id = $1", live_tenant.id)
    assert await bulk.run_next(app.state.job_sessions, pool)
    async with app.state.sessions() as session:
        job = await session.get(ImportJob, (live_tenant.id, import_id))
    assert job is not None and job.status == "failed" and job.error == import_jobs.UPLOAD_GONE


# Value


async def test_predict_due_writes_the_prediction_an_order_marked_due(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    await _order(client, tenant, customer)
    due = select(CustomerValue.prediction_due).where(
        CustomerValue.workspace_id == tenant.id, CustomerValue.customer_id == uuid.UUID(customer)
    )
    assert await db.scalar(due) is True
    assert await value.predict_due(_job_sessions(db)) >= 1
    assert await db.scalar(due.execution_options(populate_existing=True)) is False


async def test_recompute_due_recomputes_a_requested_workspace_and_stages_its_customers(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    buyer = await _customer(client, tenant)
    await _customer(client, tenant)
    await _order(client, tenant, buyer)
    assert (await client.post("/api/v1/value/recompute", headers=tenant.headers())).status_code == 202
    assert await value.recompute_due(_job_sessions(db), now=clock.now()) >= 1
    model = await db.get(ValueModel, tenant.id, populate_existing=True)
    assert model is not None and model.recompute_requested_at is None and model.recomputed_at is not None
    tier = select(CustomerValue.tier).where(
        CustomerValue.workspace_id == tenant.id, CustomerValue.customer_id == uuid.UUID(buyer)
    )
    assert await db.scalar(tier) is not None
    staged = select(func.count()).select_from(CustomerStage).where(CustomerStage.workspace_id == tenant.id)
    assert await db.scalar(staged) == 2


async def test_recompute_due_leaves_a_workspace_another_worker_is_recomputing(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, database_url: str
) -> None:
    await _customer(client, tenant)
    assert (await client.post("/api/v1/value/recompute", headers=tenant.headers())).status_code == 202
    other = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"value-recompute:{tenant.id}")
            await value.recompute_due(_job_sessions(db), now=clock.now())
    finally:
        await other.close()
    model = await db.get(ValueModel, tenant.id, populate_existing=True)
    assert model is not None and model.recompute_requested_at is not None
    # Its lifecycle pass is the other worker's too: nobody was staged here.
    staged = select(func.count()).select_from(CustomerStage).where(CustomerStage.workspace_id == tenant.id)
    assert await db.scalar(staged) == 0


# Segments and lifecycle


async def test_refresh_due_fills_a_new_dynamic_segment_once(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _customer(client, tenant, tags=["vip"])
    await _customer(client, tenant, tags=["vip"])
    await _customer(client, tenant)
    created = await client.post(
        "/api/v1/segments",
        json={"name": "VIPs", "filter": {"field": "tags", "op": "contains", "value": "vip"}},
        headers=tenant.headers(),
    )
    assert created.status_code == 201, created.text
    key = (tenant.id, uuid.UUID(created.json()["id"]))
    sessions = _job_sessions(db)
    assert await segments.refresh_due(sessions, now=clock.now()) >= 1
    segment = await db.get(Segment, key, populate_existing=True)
    assert segment is not None and segment.member_count == 2 and segment.refresh_requested_at is None
    refreshed_at = segment.refreshed_at
    # Fresh now: the next pass leaves it alone.
    await segments.refresh_due(sessions, now=clock.now())
    segment = await db.get(Segment, key, populate_existing=True)
    assert segment is not None and segment.refreshed_at == refreshed_at


async def test_refresh_due_passes_over_a_segment_deleted_after_the_list_was_read(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _customer(client, tenant, tags=["vip"])
    created = await client.post(
        "/api/v1/segments",
        json={"name": "VIPs", "filter": {"field": "tags", "op": "contains", "value": "vip"}},
        headers=tenant.headers(),
    )
    assert created.status_code == 201, created.text
    listed = segment_service.due_refreshes

    async def listed_then_one_deleted(session: AsyncSession, *, now: datetime) -> list[tuple[uuid.UUID, uuid.UUID]]:
        return [(tenant.id, uuid.uuid4()), *await listed(session, now=now)]

    monkeypatch.setattr(segment_service, "due_refreshes", listed_then_one_deleted)
    await segments.refresh_due(_job_sessions(db), now=clock.now())
    segment = await db.get(Segment, (tenant.id, uuid.UUID(created.json()["id"])), populate_existing=True)
    assert segment is not None and segment.member_count == 1


async def test_apply_lifecycle_rules_stages_every_customer_of_the_workspace(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    for _ in range(3):
        await _customer(client, tenant)
    assert await segments.apply_lifecycle_rules(_job_sessions(db), tenant.id) == 3
    stages = (await db.scalars(select(CustomerStage.stage).where(CustomerStage.workspace_id == tenant.id))).all()
    assert stages == ["lead"] * 3


# Schedules


async def test_run_follow_ups_creates_each_plans_tasks(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _customer(client, tenant)
    await _customer(client, tenant)
    plan = {"name": "月度回访", "rule": "every_n_days", "days": 30, "task_title": "回访"}
    assert (await client.post("/api/v1/follow-up-plans", json=plan, headers=tenant.headers())).status_code == 201
    assert await schedules.run_follow_ups(_job_sessions(db)) >= 2
    origins = (await db.scalars(select(Task.origin).where(Task.workspace_id == tenant.id))).all()
    assert origins == ["plan", "plan"]


async def test_mark_sla_breaches_flags_a_ticket_past_its_deadlines(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    body = {"customer_id": await _customer(client, tenant), "type": "complaint", "channel": "phone", "subject": "破损"}
    created = await client.post("/api/v1/tickets", json=body, headers=tenant.headers())
    assert created.status_code == 201, created.text
    key = (tenant.id, uuid.UUID(created.json()["id"]))
    past = clock.now() - timedelta(minutes=1)
    await db.execute(
        update(Ticket).where(Ticket.id == key[1]).values(first_response_due_at=past, resolution_due_at=past)
    )
    await db.commit()
    assert await schedules.mark_sla_breaches(_job_sessions(db)) >= 2
    ticket = await db.get(Ticket, key, populate_existing=True)
    assert ticket is not None and ticket.first_response_breached and ticket.resolution_breached


async def test_compact_ticket_figures_folds_the_appended_rows(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    customer = await _customer(client, tenant)
    for subject in ("破损", "延迟"):
        body = {"customer_id": customer, "type": "complaint", "channel": "phone", "subject": subject}
        assert (await client.post("/api/v1/tickets", json=body, headers=tenant.headers())).status_code == 201
    appended = text("SELECT count(*) FROM ticket_day_counts WHERE workspace_id = :ws AND NOT compacted")
    assert await db.scalar(appended, {"ws": tenant.id}) == 2
    assert await schedules.compact_ticket_figures(_job_sessions(db)) >= 1
    assert await db.scalar(appended, {"ws": tenant.id}) == 0
    tickets = text("SELECT sum(tickets) FROM ticket_day_counts WHERE workspace_id = :ws")
    assert await db.scalar(tickets, {"ws": tenant.id}) == 2


# The families together


async def test_the_families_register_their_jobs_under_the_names_every_worker_version_shares(
    app: FastAPI, pool: asyncpg.Pool, database_url: str
) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        registry = Registry(PgQueuer(AsyncpgDriver(conn)))
        async with httpx.AsyncClient() as http:
            resources = Resources(
                settings=get_settings(),
                sessions=app.state.sessions,
                now=clock.now,
                delivery_pool=pool,
                import_pool=pool,
                http=http,
                queries=Queries(AsyncpgDriver(conn)),
                dispatch_sweep_seconds=deliveries.SWEEP_SECONDS,
            )
            for family in FAMILIES:
                family.register(registry, resources)
    finally:
        await conn.close()
    assert set(registry.pgq.qm.entrypoint_registry) == {
        "webhooks.deliver_batch",
        "webhooks.deliver",
        "messages.send_batch",
    }
    assert {(key.entrypoint, key.expression) for key in registry.pgq.sm.registry} == {
        ("scheduler.follow_ups", "*/10 * * * *"),
        ("scheduler.sla_breaches", "* * * * *"),
        ("scheduler.ticket_figures", "* * * * *"),
        ("scheduler.value_recomputes", "* * * * *"),
        ("scheduler.segment_refreshes", "* * * * *"),
        ("scheduler.lead_scores", "* * * * *"),
        ("scheduler.interrupted_bulk_jobs", "* * * * *"),
        ("scheduler.expired_files", "17 * * * *"),
        ("automation.schedules", "* * * * *"),
        ("automation.dates", "*/10 * * * *"),
        ("scheduler.loyalty_expiry", "7 * * * *"),
        ("scheduler.loyalty_level_reviews", "37 3 * * *"),
        ("scheduler.loyalty_figures", "* * * * *"),
    }
    assert [(r.name, r.sweep_seconds) for r in registry.reactions] == [
        ("webhook dispatch", deliveries.SWEEP_SECONDS),
        ("message dispatch", deliveries.SWEEP_SECONDS),
        ("imports and exports", None),
        ("customer value", None),
        ("segment refresh", None),
        ("lead scores", None),
        ("automation events", automation.SWEEP_SECONDS),
    ]


async def test_a_reaction_runs_again_after_a_failure_and_ends_its_round_when_its_connection_is_gone() -> None:
    outcomes: list[bool | BaseException] = [
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        True,  # more may be waiting: it runs again at once
        False,
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ]
    runs: list[bool | BaseException] = []

    async def run() -> bool:
        outcome = outcomes[len(runs)]
        runs.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    wake = asyncio.Event()
    wake.set()
    reacting = asyncio.create_task(react(Reaction("test", run, retry_seconds=0.01), wake))
    for _ in range(500):
        if len(runs) == 3:
            break
        await asyncio.sleep(0.01)
    # The failure was retried without a notification; after its last run it waits for one.
    assert runs == outcomes[:3]
    await asyncio.sleep(0.05)
    assert len(runs) == 3 and not reacting.done()
    wake.set()
    done, _ = await asyncio.wait([reacting], timeout=5)
    assert done and isinstance(reacting.exception(), asyncpg.exceptions.ConnectionDoesNotExistError)


# The worker process


async def test_a_worker_waits_for_migrations_and_beats_while_it_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await asyncio.to_thread(fresh_database, f"{TEST_DATABASE}_unmigrated")
    heartbeat = tmp_path / "heartbeat"
    settings = get_settings().model_copy(update={"worker_heartbeat_file": heartbeat})
    monkeypatch.setenv("GUANXI_WORKER_HEARTBEAT_FILE", str(heartbeat))
    worker = Worker(settings, url)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while "waiting (run `guanxi migrate`)" not in caplog.text or not heartbeat.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert not worker.ready.is_set()
        assert healthcheck.healthy()
        await asyncio.to_thread(migrations.upgrade, url)
        await asyncio.wait_for(worker.ready.wait(), timeout=30)
        assert healthcheck.healthy()
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, timeout=30)
    # Stopped: no heartbeat, and nothing answers on the API's port either.
    assert not heartbeat.exists()
    monkeypatch.setenv("GUANXI_PORT", str(free_port()))
    assert not healthcheck.healthy()
