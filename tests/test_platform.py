"""Probes, the OpenAPI contract, request ids and the migrations."""

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.core import migrations
from tests.database import TEST_DATABASE, fresh_database
from tests.factories import Tenant


async def test_probes(live_client: httpx.AsyncClient) -> None:
    assert (await live_client.get("/healthz")).json() == {"status": "ok"}
    ready = await live_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_request_id_is_echoed_or_generated(live_client: httpx.AsyncClient) -> None:
    echoed = await live_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await live_client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["x-request-id"]) == 32


async def test_openapi_declares_security_and_errors_on_every_route(live_client: httpx.AsyncClient) -> None:
    spec = (await live_client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    schemes = spec["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= schemes.keys()
    for path, operations in spec["paths"].items():
        # Authenticated by what the body or the path carries: a password, a CSAT or an intake token,
        # a channel's callback token.
        if (
            not path.startswith("/api/v1")
            or path.startswith("/api/v1/channel-callbacks/")
            or path
            in (
                "/api/v1/auth/token",
                "/api/v1/csat/{token}",
                "/api/v1/intake/{token}",
            )
        ):
            continue
        for method, operation in operations.items():
            assert operation.get("security"), f"{method} {path} declares no security"
            assert {"401", "403", "422"} <= operation["responses"].keys(), f"{method} {path}"
            assert operation.get("summary"), f"{method} {path}"
    assert (await live_client.get("/docs")).status_code == 200


async def test_openapi_documents_bodies_problems_and_headers(live_client: httpx.AsyncClient) -> None:
    spec = (await live_client.get("/openapi.json")).json()
    created = spec["paths"]["/api/v1/customers"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CustomerOut"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method} {path}"
            responses = operation["responses"]
            for status, response in responses.items():
                content = response.get("content", {})
                if int(status) >= 400:
                    # Sent as problem+json, so documented as that alone.
                    assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                else:
                    # A route returning a plain Response is documented as a string by FastAPI: JSON
                    # never is (a file or CSV is, under its own media type).
                    assert content.get("application/json", {}).get("schema") != {"type": "string"}, where
            if "requestBody" in operation:
                assert "400" in responses, where
            for status, header in (("401", "WWW-Authenticate"), ("429", "Retry-After"), ("503", "Retry-After")):
                if status in responses:
                    assert responses[status]["headers"][header]["required"], where
            for parameter in operation.get("parameters", []):
                if parameter["name"].lower() == "if-match":
                    assert parameter["required"], where


async def test_405_names_every_method_of_the_path(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.put(f"/api/v1/customers/{uuid.uuid4()}", headers=tenant.headers())
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_a_path_a_route_spells_out_is_never_read_as_an_id(
    client: httpx.AsyncClient, tenant: Tenant, method: str
) -> None:
    """`/customers/search` is the search route's, not a customer with the malformed id "search"."""
    headers = {**tenant.headers(), "If-Match": '"1"'}
    response = await client.request(method, "/api/v1/customers/search", headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["status"] == 405
    assert (await client.request(method, "/api/v1/customers/12345", headers=headers)).status_code == 422


@pytest.fixture(scope="module")
def scratch_database_url() -> str:
    return fresh_database(f"{TEST_DATABASE}_migrations")


def test_migrations_match_the_models(database_url: str) -> None:
    migrations.check(database_url)


async def test_migrations_downgrade_and_upgrade_with_data(scratch_database_url: str) -> None:
    # Alembic's env runs its own event loop, so it goes to a thread.
    await asyncio.to_thread(migrations.upgrade, scratch_database_url)
    engine = create_async_engine(scratch_database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO workspaces (id, slug, name) VALUES ('01900000-0000-7000-8000-000000000001', 'm', 'M');")
        )
        await conn.execute(
            text(
                "INSERT INTO customers (workspace_id, id, code, kind, name, search_text) VALUES "
                "('01900000-0000-7000-8000-000000000001', '01900000-0000-7000-8000-000000000002', 'KH-1', "
                "'individual', '张伟', '张伟 kh-1')"
            )
        )
    await engine.dispose()
    await asyncio.to_thread(migrations.downgrade, scratch_database_url, "base")
    await asyncio.to_thread(migrations.upgrade, scratch_database_url)
    engine = create_async_engine(scratch_database_url)
    async with engine.connect() as conn:
        tables = await conn.scalar(
            text("SELECT count(*) FROM information_schema.tables WHERE table_name = 'customers'")
        )
    await engine.dispose()
    assert tables == 1


async def test_readyz_is_503_on_an_unmigrated_database(scratch_database_url: str) -> None:
    from app.core.settings import get_settings
    from app.main import create_app

    await asyncio.to_thread(migrations.downgrade, scratch_database_url, "base")
    application = create_app(get_settings(), database_url=scratch_database_url)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http:
            response = await http.get("/readyz")
        assert response.status_code == 503
        assert "guanxi migrate" in response.json()["detail"]
    finally:
        await application.state.engine.dispose()
        await application.state.read_engine.dispose()


async def test_ids_made_in_sql_are_time_ordered_uuid7(db: AsyncSession) -> None:
    # guanxi_uuid7() (migration 0004), for ids of rows written set-based in SQL.
    rows = (
        await db.execute(
            text("SELECT guanxi_uuid7(), clock_timestamp() FROM generate_series(1, 2000)"),
        )
    ).all()
    ids = [row[0] for row in rows]
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}
    milliseconds = [int.from_bytes(made.bytes[:6], "big") for made in ids]
    for ms, (_, at) in zip(milliseconds, rows, strict=True):
        assert abs(ms - at.timestamp() * 1000) < 1000
    # Made one after another, their timestamps never go back.
    assert milliseconds == sorted(milliseconds)
