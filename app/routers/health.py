"""Liveness and readiness probes."""

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import Response

from app.json_response import json_response
from app.problems import is_database_unavailable, problem_response
from app.settings import get_settings

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="The database answers and migrations are at head")
async def readyz(request: Request) -> Response:
    expected: str = request.app.state.migration_head
    try:
        async with request.app.state.readers() as session:
            current = None
            # A database that was never migrated has no alembic_version table at all.
            if await session.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
                current = await session.scalar(text("SELECT version_num FROM alembic_version"))
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
