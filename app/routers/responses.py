"""Response helpers for routes: declared error responses, ETags, and idempotent creates."""

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from app.core import idempotency
from app.core.access import Caller
from app.core.db import DbSession
from app.http.json_response import dumps, json_response
from app.http.problems import PROBLEM_MEDIA_TYPE
from app.schemas.common import Problem

_DESCRIPTIONS = {
    400: "Malformed request (a body that is not JSON in UTF-8)",
    401: "Missing or invalid credentials",
    403: "Authenticated, but not allowed",
    404: "Not found in the caller's workspace (ids of other workspaces included)",
    409: "Conflict (a duplicate names the existing record in `existing_id`)",
    410: "Gone: the link has expired",
    412: "If-Match does not match the current version",
    413: "Body larger than the limit",
    422: "Invalid input; `errors` lists each bad field",
    428: "If-Match is required",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "Database unavailable; retry after `Retry-After` seconds",
}

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait.", "required": True, "schema": {"type": "integer", "minimum": 0}}
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

AUTH_ERRORS = (401, 403, 422, 429, 503)
PUBLIC_ERRORS = (422, 429, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses; every authenticated route also lists 401, 403, 422, 429 and 503."""
    return problem_responses(*statuses, *AUTH_ERRORS)


def public_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of a route without credentials (a token in the path is its credential)."""
    return problem_responses(*statuses, *PUBLIC_ERRORS)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # `model` puts Problem in the document's components; app.openapi_document moves its schema from
    # application/json, where FastAPI files it, to the problem+json that errors are sent as.
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status in sorted(set(statuses))
    }


CSV = "text/csv"
_TEXT = {"schema": {"type": "string"}}
_BYTES = {"schema": {"type": "string", "format": "binary"}}


def files(*media_types: str, headers: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """A 200 sent as a file of one of `media_types` (CSV as text, any other as bytes); with
    `response_class=Response`, so that FastAPI does not also declare it JSON."""
    content = {media_type: _TEXT if media_type == CSV else _BYTES for media_type in media_types}
    return {200: {"description": "The file", "content": content, **({"headers": headers} if headers else {})}}


def existing(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a create that found its record already there (by an external key)."""
    return {200: {"model": model, "description": description}}


def csv_alternative() -> dict[int | str, dict[str, Any]]:
    """The CSV a JSON route answers with instead for `Accept: text/csv`."""
    return {200: {"content": {CSV: _TEXT}}}


def resource_response(content: dict[str, Any], *, status_code: int = 200, location: str | None = None) -> Response:
    """A single resource with its version as the ETag."""
    headers = {"Location": location} if location else None
    return json_response(content, status_code=status_code, etag=content.get("version"), headers=headers)


async def idempotent(
    request: Request,
    session: DbSession,
    ctx: Caller,
    key: str | None,
    create: Callable[[], Awaitable[idempotency.StoredResponse]],
    *,
    shown_once: dict[str, Any] | None = None,
) -> Response:
    """Run `create` once per Idempotency-Key; a repeat gets the stored response. What `create` puts
    in `shown_once` (a secret, such as a voucher's code) is added to the first response only and
    never stored: a replay answers without it."""
    if key is None:
        return _render(await create(), replayed=False, shown_once=shown_once)
    key = idempotency.caller_key(ctx, key)
    fingerprint = idempotency.fingerprint(request.method, request.url.path, await request.body())
    stored = await idempotency.claim(session, ctx, key, fingerprint)
    if stored is not None:
        return _render(stored, replayed=True)
    stored = await create()
    idempotency.remember(session, ctx, key, fingerprint, stored)
    return _render(stored, replayed=False, shown_once=shown_once)


async def idempotent_statement(
    request: Request,
    session: DbSession,
    ctx: Caller,
    key: str | None,
    create: Callable[[idempotency.Claim | None], Awaitable[idempotency.StoredResponse]],
) -> Response:
    """`idempotent` for a create that is one statement in its own transaction and stores its response
    itself (a customer's). No transaction holds the key meanwhile: a request whose key another
    stored first, even one still in flight then, replays that response."""
    claim = None
    if key is not None:
        key = idempotency.caller_key(ctx, key)
        fingerprint = idempotency.fingerprint(request.method, request.url.path, await request.body())
        if (stored := await idempotency.stored_response(session, ctx, key, fingerprint)) is not None:
            return _render(stored, replayed=True)
        claim = idempotency.Claim(key, fingerprint)
    try:
        return _render(await create(claim), replayed=False)
    except idempotency.AlreadyStored as earlier:
        return _render(earlier.response, replayed=True)


def stored(status_code: int, content: Any, headers: dict[str, str] | None = None) -> idempotency.StoredResponse:
    body = _without_nul(orjson.loads(dumps(content)))
    return idempotency.StoredResponse(status_code=status_code, headers=headers or {}, body=body)


def stored_resource(
    content: dict[str, Any], *, location: str | None, status_code: int = 201
) -> idempotency.StoredResponse:
    """`resource_response` kept for an Idempotency-Key's replay: Location, and the version as the ETag."""
    headers = {"Location": location} if location else {}
    if (version := content.get("version")) is not None:
        headers["ETag"] = f'"{version}"'
    return stored(status_code, content, headers)


def _without_nul(value: Any) -> Any:
    """jsonb cannot hold NUL, and a problem in a batch result may quote one from the request (the
    name of an unknown key): stored and sent as U+FFFD, so the replay is the first response."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def _render(
    response: idempotency.StoredResponse, *, replayed: bool, shown_once: dict[str, Any] | None = None
) -> Response:
    headers = dict(response.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = {**response.body, **shown_once} if shown_once else response.body
    return Response(dumps(body), status_code=response.status_code, headers=headers, media_type="application/json")
