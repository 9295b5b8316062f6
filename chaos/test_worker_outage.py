"""The worker through a PostgreSQL crash: it keeps running, and every event a committed write emitted
reaches a real webhook receiver afterwards, signed (at least once; none lost)."""

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from app.core.access import system_caller
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.schemas.event import EndpointCreate
from app.services.events import webhook_endpoints
from bench.harness import ServerProcess
from chaos.cluster import Cluster
from chaos.conftest import DATABASE, Tenant, seed_customers, start_worker
from chaos.load import MixedLoad
from tests.receiver import Receiver, running_receiver

DOWN_SECONDS = 5.0
# After the load: how long the worker may take to deliver what was committed.
DELIVERY_SECONDS = 60.0


async def _subscribe(cluster: Cluster, tenant: Tenant, receiver: Receiver) -> None:
    engine = create_engine(cluster.url(DATABASE), get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            endpoint = await webhook_endpoints.create(
                session,
                system_caller(tenant.workspace_id),
                EndpointCreate.model_validate({"url": receiver.url, "event_types": ["customer.created"]}),
            )
            receiver.secrets.append(endpoint.secret)
            await session.commit()
    finally:
        await engine.dispose()


async def _created_events(dsn: str, tenant: Tenant) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM outbox_events WHERE workspace_id = $1 AND type = 'customer.created'", tenant.workspace_id
        )
    finally:
        await conn.close()
    return {str(row["id"]) for row in rows}


async def test_the_worker_delivers_every_committed_event_across_a_database_crash(
    cluster: Cluster,
    make_service: Callable[..., ServerProcess],
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
    get_settings.cache_clear()
    logs = Path(tempfile.mkdtemp(prefix="guanxi-chaos-worker-"))
    async with running_receiver() as receiver:
        await _subscribe(cluster, tenant, receiver)
        worker = start_worker(cluster, logs)
        try:
            service = make_service()
            await seed_customers(service.base_url, tenant)
            async with MixedLoad(service.base_url, tenant.api_key, tenant.customer_ids):
                await asyncio.sleep(4)
                await asyncio.to_thread(cluster.stop, "immediate")
                await asyncio.sleep(DOWN_SECONDS)
                await asyncio.to_thread(cluster.start)
                await asyncio.sleep(6)
            committed = await _created_events(cluster.dsn(DATABASE), tenant)
            started = time.monotonic()
            delivered: set[str] = set()
            while time.monotonic() - started < DELIVERY_SECONDS:
                delivered = {r.headers["webhook-id"] for r in receiver.received}
                if committed <= delivered:
                    break
                await asyncio.sleep(0.5)
            took = time.monotonic() - started
            alive = worker.process.poll() is None
        finally:
            worker.stop()
        log = worker.log_path.read_text(errors="replace")
    get_settings.cache_clear()

    print(f"\n  worker across a {DOWN_SECONDS:g} s database crash: {len(committed)} customer.created committed,")
    print(
        f"     {len(committed & delivered)} delivered ({len(receiver.received)} requests) {took:.1f} s after the load"
    )
    assert alive, f"the worker exited:\n{log[-4000:]}"
    assert committed, "the load committed no creates"
    assert committed <= delivered, f"{len(committed - delivered)} committed events never delivered:\n{log[-4000:]}"
    assert not receiver.unverified, receiver.unverified[:3]
    # pgqueuer and asyncpg log the failures they met during the outage; none escaped the worker.
    assert "database lost; reconnecting" in log, log[-4000:]
    assert "unhandled error" not in log, log[-4000:]
