"""Hostile input in the URL, for every route the OpenAPI document declares: a 4xx, never a 5xx."""

import base64
import json
import re
import uuid

import httpx
import pytest
from fastapi import FastAPI

from tests.factories import Tenant


def _get_routes(app: FastAPI) -> list[tuple[str, list[str]]]:
    routes = []
    for path, item in app.openapi()["paths"].items():
        operation = item.get("get")
        if operation is None:
            continue
        names = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
        routes.append((re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path), names))
    return routes


async def test_a_nul_in_any_query_parameter_of_any_get_route_is_a_422(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    failures = []
    checked = 0
    for url, names in _get_routes(app):
        for name in names:
            response = await client.get(f"{url}?{name}=a%00b", headers=tenant.headers())
            checked += 1
            if response.status_code != 422 or response.json()["errors"][0]["loc"] != ["query", name]:
                failures.append((url, name, response.status_code))
    assert checked > 20
    assert failures == []


async def test_the_filters_seen_failing_refuse_a_nul(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for url in (
        "/api/v1/customers?tier=gold%00",
        "/api/v1/customers?rfm_segment=%00",
        "/api/v1/interactions?outcome=x%00",
        f"/api/v1/customers/{uuid.uuid4()}/orders?category=%00tea",
    ):
        response = await client.get(url, headers=tenant.headers())
        assert response.status_code == 422, url
        assert response.headers["content-type"] == "application/problem+json"


async def test_a_nul_in_a_path_parameter_is_a_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get("/api/v1/customers/ab%00cd", headers=tenant.headers())
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["path"]


def _unsigned(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + "A" * 22


@pytest.mark.parametrize("payload", [["\u0000"], "\u0000", [["x"]], [{"a": 1}], {"a": 1}, [2**70], [2**64, "x"]])
async def test_forged_cursors_are_422(client: httpx.AsyncClient, tenant: Tenant, payload: object) -> None:
    for url in ("/api/v1/customers", "/api/v1/interactions", "/api/v1/tickets", "/api/v1/tasks"):
        response = await client.get(url, params={"cursor": _unsigned(payload)}, headers=tenant.headers())
        assert response.status_code == 422, (url, response.text)
        assert response.json()["errors"][0]["loc"] == ["query", "cursor"]
