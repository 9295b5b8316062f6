"""Every class of bad input is a precise 4xx problem+json and changes nothing."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Customer
from tests.factories import Tenant, customer_body


async def _count(db: AsyncSession, tenant: Tenant) -> int:
    return int(await db.scalar(select(func.count()).where(Customer.workspace_id == tenant.id)) or 0)


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = dict(response.json())
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "张伟", "nickname": "小张"}, "nickname"),
        ({"name": 42}, "name"),
        ({"name": "张\x00伟"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({"name": "张伟", "emails": ["not-an-email"]}, "emails"),
        ({"name": "张伟", "phones": ["12345"]}, "phones"),
        ({"name": "张伟", "phones": ["+86 138 0013 800a"]}, "phones"),
        ({"name": "张伟", "kind": "robot"}, "kind"),
        ({"name": "张伟", "birthday": "2999-01-01"}, "birthday"),
        ({"name": "张伟", "tags": ["t"] * 51}, "tags"),
        ({"name": "张伟", "preferences": {"n": 2**64}}, "preferences"),
        ({"name": "张伟", "preferences": {"k": "a\x00b"}}, "preferences"),
        ({"name": "张伟", "address": {"country": "China"}}, "address"),
        ({"name": "张伟", "consent": {"email": "yes please"}}, "consent"),
        ({"name": "张伟", "custom_fields": {"undefined_field": 1}}, "custom_fields"),
        ({"name": "张伟", "birthday": 0}, "birthday"),
        ({"name": "张伟", "birthday": "1988-04-12T00:00:00Z"}, "birthday"),
    ],
)
async def test_create_rejects_bad_fields_with_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession, body: dict[str, object], field: str
) -> None:
    response = await client.post("/api/v1/customers", json=body, headers=tenant.headers())
    problem = _assert_problem(response, 422)
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert any(field in error["loc"] for error in errors), errors
    assert await _count(db, tenant) == 0


async def test_malformed_json_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/customers", content=b'{"name": ', headers={**tenant.headers(), "content-type": "application/json"}
    )
    _assert_problem(response, 422)


@pytest.mark.parametrize(
    "query",
    [
        "limit=101",
        "limit=0",
        f"limit={2**64}",
        "cursor=not-a-cursor!!",
        "cursor=WzEsMiwzXQ",  # a well-formed list of the wrong shape
        "sort=password",
        "owner_id=not-a-uuid",
        "created_after=yesterday",
        # RFC 3339 with an offset, as the document's `date-time` says: no Unix seconds, no bare
        # date, no local time.
        "created_before=0.5",
        "created_before=2026-11-22",
        "created_before=2026-11-22T08:00:00",
        "created_before=0001-01-01T00:00:00%2B01:00",
        "created_before=9999-12-31T23:59:59-01:00",
        "custom.unknown_field=1",
        "q=" + "x" * 101,
        "q=%00",
    ],
)
async def test_list_rejects_bad_query_parameters(client: httpx.AsyncClient, tenant: Tenant, query: str) -> None:
    response = await client.get(f"/api/v1/customers?{query}", headers=tenant.headers())
    _assert_problem(response, 422)


async def test_unknown_id_is_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get(f"/api/v1/customers/{uuid.uuid4()}", headers=tenant.headers())
    _assert_problem(response, 404)


async def test_malformed_id_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get("/api/v1/customers/12345", headers=tenant.headers())
    _assert_problem(response, 422)


async def test_malformed_id_is_422_whatever_the_if_match(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for if_match in ("*bad*", '"1"'):
        response = await client.patch(
            "/api/v1/customers/12345", json={"name": "李娜"}, headers={**tenant.headers(), "If-Match": if_match}
        )
        _assert_problem(response, 422)


async def test_idempotency_key_outside_visible_ascii_is_422_naming_it(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    # As bytes: the last is not ASCII, which httpx would refuse to send as text.
    for key in (b"has space", b"x" * 256, b"tab\tkey", "ключ".encode()):
        headers = {name.encode(): value.encode() for name, value in tenant.headers().items()}
        response = await client.post(
            "/api/v1/customers", json=customer_body(), headers={**headers, b"Idempotency-Key": key}
        )
        problem = _assert_problem(response, 422)
        assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]  # type: ignore[index]
    assert await _count(db, tenant) == 0


async def test_text_longer_than_its_column_is_422_not_500(client: httpx.AsyncClient, tenant: Tenant) -> None:
    segment = await client.post(
        "/api/v1/segments",
        json={"name": "Call list", "kind": "static", "description": "x" * 1001},
        headers=tenant.headers(),
    )
    _assert_problem(segment, 422)
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    stage = await client.post(
        f"/api/v1/customers/{created['id']}/stage",
        json={"stage": "lead", "reason": "x" * 501},
        headers=tenant.headers(),
    )
    _assert_problem(stage, 422)


async def test_text_is_measured_as_sent_and_stored_trimmed(client: httpx.AsyncClient, tenant: Tenant) -> None:
    blank = await client.post("/api/v1/customers", json={"name": "\u00a0\u3000"}, headers=tenant.headers())
    assert _assert_problem(blank, 422)["errors"][0]["msg"].endswith("must not be blank")  # type: ignore[index]
    # The document's maxLength counts the text as sent, surrounding spaces included.
    padded = await client.post("/api/v1/customers", json={"name": " " + "x" * 200}, headers=tenant.headers())
    _assert_problem(padded, 422)
    trimmed = await client.post("/api/v1/customers", json={"name": "  张伟  "}, headers=tenant.headers())
    assert trimmed.status_code == 201
    assert trimmed.json()["name"] == "张伟"


async def test_empty_cursor_is_the_first_page(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    for query in ("cursor=", "cursor=&q=张", "cursor=&q=example.com"):
        for who in ("admin", "sales"):
            response = await client.get(f"/api/v1/customers?{query}", headers=tenant.headers(who))
            assert response.status_code == 200, (query, who, response.text)
    listed = (await client.get("/api/v1/customers?cursor=", headers=tenant.headers())).json()["items"]
    assert [c["id"] for c in listed] == [created["id"]]


async def test_unparseable_if_match_is_412(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    response = await client.patch(
        f"/api/v1/customers/{created['id']}", json={"name": "李娜"}, headers={**tenant.headers(), "If-Match": "*bad*"}
    )
    _assert_problem(response, 412)


async def test_patch_cannot_null_the_name_or_touch_protected_fields(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    created = (await client.post("/api/v1/customers", json=customer_body(), headers=tenant.headers())).json()
    url = f"/api/v1/customers/{created['id']}"
    headers = {**tenant.headers(), "If-Match": '"1"'}
    _assert_problem(await client.patch(url, json={"name": None}, headers=headers), 422)
    for protected in ({"id": str(uuid.uuid4())}, {"version": 9}, {"workspace_id": str(uuid.uuid4())}, {"code": "X"}):
        _assert_problem(await client.patch(url, json=protected, headers=headers), 422)
    assert await db.scalar(select(Customer.version).where(Customer.id == created["id"])) == 1


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession) -> None:
    response = await client.post(
        "/api/v1/customers", json={"name": "张伟", "notes": "x" * 1_100_000}, headers=tenant.headers()
    )
    _assert_problem(response, 413)
    assert await _count(db, tenant) == 0


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient, tenant: Tenant) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 100_000

    response = await client.post(
        "/api/v1/customers", content=chunks(), headers={**tenant.headers(), "content-type": "application/json"}
    )
    _assert_problem(response, 413)


async def test_bad_idempotency_key_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/customers", json=customer_body(), headers={**tenant.headers(), "Idempotency-Key": "x" * 300}
    )
    _assert_problem(response, 422)


async def test_unknown_route_is_problem_json_404(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.get("/api/v1/nothing-here"), 404)


async def test_wrong_method_is_problem_json_405(client: httpx.AsyncClient, tenant: Tenant) -> None:
    _assert_problem(await client.put("/api/v1/customers", json={}, headers=tenant.headers()), 405)
