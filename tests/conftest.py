"""Fixtures: one migrated database per run, a rolled-back transaction per test, HTTP clients."""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import migrations
from app.core.db import asyncpg_dsn, create_asyncpg_pool, create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.http.rate_limits import RateLimiter
from app.main import create_app
from app.routers.deps import reader, unit_of_work
from tests.database import TEST_DATABASE, fresh_database
from tests.factories import Tenant, make_tenant
from tests.receiver import Receiver, running_receiver

# Webhook tests deliver to a receiver on 127.0.0.1, which production refuses. Settings are read at
# first use, after this.
os.environ.setdefault("GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")


@pytest.fixture(scope="session")
def database_url() -> str:
    url = fresh_database(TEST_DATABASE)
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(get_settings(), database_url=database_url)
    # Jobs run as the worker runs them, on an engine without the API's idle-in-transaction limit: an
    # import keeps its job's session open while its batches go through the pool.
    job_engine = create_engine(database_url, get_settings())
    application.state.job_sessions = create_sessionmaker(job_engine)
    yield application
    await job_engine.dispose()
    await application.state.engine.dispose()
    await application.state.read_engine.dispose()
    if application.state.read_connections is not None:
        await application.state.read_connections.close()


@pytest.fixture
async def db(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A session inside an outer transaction that is rolled back after the test. The app's own
    commits become savepoint releases, so they run for real and leave nothing behind."""
    async with app.state.engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False, autoflush=False
        )

        async def request_unit_of_work() -> AsyncIterator[AsyncSession]:
            # Nothing loaded by the test may stand in for what the request reads itself.
            session.expunge_all()
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

        async def request_reader() -> AsyncIterator[AsyncSession]:
            # In production each statement of a reader commits alone (a customer create is one):
            # what a request wrote through it stands, and what failed undid only itself.
            session.expunge_all()
            yield session
            await session.commit()

        @asynccontextmanager
        async def lane_connection() -> AsyncIterator[asyncpg.Connection]:
            # The read lane reads inside the test's transaction too, on the session's own connection.
            raw = await (await session.connection()).get_raw_connection()
            yield raw.driver_connection

        app.dependency_overrides[unit_of_work] = request_unit_of_work
        app.dependency_overrides[reader] = request_reader
        pool = app.state.read_connections
        app.state.read_connections = SimpleNamespace(connection=lane_connection)
        try:
            yield session
        finally:
            app.dependency_overrides.clear()
            app.state.read_connections = pool
            await session.close()
            await outer.rollback()


@pytest.fixture
async def client(app: FastAPI, db: AsyncSession) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def tenant(db: AsyncSession) -> Tenant:
    created = await make_tenant(db)
    # Released into the test's outer transaction: a request that fails and rolls back its own
    # work must not take the fixture's rows with it.
    await db.commit()
    return created


@pytest.fixture
async def other_tenant(db: AsyncSession) -> Tenant:
    created = await make_tenant(db)
    await db.commit()
    return created


@pytest.fixture
async def live_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its real sessions: every request commits, as in production. For tests of
    concurrency and failure; the data they make is removed with the workspace afterwards."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def _live_tenant(app: FastAPI, database_url: str) -> AsyncIterator[Tenant]:
    async with app.state.sessions() as session:
        tenant = await make_tenant(session)
        await session.commit()
    yield tenant
    # Clean-up is no API request: a workspace a test filled with thousands of rows may take longer
    # to cascade away than the API's statement limit, and than the engine's client-side command
    # timeout above it, on a busy machine. So it runs on a connection of its own with neither.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("SET statement_timeout = '120s'")
        await conn.execute("DELETE FROM workspaces WHERE id = $1", tenant.id, timeout=120)
    finally:
        await conn.close()


@pytest.fixture
async def live_tenant(app: FastAPI, database_url: str) -> AsyncIterator[Tenant]:
    async for tenant in _live_tenant(app, database_url):
        yield tenant


@pytest.fixture
async def live_other_tenant(app: FastAPI, database_url: str) -> AsyncIterator[Tenant]:
    """A second committed workspace, for tenancy tests of live work."""
    async for tenant in _live_tenant(app, database_url):
        yield tenant


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running
    assert not running.unverified, f"deliveries failed signature verification: {running.unverified}"


@pytest.fixture
async def pool(app: FastAPI, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The worker's asyncpg pool, for driving webhook attempts as a worker does."""
    created = await create_asyncpg_pool(database_url, get_settings(), size=12)
    yield created
    await created.close()


@pytest.fixture
def three_a_minute(app: FastAPI) -> Iterator[None]:
    """Every caller's rate limit at 3 requests a minute, for the test."""
    saved = app.state.rate_limiter
    app.state.rate_limiter = RateLimiter(3)
    try:
        yield
    finally:
        app.state.rate_limiter = saved
