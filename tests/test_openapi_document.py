"""The OpenAPI document as a generated client reads it: readable unique operation ids, every 2xx body
typed under the media types the routes send, optional parameters that are never null, and a problem
schema that names every extension a problem is raised with. What the responses really send is the
contract run's (tests/test_contract.py) and the route matrix's (tests/test_route_matrix.py); the last
test here sends the answers those rarely reach."""

import ast
import inspect
import pathlib
import re
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

import app
from app.core.errors import DomainError
from app.core.settings import get_settings
from app.main import create_app
from tests.factories import Tenant, customer_body
from tests.response_headers import mismatches

# The document needs no database.
APP = create_app(get_settings(), database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
DOCUMENT = APP.openapi()
OPERATIONS = [
    (method, path, operation) for path, item in DOCUMENT["paths"].items() for method, operation in item.items()
]
WEBHOOKS = [operation for item in DOCUMENT["webhooks"].values() for operation in item.values()]


def _routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Each route with the prefix it is mounted under: FastAPI keeps an included router whole, with
    the prefix it was included at."""
    for route in routes:
        if isinstance(route, APIRoute):
            if route.include_in_schema:
                yield prefix, route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _routes(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]


ROUTES = list(_routes(APP.routes))


def _method(route: APIRoute) -> str:
    assert route.methods is not None and len(route.methods) == 1, route.path
    return next(iter(route.methods)).lower()


JSON = "application/json"
# The media types the routes send: JSON, CSV and XLSX files, Prometheus' text.
SENT = {JSON, "text/csv", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "text/plain"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        resolved: dict[str, Any] = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return resolved
    return schema


def test_every_route_is_in_the_document_once() -> None:
    documented = {(method, path) for method, path, _ in OPERATIONS}
    routed = [(_method(route), prefix + route.path) for prefix, route in ROUTES]
    assert sorted(routed) == sorted(documented)


@pytest.mark.parametrize(("prefix", "route"), ROUTES, ids=[route.name for _, route in ROUTES])
def test_an_operation_id_is_the_route_function_in_camel_case(prefix: str, route: APIRoute) -> None:
    operation_id = DOCUMENT["paths"][prefix + route.path][_method(route)]["operationId"]
    first, *rest = route.endpoint.__name__.split("_")
    assert operation_id == first + "".join(part.title() for part in rest)
    assert re.fullmatch(r"[a-z]+(?:[A-Z0-9][a-z0-9]*)*", operation_id), operation_id


def test_operation_ids_are_unique() -> None:
    counts = Counter(operation["operationId"] for operation in [*(op for _, _, op in OPERATIONS), *WEBHOOKS])
    assert [operation_id for operation_id, count in counts.items() if count > 1] == []
    assert [
        operation_id for operation_id in counts if not re.fullmatch(r"[a-z]+(?:[A-Z0-9][a-z0-9]*)*", operation_id)
    ] == []
    assert {"listCustomers", "getCustomer", "updateCustomer", "createTicket", "issueToken"} <= set(counts)


def test_every_2xx_body_is_typed_under_a_media_type_the_routes_send() -> None:
    untyped = []
    for method, path, operation in OPERATIONS:
        for status, response in operation["responses"].items():
            if not status.startswith("2"):
                continue
            for media_type, content in response.get("content", {}).items():
                schema = content.get("schema", {})
                typed = media_type in SENT and bool(schema) and ("$ref" in schema or "type" in _resolve(schema))
                if media_type == JSON and typed:
                    typed = "type" in _resolve(schema) or any(key in schema for key in ("anyOf", "oneOf"))
                if not typed:
                    untyped.append((method, path, status, media_type, schema))
    assert untyped == []


@pytest.mark.parametrize(("prefix", "route"), ROUTES, ids=[route.name for _, route in ROUTES])
def test_a_route_that_answers_other_than_json_declares_it(prefix: str, route: APIRoute) -> None:
    """A route that builds its own non-JSON response (a file, or CSV for `Accept: text/csv`) declares a
    media type beside JSON, and only such a route does."""
    source = inspect.getsource(route.endpoint)
    builds = re.search(r"\b(?:Streaming)?Response\(", source) is not None and "media_type=" in source
    responses = DOCUMENT["paths"][prefix + route.path][_method(route)]["responses"]
    declared = {
        media_type
        for status, response in responses.items()
        if status.startswith("2")
        for media_type in response.get("content", {})
    }
    assert builds == bool(declared - {JSON}), declared


def test_an_optional_parameter_is_never_null() -> None:
    """Left out when it has no value: neither a header nor a query string can carry a null."""
    nullable = [
        (method, path, parameter["name"])
        for method, path, operation in OPERATIONS
        for parameter in operation.get("parameters", [])
        if {"type": "null"} in parameter["schema"].get("anyOf", [])
    ]
    assert nullable == []
    (key,) = [
        parameter
        for parameter in DOCUMENT["paths"]["/api/v1/customers"]["post"]["parameters"]
        if parameter["name"] == "Idempotency-Key"
    ]
    assert key["schema"]["type"] == "string"


def _domain_errors() -> dict[str, type[DomainError]]:
    found: dict[str, type[DomainError]] = {}
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        error = pending.pop()
        found[error.__name__] = error
        pending.extend(error.__subclasses__())
    return found


def _extensions() -> dict[str, str]:
    """Each member a problem is raised with beyond RFC 9457's, and where: the keywords given to a
    domain error that passes them through, and those its own constructor passes on."""
    errors = _domain_errors()
    passes_through = {name for name, error in errors.items() if error.__init__ is DomainError.__init__}
    members: dict[str, str] = {}
    for source in pathlib.Path(app.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            # `super().__init__(detail, ...)` inside a domain error's own constructor.
            passes_on = callee == "__init__" and source.name == "errors.py"
            if callee in passes_through or passes_on:
                for keyword in node.keywords:
                    if keyword.arg is not None:
                        members.setdefault(keyword.arg, f"{source}:{node.lineno}")
    return members


def test_the_problem_schema_declares_every_extension() -> None:
    declared = set(DOCUMENT["components"]["schemas"]["Problem"]["properties"])
    extensions = _extensions()
    assert {"errors", "existing_id", "field", "current_version", "allowed"} <= set(extensions)
    assert {member: where for member, where in extensions.items() if member not in declared} == {}


def _json_ref(response: dict[str, Any]) -> str | None:
    ref: str | None = response.get("content", {}).get(JSON, {}).get("schema", {}).get("$ref")
    return ref


def test_every_201_declares_a_location_read_at_its_collection() -> None:
    """A create answered 201 names what it made, read by a GET at `{its path}/{id}` (a
    sub-collection's too: /tickets/{ticket_id}/comments/{comment_id}) or at the item route that
    answers its body's schema (a segment's snapshot is a segment); a create with nothing for its
    caller to read answers 200 instead (docs/decisions.md). tests/test_read_after_create.py sends
    each of them and reads its Location."""
    item_gets = [
        (path, item["get"]) for path, item in DOCUMENT["paths"].items() if "get" in item and path.endswith("}")
    ]
    collections = {path.rsplit("/", 1)[0] for path, _ in item_gets}
    read_schemas = {_json_ref(get["responses"].get("200", {})) for _, get in item_gets} - {None}
    unreadable = [
        (method, path)
        for method, path, operation in OPERATIONS
        if (created := operation["responses"].get("201")) is not None
        and (
            "Location" not in created.get("headers", {})
            or (path not in collections and _json_ref(created) not in read_schemas)
        )
    ]
    assert unreadable == []
    created = {path for _, path, operation in OPERATIONS if "201" in operation["responses"]}
    new_reads = {"/api/v1/tickets/{ticket_id}/comments", "/api/v1/surveys/{survey_id}/responses", "/api/v1/api-keys"}
    assert new_reads <= created
    for path in ("/api/v1/tickets/{ticket_id}/csat-request", "/api/v1/intake/{token}"):
        assert set(DOCUMENT["paths"][path]["post"]["responses"]) & {"201", "202"} == set(), path


def _conforms(method: str, path: str, response: httpx.Response) -> None:
    declared = DOCUMENT["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, (method, path, response.status_code)
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in declared[str(response.status_code)].get("content", {}), (method, path, media_type)
    assert mismatches(DOCUMENT, method, path, response.status_code, response.headers) == []


async def test_creates_answer_with_the_statuses_and_headers_the_document_declares(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """The answers the contract run rarely reaches: a create's Location, a replay, and the 200 of a
    create that found its record already there."""
    admin = tenant.headers()
    body = customer_body()
    first = await client.post("/api/v1/customers", json=body, headers={**admin, "Idempotency-Key": "k-1"})
    replay = await client.post("/api/v1/customers", json=body, headers={**admin, "Idempotency-Key": "k-1"})
    assert (first.status_code, replay.headers["idempotent-replayed"]) == (201, "true")
    assert first.headers["location"] == f"/api/v1/customers/{first.json()['id']}"
    customer_id = first.json()["id"]
    order = {
        "external_id": "SO-1",
        "customer_id": customer_id,
        "ordered_at": "2026-03-01T02:00:00Z",
        "currency": "CNY",
        "total_amount": "20.00",
        "lines": [{"sku": "TEA", "product_name": "龙井", "quantity": "1", "unit_price": "20.00"}],
    }
    contact = {
        "customer_id": customer_id,
        "channel": "phone",
        "direction": "inbound",
        "occurred_at": "2026-03-01T02:00:00Z",
        "external_id": "CALL-1",
    }
    answers = [("post", "/api/v1/customers", first), ("post", "/api/v1/customers", replay)]
    for path, body in (("/api/v1/orders", order), ("/api/v1/interactions", contact)):
        created = await client.post(path, json=body, headers=admin)
        again = await client.post(path, json=body, headers=admin)
        assert (created.status_code, again.status_code) == (201, 200), (path, again.text)
        assert created.headers["location"] == f"{path}/{created.json()['id']}"
        answers += [("post", path, created), ("post", path, again)]
    task = {"customer_id": customer_id, "title": "Call back", "due_at": "2026-03-02T02:00:00Z"}
    answers.append(("post", "/api/v1/tasks", await client.post("/api/v1/tasks", json=task, headers=admin)))
    errors_of = await client.get(f"/api/v1/imports/{uuid.uuid4()}/errors", headers=admin)
    answers.append(("get", "/api/v1/imports/{job_id}/errors", errors_of))
    segment = await client.post("/api/v1/segments", json={"name": "Call list", "kind": "static"}, headers=admin)
    answers.append(("post", "/api/v1/segments", segment))
    members_path = f"/api/v1/segments/{segment.json()['id']}/members"
    members = await client.get(members_path, headers={**admin, "Accept": "text/csv"})
    assert members.headers["content-type"].startswith("text/csv")
    answers.append(("get", "/api/v1/segments/{segment_id}/members", members))
    report = await client.get("/api/v1/reports/value", headers={**admin, "Accept": "text/csv"})
    assert report.headers["content-type"].startswith("text/csv")
    answers.append(("get", "/api/v1/reports/value", report))
    for method, path, response in answers:
        _conforms(method, path, response)
