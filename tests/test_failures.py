"""Known failures: the database unreachable, a commit that fails, connections the server ends. Never a 500,
never a lost write."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app.core.db import connection_lost, create_engine
from app.core.prepared import PreparedStatement
from app.core.settings import get_settings
from app.http.problems import install as install_problems
from app.http.problems import is_database_unavailable
from app.main import create_app
from app.models import Customer
from tests.factories import Tenant, customer_body
from tests.receiver import free_port

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/none"


@pytest.fixture
async def app_without_database() -> AsyncIterator[FastAPI]:
    application = create_app(get_settings(), database_url=UNREACHABLE)
    yield application
    await application.state.engine.dispose()
    await application.state.read_engine.dispose()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/customers"), ("POST", "/api/v1/customers"), ("GET", "/readyz")],
)
async def test_database_down_is_503_with_retry_after(
    app_without_database: FastAPI, tenant: Tenant, method: str, path: str
) -> None:
    transport = httpx.ASGITransport(app=app_without_database)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.request(method, path, json=customer_body(), headers=tenant.headers())
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert response.headers["content-type"] == "application/problem+json"
    assert "asyncpg" not in response.text and "Traceback" not in response.text


async def test_database_down_with_an_api_key_is_503(app_without_database: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app_without_database)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/api/v1/customers", headers={"X-API-Key": "gx_abcdefghjk_" + "s" * 43})
    assert response.status_code == 503


async def test_liveness_does_not_need_the_database(app_without_database: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app_without_database)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/healthz")).status_code == 200


@pytest.fixture
async def commit_fails_for_name(app: FastAPI) -> AsyncIterator[str]:
    """A deferred constraint trigger: PostgreSQL refuses the transaction at COMMIT, after every
    statement of the request succeeded."""
    name = "commit-will-fail"
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text(
                f"""
                CREATE FUNCTION test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.name = '{name}' THEN
                        RAISE EXCEPTION 'refused at commit' USING ERRCODE = '40001';
                    END IF;
                    RETURN NEW;
                END $$;
                """
            )
        )
        await conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON customers "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_at_commit()"
            )
        )
    yield name
    async with app.state.engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER test_fail_at_commit ON customers"))
        await conn.execute(text("DROP FUNCTION test_fail_at_commit()"))


async def test_a_failing_commit_is_an_error_response_and_nothing_is_stored(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, commit_fails_for_name: str
) -> None:
    response = await live_client.post(
        "/api/v1/customers", json=customer_body(name=commit_fails_for_name), headers=live_tenant.headers()
    )
    assert response.status_code == 503
    assert "retry-after" in response.headers
    async with app.state.sessions() as session:
        count = await session.scalar(select(func.count()).where(Customer.workspace_id == live_tenant.id))
    assert count == 0


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.exceptions.InterfaceError("connection is closed"), True),
        (asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation is in progress"), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), False),
        (asyncpg.exceptions.UniqueViolationError("duplicate key value"), False),
        (asyncpg.exceptions.SerializationError("could not serialize access"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_errors_that_end_a_connection_are_told_apart_from_statement_errors(error: BaseException, lost: bool) -> None:
    assert connection_lost(error) is lost


async def terminate(app: FastAPI, pid: int) -> None:
    async with app.state.engine.connect() as conn:
        # With a timeout, pg_terminate_backend waits until the backend is gone.
        assert await conn.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})


BACKEND_PID = PreparedStatement(select(func.pg_backend_pid().label("pid")))


TRANSACTION_START = PreparedStatement(select(func.now().label("now")))


async def test_a_prepared_statement_run_first_opens_the_sessions_transaction(app: FastAPI) -> None:
    """now() is the transaction's start: equal in one transaction, later in the next."""
    async with app.state.sessions() as session:
        first = await TRANSACTION_START.fetchrow(session, {})
        await asyncio.sleep(0.01)
        assert first is not None and await session.scalar(select(func.now())) == first["now"]
    async with app.state.readers() as session:
        first = await TRANSACTION_START.fetchrow(session, {})
        await asyncio.sleep(0.01)
        assert first is not None and await session.scalar(select(func.now())) > first["now"]


async def test_a_hot_read_on_a_connection_the_server_ended_is_unavailable_not_an_error(app: FastAPI) -> None:
    async with app.state.readers() as session:
        row = await BACKEND_PID.fetchrow(session, {})
        assert row is not None
        await terminate(app, row["pid"])
        with pytest.raises(DBAPIError) as caught:
            await BACKEND_PID.fetchrow(session, {})
    assert caught.value.connection_invalidated
    assert is_database_unavailable(caught.value)
    async with app.state.readers() as session:
        again = await BACKEND_PID.fetchrow(session, {})
    assert again is not None and again["pid"] != row["pid"]


async def test_a_pooled_connection_the_server_ended_is_replaced_before_use(app: FastAPI) -> None:
    await app.state.read_engine.dispose()
    async with app.state.readers() as session:
        killed = await session.scalar(text("SELECT pg_backend_pid()"))
    await terminate(app, killed)
    # The driver reads the end of the stream as soon as the loop runs.
    await asyncio.sleep(0.2)
    async with app.state.readers() as session:
        assert await session.scalar(text("SELECT pg_backend_pid()")) != killed
    assert app.state.read_engine.pool.checkedin() == 1


async def test_the_api_asks_the_server_to_end_transactions_left_silent(app: FastAPI) -> None:
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "10s"


async def test_a_transaction_the_server_ended_for_silence_is_unavailable_not_an_error(database_url: str) -> None:
    engine = create_engine(database_url, get_settings(), idle_in_transaction_timeout_ms=200)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0.6)
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert caught.value.connection_invalidated
    assert is_database_unavailable(caught.value)


async def test_a_refused_database_connection_is_unavailable_but_a_file_error_is_not(tmp_path: Path) -> None:
    # localhost: one refusal per address, which asyncio folds into a plain OSError.
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(OSError) as refused:
            await asyncpg.connect(host=host, port=free_port(), user="nobody", timeout=2)
        assert is_database_unavailable(refused.value)
    with pytest.raises(OSError) as file_error:
        (tmp_path / "missing-upload.csv").read_bytes()
    assert not is_database_unavailable(file_error.value)
    assert not is_database_unavailable(PermissionError(13, "Permission denied", "/srv/guanxi/.data"))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), 503),
        (asyncpg.exceptions.SerializationError("could not serialize access"), 503),
        (asyncpg.exceptions.UniqueViolationError("duplicate key value"), 409),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
async def test_errors_of_statements_run_on_the_raw_connection_are_answered_like_wrapped_ones(
    error: Exception, status: int
) -> None:
    """Long scans (the duplicate scan) run on the session's asyncpg connection with a timeout of their
    own, so their errors arrive unwrapped by SQLAlchemy: a timed-out scan is a 503, never a 500."""
    bare = FastAPI()
    install_problems(bare)

    @bare.get("/scan")
    async def scan() -> None:
        raise error

    transport = httpx.ASGITransport(app=bare, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/scan")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
