"""Liveness and readiness probes."""

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from app.core.metrics import POOL_CONNECTIONS, exposition_registry
from app.core.settings import get_settings
from app.http.json_response import json_response
from app.http.problems import is_database_unavailable, problem_response
from app.routers.responses import problem_responses
from app.schemas.operations import Alive, Ready
from app.services.operations import probes

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Alive, summary="The process is up")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Ready,
    responses=problem_responses(503),
    summary="The database answers and migrations are at head",
)
async def readyz(request: Request) -> Response:
    expected: str = request.app.state.migration_head
    try:
        async with request.app.state.readers() as session:
            current = await probes.schema_revision(session)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        return problem_response(
            request,
            status=503,
            title="Not ready",
            slug="not-ready",
            detail="The database is unavailable.",
            headers={"Retry-After": str(get_settings().retry_after_seconds)},
        )
    if current != expected:
        return problem_response(
            request,
            status=503,
            title="Not ready",
            slug="not-ready",
            detail=f"Migrations are at {current}, expected {expected}: run `guanxi migrate`.",
            headers={"Retry-After": str(get_settings().retry_after_seconds)},
        )
    return json_response({"status": "ready", "migration": current})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Request latency by route, pool use, job queue depth and webhook delivery states."""
    for name, engine in (("write", request.app.state.engine), ("read", request.app.state.read_engine)):
        pool = engine.pool
        POOL_CONNECTIONS.labels(name, "checked_out").set(pool.checkedout())
        POOL_CONNECTIONS.labels(name, "idle").set(pool.checkedin())
    try:
        async with request.app.state.readers() as session:
            await probes.record_queue_depths(session)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
    return Response(generate_latest(exposition_registry()), media_type=CONTENT_TYPE_LATEST)
