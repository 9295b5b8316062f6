"""Every route of the published document × every kind of caller × the caller's own, another
workspace's and an invisible customer's ids: never a 5xx, never a success on a record the caller may
not reach, never raw personal data for a masked caller, and never a header the document does not
declare on the response (nor one it declares required missing). Routes are read from the document, so a
new route joins the day it is added."""

import re
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from app.core.access import Scope
from tests.factories import Tenant, customer_body, make_api_key
from tests.response_headers import mismatches
from tests.test_masking import RAW, _seed

# Authenticated by what they carry, not by a caller: tests/test_route_security.py covers them.
PUBLIC = {"/api/v1/csat/{token}", "/api/v1/intake/{token}"}
# What each kind of caller sends; the key holds customers:read alone, so it is masked too.
ROLES = ("admin", "manager", "sales", "support", "readonly")
MASKED = {"readonly", "key"}
# Callers who must not reach a customer of another team's salesperson (own and team visibility).
NARROW = {"sales", "manager"}
# Colleagues are no customer's record: every user of the workspace may read them.
PEOPLE = ("/api/v1/users/", "/api/v1/teams/")


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/api/v1") and "{" in path and path not in PUBLIC
        for method in item
    )


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda found: ids.get(found.group(1), str(uuid.uuid4())), path)


async def _records(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """A customer of `sales` whose personal data changed, with an interaction, a ticket, an order and
    a segment it belongs to (the masking test's seed)."""
    return await _seed(client, tenant) | {"user_id": str(tenant.users["sales"].id), "team_id": str(tenant.team.id)}


async def _invisible(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """A customer of a salesperson of the other team, with an interaction, a ticket and an order."""
    admin = tenant.headers()

    async def made(path: str, body: dict[str, Any]) -> str:
        response = await client.post(f"/api/v1{path}", json=body, headers=admin)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    customer = await made("/customers", customer_body(owner_id=str(tenant.users["sales_west"].id)))
    contact = {
        "customer_id": customer,
        "channel": "phone",
        "direction": "inbound",
        "occurred_at": "2026-03-01T02:00:00Z",
    }
    order = {
        "external_id": "SO-WEST",
        "customer_id": customer,
        "ordered_at": "2026-03-01T02:00:00Z",
        "currency": "CNY",
        "total_amount": "20.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20.00"}],
    }
    return {
        "customer_id": customer,
        "interaction_id": await made("/interactions", contact),
        "ticket_id": await made(
            "/tickets", {"customer_id": customer, "type": "inquiry", "channel": "phone", "subject": "?"}
        ),
        "order_id": await made("/orders", order),
        "user_id": str(tenant.users["sales_west"].id),
    }


async def test_every_route_for_every_caller_on_own_foreign_and_invisible_ids(
    app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_other_tenant: Tenant
) -> None:
    own = await _records(live_client, live_tenant)
    invisible = await _invisible(live_client, live_tenant)
    foreign = await _records(live_client, live_other_tenant)
    async with app.state.sessions() as session:
        key = await make_api_key(session, live_tenant, scopes=[Scope.CUSTOMERS_READ])
        await session.commit()
    callers: dict[str, dict[str, str]] = {role: live_tenant.headers(role) for role in ROLES}
    callers["key"] = {"X-API-Key": key}
    failures: list[tuple[Any, ...]] = []
    reached: set[tuple[str, str]] = set()
    # Reads first on every kind of id; a write is tried only on ids the caller must not reach, so
    # the walk changes nothing it should not, and deletes come last.
    operations = sorted(_operations(app), key=lambda operation: operation[0] == "delete")
    document = app.openapi()
    for method, path in operations:
        for who, headers in callers.items():
            variants = {"foreign": foreign, "invisible": invisible} | ({"own": own} if method == "get" else {})
            for variant, ids in variants.items():
                url = _concrete(path, ids)
                body: dict[str, Any] | None = {} if method in ("post", "put", "patch") else None
                response = await live_client.request(
                    method.upper(), url, json=body, headers={**headers, "If-Match": "*"}
                )
                status = response.status_code
                text = response.content.decode("utf-8", errors="replace")
                if status >= 500:
                    failures.append(("5xx", who, method, path, variant, status))
                elif variant == "foreign" and status < 300:
                    failures.append(("foreign id answered", who, method, path, status))
                elif variant == "invisible" and who in NARROW and status < 300 and not path.startswith(PEOPLE):
                    failures.append(("invisible customer answered", who, method, path, status))
                if wrong := mismatches(document, method, path, status, response.headers):
                    failures.append(("headers", who, method, path, status, wrong))
                if who in MASKED and any(value in text for value in RAW):
                    failures.append(("raw personal data", who, method, path, variant))
                if variant == "own" and status == 200:
                    reached.add((who, path))
    assert failures == []
    # The walk read real records: every caller reached the customer it may see, and its timeline.
    for who in callers:
        assert {(who, "/api/v1/customers/{customer_id}"), (who, "/api/v1/customers/{customer_id}/timeline")} <= reached
