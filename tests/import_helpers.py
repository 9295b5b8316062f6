"""Helpers of the file-import tests: a customer made through the API, and a file queued through
`POST /imports` and run by the worker's own job code."""

import json
import uuid
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from app.models import ImportJob
from app.services.bulk import import_jobs
from tests.factories import Tenant, customer_body


async def create_customer(
    client: httpx.AsyncClient, tenant: Tenant, who: str = "admin", **fields: Any
) -> dict[str, Any]:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers(who))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def queue_and_run(
    app: FastAPI,
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    tenant: Tenant,
    upload: tuple[str, bytes],
    *,
    kind: str,
    mapping: dict[str, str],
    who: str,
    form: dict[str, str],
) -> tuple[dict[str, Any], ImportJob]:
    """The 202 body of the upload and the job once processed."""
    name, content = upload
    queued = await client.post(
        "/api/v1/imports",
        files={"file": (name, content)},
        data={"mapping": json.dumps(mapping), "type": kind, **form},
        headers=tenant.headers(who),
    )
    assert queued.status_code == 202, queued.text
    job = await import_jobs.process(app.state.job_sessions, pool, tenant.id, uuid.UUID(queued.json()["id"]))
    return dict(queued.json()), job
