"""Fixtures: one PostgreSQL cluster of the suite's own, the real service as a uvicorn subprocess,
and a tenant with an API key and some customers to read."""

import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.core import migrations
from app.core.access import Scope
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.services.identity import api_keys, workspaces
from bench.harness import ServerProcess
from chaos.cluster import Cluster, free_port

DATABASE = "guanxi_chaos"
# `application_name` of the service's connections (app/core/db.py).
SERVICE_APPLICATION = "guanxi"


@dataclass(frozen=True)
class Tenant:
    workspace_id: uuid.UUID
    api_key: str
    customer_ids: list[str]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    created = Cluster()
    try:
        created.init()
        created.start()
        asyncio.run(created.create_database(DATABASE))
        migrations.upgrade(created.url(DATABASE))
        yield created
    finally:
        created.destroy()


@pytest.fixture
def make_service(cluster: Cluster) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `guanxi serve` (no demo, no in-process worker: the API alone, as production runs it)
    against a database URL, by default the cluster's; stopped after the test, and its log must hold
    no unhandled error."""
    started: list[ServerProcess] = []
    logs = Path(tempfile.mkdtemp(prefix="guanxi-chaos-service-"))

    def start(database_url: str | None = None) -> ServerProcess:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url or cluster.url(DATABASE),
            "GUANXI_DATA_DIR": str(logs),
            # The load comes from one API key; the per-caller limit is not what these tests measure.
            "GUANXI_RATE_LIMIT_PER_MINUTE": "10000000",
            "GUANXI_LOG_LEVEL": "WARNING",
        }
        argv = [
            sys.executable,
            "-c",
            "from app.cli import main; main()",
            "serve",
            "--no-demo",
            "--no-worker",
            "--port",
            str(port),
        ]
        server = ServerProcess("service", argv, env, logs / f"service-{port}.log", port)
        started.append(server)
        server.wait_healthy("/readyz")
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        text = server.log_path.read_text(errors="replace")
        assert "unhandled error" not in text, f"the service logged an unhandled error (logs in {logs}):\n{text[-4000:]}"
    shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture
async def tenant(cluster: Cluster) -> AsyncIterator[Tenant]:
    engine = create_engine(cluster.url(DATABASE), get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            slug = f"chaos-{uuid.uuid4().hex[:12]}"
            workspace, _ = await workspaces.create(
                session, slug=slug, name="Chaos", admin_email=f"admin@{slug}.example.com", admin_password="x" * 16
            )
            _, key = await api_keys.issue(
                session,
                workspace.id,
                name="chaos load",
                scopes=[Scope.CUSTOMERS_READ, Scope.CUSTOMERS_WRITE, Scope.CUSTOMERS_PII],
            )
            await session.commit()
    finally:
        await engine.dispose()
    yield Tenant(workspace_id=workspace.id, api_key=key, customer_ids=[])


def start_worker(cluster: Cluster, logs: Path, name: str = "worker", **env: str) -> ServerProcess:
    """`guanxi worker` against the cluster's database, its log `logs/<name>.log`; `env` adds
    settings (GUANXI_...)."""
    environment = {
        **os.environ,
        "DATABASE_URL": cluster.url(DATABASE),
        "GUANXI_DATA_DIR": str(logs),
        "GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "GUANXI_LOG_LEVEL": "WARNING",
        **env,
    }
    argv = [sys.executable, "-c", "from app.cli import main; main()", "worker"]
    # No port: the worker serves nothing; ServerProcess gives it a log and a clean stop.
    return ServerProcess(name, argv, environment, logs / f"{name}.log", 0)


async def seed_customers(base_url: str, tenant: Tenant, count: int = 50) -> None:
    """Customers for the readers, created through the API before any fault."""
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": tenant.api_key}, timeout=30) as http:
        for n in range(count):
            response = await http.post("/api/v1/customers", json={"name": f"seed {n}", "tags": ["seed"]})
            assert response.status_code == 201, response.text
            tenant.customer_ids.append(str(response.json()["id"]))
