"""Rate limits per caller, load shedding, CORS, and the metrics endpoint."""

import asyncio

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.core.settings import Settings, get_settings
from app.http.middleware import InFlightLimit
from app.main import create_app
from tests.factories import Tenant


@pytest.mark.usefixtures("three_a_minute")
async def test_a_caller_over_its_rate_gets_429_with_retry_after(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    statuses = [(await client.get("/api/v1/customers", headers=tenant.headers())).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await client.get("/api/v1/customers", headers=tenant.headers())
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    # Another caller has its own budget.
    assert (await client.get("/api/v1/customers", headers=other_tenant.headers())).status_code == 200


async def test_cors_allows_only_configured_origins(database_url: str) -> None:
    settings = get_settings().model_copy(update={"cors_origins": "https://crm.example.com"})
    application = create_app(settings, database_url=database_url)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http:
            preflight = {"Access-Control-Request-Method": "GET"}
            allowed = await http.options(
                "/api/v1/customers", headers={"Origin": "https://crm.example.com", **preflight}
            )
            assert allowed.headers["access-control-allow-origin"] == "https://crm.example.com"
            refused = await http.options("/api/v1/customers", headers={"Origin": "https://evil.example", **preflight})
            assert "access-control-allow-origin" not in refused.headers
    finally:
        await application.state.engine.dispose()
        await application.state.read_engine.dispose()


async def test_metrics_expose_request_latency_and_pools(live_client: httpx.AsyncClient) -> None:
    await live_client.get("/healthz")
    body = (await live_client.get("/metrics")).text
    assert 'guanxi_request_seconds_count{method="GET",route="/healthz",status="2xx"}' in body
    assert 'guanxi_db_pool_connections{pool="read",state="checked_out"}' in body


async def test_requests_past_the_in_flight_limit_are_shed_with_503_at_once() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/healthz":
            entered.set()
            await release.wait()
        await JSONResponse({"ok": True})(scope, receive, send)

    limited = InFlightLimit(slow_app, limit=1, retry_after_seconds=2)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first = asyncio.create_task(http.get("/api/v1/customers"))
        await entered.wait()
        shed = await http.post("/api/v1/customers", json={"name": "x"})
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "2"
        assert shed.headers["content-type"] == "application/problem+json"
        assert shed.json()["type"].endswith("/overloaded")
        # Probes are never shed: the orchestrator must still see the process.
        assert (await http.get("/healthz")).status_code == 200
        release.set()
        assert (await first).status_code == 200
        assert (await http.get("/api/v1/customers")).status_code == 200
    assert limited.in_flight == 0


def test_the_in_flight_limit_is_on_by_default_and_can_be_turned_off() -> None:
    assert Settings().max_in_flight_requests > 0
    assert Settings(max_in_flight_requests=0).max_in_flight_requests == 0
