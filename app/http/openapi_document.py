"""What FastAPI does not infer for the OpenAPI document: errors sent as problem+json, the 400 of a
body that does not parse, If-Match as the required header it is, and form fields that cannot be null."""

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


def complete(document: dict[str, Any]) -> dict[str, Any]:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            _complete(operation)
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is not None:
                _text_only(_resolve(document, form["schema"]))
    return document


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
        branches = [branch for branch in field.get("anyOf", []) if branch != {"type": "null"}]
        if "anyOf" in field and len(branches) == 1:
            del field["anyOf"]
            field.update(branches[0])


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
