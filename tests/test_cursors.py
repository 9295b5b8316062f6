"""Every list's cursor is the service's own: a tampered, forged or another list's cursor is a 422."""

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from app.core.pagination import encode_cursor
from tests.factories import Tenant, customer_body

# (the name the service signs the list's cursors with, its path, a key of the right types)
_NOW = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
_LISTS: list[tuple[str, str, list[Any]]] = [
    ("customers:-created_at", "/api/v1/customers", [_NOW, uuid.uuid4()]),
    ("interactions", "/api/v1/interactions", [_NOW, uuid.uuid4()]),
    ("tickets", "/api/v1/tickets", [_NOW, uuid.uuid4()]),
    ("events", "/api/v1/events", [5, uuid.uuid4()]),
    ("customer-search", "/api/v1/customers?q=zhang", ["substring", 20]),
]


def _tampered(cursor: str) -> str:
    """The same cursor with its values edited and the MAC kept."""
    payload, mac = cursor.split(".")
    values = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    values[-1] = str(uuid.uuid4()) if isinstance(values[-1], str) else values[-1] + 1
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=") + "." + mac


def _assert_cursor_problem(response: httpx.Response, where: str = "query") -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == [where, "cursor"]


def _page(path: str, cursor: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}cursor={cursor}"


@pytest.mark.parametrize(("list_name", "path", "key"), _LISTS)
async def test_a_cursor_the_service_signed_for_the_list_is_taken(
    client: httpx.AsyncClient, tenant: Tenant, list_name: str, path: str, key: list[Any]
) -> None:
    response = await client.get(_page(path, encode_cursor(list_name, key)), headers=tenant.headers())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("list_name", "path", "key"), _LISTS)
async def test_a_tampered_cursor_is_422(
    client: httpx.AsyncClient, tenant: Tenant, list_name: str, path: str, key: list[Any]
) -> None:
    response = await client.get(_page(path, _tampered(encode_cursor(list_name, key))), headers=tenant.headers())
    _assert_cursor_problem(response)


@pytest.mark.parametrize(("list_name", "path", "key"), _LISTS)
async def test_another_lists_cursor_is_422(
    client: httpx.AsyncClient, tenant: Tenant, list_name: str, path: str, key: list[Any]
) -> None:
    # The same values, signed for a list of the same shape: only the list differs.
    other = f"audit:customer:{uuid.uuid4()}"
    response = await client.get(_page(path, encode_cursor(other, key)), headers=tenant.headers())
    _assert_cursor_problem(response)


@pytest.mark.parametrize(("list_name", "path", "key"), _LISTS)
@pytest.mark.parametrize("wrong", [["yesterday", "not-a-uuid"], [1.5, 2], [True, None], ["x"], []])
async def test_a_signed_cursor_with_values_of_the_wrong_types_is_422(
    client: httpx.AsyncClient, tenant: Tenant, list_name: str, path: str, key: list[Any], wrong: list[Any]
) -> None:
    response = await client.get(_page(path, encode_cursor(list_name, wrong)), headers=tenant.headers())
    _assert_cursor_problem(response)


@pytest.mark.parametrize("cursor", ["garbage", "a.b.c", "WzEsMiwzXQ", "WzEsMiwzXQ.", "." * 600])
async def test_a_cursor_that_is_not_one_is_422(client: httpx.AsyncClient, tenant: Tenant, cursor: str) -> None:
    for path in ("/api/v1/customers", "/api/v1/tickets", "/api/v1/events"):
        response = await client.get(_page(path, cursor), headers=tenant.headers())
        assert response.status_code == 422, (path, response.text)


async def test_a_real_cursor_walks_the_list_and_cannot_be_moved_to_another(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for _ in range(3):
        assert (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).is_success
    first = (await client.get("/api/v1/customers?limit=2", headers=tenant.headers())).json()
    next_page = _page("/api/v1/customers?limit=2", first["next_cursor"])
    second = (await client.get(next_page, headers=tenant.headers())).json()
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    assert {c["id"] for c in first["items"]}.isdisjoint(c["id"] for c in second["items"])
    # The sort is part of the list: the cursor of one order is refused by another.
    moved = await client.get(_page("/api/v1/customers?sort=name", first["next_cursor"]), headers=tenant.headers())
    _assert_cursor_problem(moved)
    searched = await client.post(
        "/api/v1/customers/search",
        json={"filter": {"field": "name", "op": "eq", "value": "张伟"}, "cursor": first["next_cursor"]},
        headers=tenant.headers(),
    )
    _assert_cursor_problem(searched, "body")
    tampered = await client.get(_page("/api/v1/customers", _tampered(first["next_cursor"])), headers=tenant.headers())
    _assert_cursor_problem(tampered)
