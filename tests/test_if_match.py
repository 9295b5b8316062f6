"""One version check for every write: `If-Match: *` matches any current version (RFC 9110), a stale
ETag is 412 and a missing one 428, for customers and interactions alike."""

from collections.abc import Awaitable, Callable

import httpx
import pytest

from app.core import clock
from tests.factories import Tenant, customer_body


async def _customer_url(client: httpx.AsyncClient, tenant: Tenant) -> str:
    created = await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())
    assert created.status_code == 201, created.text
    return f"/api/v1/customers/{created.json()['id']}"


async def _interaction_url(client: httpx.AsyncClient, tenant: Tenant) -> str:
    customer = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    body = {
        "customer_id": customer["id"],
        "channel": "phone",
        "direction": "outbound",
        "occurred_at": clock.now().isoformat(),
        "outcome": "reached",
    }
    created = await client.post("/api/v1/interactions", json=body, headers=tenant.headers())
    assert created.status_code == 201, created.text
    return f"/api/v1/interactions/{created.json()['id']}"


MakeResource = Callable[[httpx.AsyncClient, Tenant], Awaitable[str]]
RESOURCES = [
    pytest.param(_customer_url, {"title": "总监"}, {"title": "经理"}, id="customer"),
    pytest.param(_interaction_url, {"outcome": "interested"}, {"outcome": "no_answer"}, id="interaction"),
]


@pytest.mark.parametrize(("make", "first", "second"), RESOURCES)
async def test_if_match_star_patches_whatever_version_is_current(
    client: httpx.AsyncClient, tenant: Tenant, make: MakeResource, first: dict[str, str], second: dict[str, str]
) -> None:
    url = await make(client, tenant)
    star = {**tenant.headers(), "If-Match": "*"}
    changed = await client.patch(url, json=first, headers=star)
    assert changed.status_code == 200, changed.text
    assert changed.headers["ETag"] == '"2"'
    # Version 2 now, and `*` still matches.
    again = await client.patch(url, json=second, headers=star)
    assert again.status_code == 200, again.text
    assert again.headers["ETag"] == '"3"'
    assert {k: again.json()[k] for k in second} == second


@pytest.mark.parametrize(("make", "first", "second"), RESOURCES)
async def test_a_stale_etag_is_412_and_a_missing_one_428(
    client: httpx.AsyncClient, tenant: Tenant, make: MakeResource, first: dict[str, str], second: dict[str, str]
) -> None:
    url = await make(client, tenant)
    stale = await client.patch(url, json=first, headers={**tenant.headers(), "If-Match": '"7"'})
    assert stale.status_code == 412, stale.text
    assert stale.json()["current_version"] == 1
    missing = await client.patch(url, json=first, headers=tenant.headers())
    assert missing.status_code == 428, missing.text
    unchanged = (await client.get(url, headers=tenant.headers())).json()
    assert unchanged["version"] == 1


async def test_if_match_star_deletes_a_customer(client: httpx.AsyncClient, tenant: Tenant) -> None:
    url = await _customer_url(client, tenant)
    deleted = await client.delete(url, headers={**tenant.headers(), "If-Match": "*"})
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
