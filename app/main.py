"""The application factory."""

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from app.core import logs, migrations
from app.core.db import create_engine, create_sessionmaker, resolve_database_url
from app.core.settings import Settings, get_settings
from app.http import openapi_document, openapi_webhooks, problems
from app.http.allowed_methods import AllowedMethods
from app.http.json_response import JSONResponse
from app.http.middleware import InFlightLimit, RequestContextMiddleware
from app.http.rate_limits import RateLimiter, SignInThrottle
from app.http.read_lane import CustomerReadLane, ReadPool
from app.routers import health, v1
from app.routers.v1 import customers
from app.workers.worker import Worker

DOCS_ASSETS = "/docs-assets"
DESCRIPTION = """
Guanxi keeps the customer file and the work around it.

* **Auth**: `Authorization: Bearer <JWT>` from `POST /api/v1/auth/token`, or `X-API-Key: gx_…`.
* **Errors**: RFC 9457 `application/problem+json`.
* **Lists**: `?limit=1..100&cursor=…`, answered as `{"items": [...], "next_cursor": ...}`.
* **Writes**: `ETag` on every resource; `If-Match` on PATCH/DELETE; `Idempotency-Key` on creates.
* **Tracing**: every response carries `X-Request-ID` (the caller's, when well-formed).
"""


def create_app(
    settings: Settings | None = None, *, database_url: str | None = None, run_worker: bool = False
) -> FastAPI:
    """`run_worker` runs the background worker inside this process (for `make run`); production
    runs `guanxi worker` processes beside the API instead."""
    settings = settings or get_settings()
    logs.configure(settings.log_level)
    url = database_url or resolve_database_url(settings)
    engine = create_engine(url, settings, idle_in_transaction_timeout_ms=settings.idle_in_transaction_timeout_ms)
    read_engine = create_engine(url, settings, autocommit=True)
    read_pool = ReadPool(url, settings) if settings.read_lane_pool_size else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # What start-up built lives as long as the process: the collector need not scan it again.
        gc.freeze()
        worker = Worker(settings, url) if run_worker else None
        task = asyncio.create_task(worker.run()) if worker else None
        yield
        if worker and task:
            worker.request_stop()
            await task
        await engine.dispose()
        await read_engine.dispose()
        if read_pool:
            await read_pool.close()

    # The docs pages load Swagger UI and ReDoc from the app itself, not from a public CDN that company
    # networks and mainland China often cannot reach.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="Guanxi",
        version="1.0.0",
        description=DESCRIPTION,
        default_response_class=JSONResponse,
        generate_unique_id_function=openapi_document.operation_id,
        lifespan=lifespan,
        # The service reports through Prometheus and JSON logs; FastAPI's native OpenTelemetry would
        # look for a configured provider on every request, for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.engine = engine
    app.state.sessions = create_sessionmaker(engine)
    app.state.read_engine = read_engine
    app.state.readers = create_sessionmaker(read_engine)
    app.state.read_connections = read_pool
    app.state.migration_head = migrations.head()
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.sign_in_throttle = SignInThrottle()
    problems.install(app)
    app.include_router(health.router)
    app.include_router(v1.router)
    openapi_webhooks.document(app)
    openapi_document.install(app)
    app.state.allowed_methods = AllowedMethods(app.openapi)
    app.add_middleware(
        CustomerReadLane,
        get_route=customers.route_of(customers.get_customer),
        list_route=customers.route_of(customers.list_customers),
    )
    # Inside the request context, so a shed request still gets its request id, access line and metric.
    app.add_middleware(
        InFlightLimit,
        limit=settings.max_in_flight_requests,
        retry_after_seconds=settings.retry_after_seconds,
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        upload_max_bytes=settings.import_max_bytes + 65_536,
        allowed_methods=app.state.allowed_methods,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()],
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-Match", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["ETag", "Location", "X-Request-ID", "Retry-After", "Idempotent-Replayed"],
        )
    return app
