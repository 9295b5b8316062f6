"""What FastAPI does not infer for the OpenAPI document: errors sent as problem+json, the 400 of a
body that does not parse, If-Match as the required header it is, form fields and optional parameters
that cannot be null, and the response headers a client reads (each stated by the rule the code
follows when it sends it: tests/test_openapi_document.py and the contract run hold the two together)."""

import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.http.problems import PROBLEM_MEDIA_TYPE

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_UNPARSEABLE_BODY = {
    "description": "Malformed request (a body that is not JSON in UTF-8)",
    "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
}


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase (`list_customers` -> `listCustomers`): what a generated
    client names its method, stable while the function keeps its name."""
    first, *rest = route.name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ETAG = {
    "description": "The version of the resource, for `If-Match` on its next write.",
    "required": True,
    "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
}
_LOCATION = {
    "description": "The path of the resource created.",
    "required": True,
    "schema": {"type": "string", "format": "uri-reference"},
}
_REPLAYED = {
    "description": "`true` when this is the stored response of an earlier request with the same `Idempotency-Key`.",
    "required": False,
    "schema": {"type": "string", "enum": ["true"]},
}
_ITEM_PATH = re.compile(r"^(?P<collection>.+)/\{[^/}]+\}$")


def complete(document: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = document.get("paths", {})
    items = _item_schemas(document)
    for path, path_item in paths.items():
        for method, operation in path_item.items():
            _complete(operation)
            _headers(document, path, method, operation, items)
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is not None:
                _text_only(_resolve(document, form["schema"]))
    for path_item in document.get("webhooks", {}).values():
        for operation in path_item.values():
            # A receiver's answer is a 2xx or a failure to retry; FastAPI's 422 is its own validation's.
            operation["responses"] = {status: r for status, r in operation["responses"].items() if status[0] == "2"}
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in json.dumps(document):
            schemas.pop(unused, None)
    return document


def _item_schemas(document: dict[str, Any]) -> dict[str, str]:
    """The collection path of each resource read at `{collection}/{id}`, by its body's schema."""
    items: dict[str, str] = {}
    for path, path_item in document.get("paths", {}).items():
        found = _ITEM_PATH.match(path)
        if found is None or "get" not in path_item:
            continue
        ref = _json_schema(path_item["get"]["responses"].get("200", {})).get("$ref")
        if ref is not None:
            items.setdefault(ref, found["collection"])
    return items


def _json_schema(response: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema


def _headers(
    document: dict[str, Any], path: str, method: str, operation: dict[str, Any], items: dict[str, str]
) -> None:
    """ETag on every resource (a body with a `version`: `resource_response` sends it); Location on a
    create whose resource is read at `{collection}/{id}`, a sub-collection's included
    (`/tickets/{ticket_id}/comments/{comment_id}`), or at the item route of its body's schema; every
    201 is such a create (tests/test_openapi_document.py); Idempotent-Replayed where an
    Idempotency-Key is taken."""
    idempotent = any(
        parameter["in"] == "header" and parameter["name"].lower() == "idempotency-key"
        for parameter in operation.get("parameters", [])
    )
    for status, response in operation["responses"].items():
        if not status.startswith("2"):
            continue
        schema = _json_schema(response)
        headers: dict[str, Any] = {}
        if "version" in _resolve(document, schema).get("properties", {}):
            headers["ETag"] = _ETAG
        created = method == "post" and status in ("201", "202")
        if created and _creates_item(document, path):
            headers["Location"] = _LOCATION
        elif created and status == "201" and schema.get("$ref") in items:
            headers["Location"] = _LOCATION
        if idempotent:
            headers["Idempotent-Replayed"] = _REPLAYED
        if headers:
            response["headers"] = {**response.get("headers", {}), **headers}


def _creates_item(document: dict[str, Any], collection: str) -> bool:
    return any(
        "get" in path_item and (found := _ITEM_PATH.match(path)) is not None and found["collection"] == collection
        for path, path_item in document["paths"].items()
    )


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in schema:
        return schema
    resolved: dict[str, Any] = document
    for part in schema["$ref"].removeprefix("#/").split("/"):
        resolved = resolved[part]
    return resolved


def _text_only(form: dict[str, Any]) -> None:
    """A form field is text: an optional one is left out, it cannot be sent as null."""
    for field in form.get("properties", {}).values():
        _not_null(field)


def _not_null(schema: dict[str, Any]) -> None:
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if "anyOf" in schema and len(branches) == 1:
        del schema["anyOf"]
        schema.update(branches[0])
    elif "anyOf" in schema:
        schema["anyOf"] = branches


def _complete(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    for status, response in responses.items():
        content = response.get("content", {})
        # FastAPI files a response model under the route's media type; errors are problem+json only.
        if int(status) >= 400 and PROBLEM_MEDIA_TYPE in content and "application/json" in content:
            content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    if "requestBody" in operation and "400" not in responses:
        responses["400"] = _UNPARSEABLE_BODY
        operation["responses"] = dict(sorted(responses.items()))
    for parameter in operation.get("parameters", []):
        # Optional for FastAPI, so that a missing one is our 428 rather than a 422.
        if parameter["in"] == "header" and parameter["name"].lower() == "if-match":
            parameter["required"] = True
            parameter["schema"] = {"type": "string", "maxLength": 64}
        # An optional header or query parameter is left out; it cannot be sent as null.
        _not_null(parameter["schema"])
