"""The one JSON encoder of the service: orjson, UUIDs as strings and datetimes as RFC 3339 in UTC.

orjson writes a UTC datetime exactly as `app.core.wire.utc_text` does (a test holds them together);
every datetime that reaches it is in UTC: the database hands back `timestamptz` in UTC and input
times are turned to UTC when they are validated. Asking orjson to pass datetimes to `_default`
instead would cost a Python call for each, on every list page."""

import uuid
from decimal import Decimal
from typing import Any

import orjson
from starlette import responses
from starlette.responses import Response


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID subclass, which orjson does not take as a UUID.
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


class JSONResponse(responses.JSONResponse):
    """The default response class. A JSONResponse subclass, so FastAPI documents each route's
    `response_model` as its body schema (it documents a plain Response as a string)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_response(
    content: Any, *, status_code: int = 200, etag: int | None = None, headers: dict[str, str] | None = None
) -> Response:
    all_headers = dict(headers or {})
    if etag is not None:
        all_headers["ETag"] = f'"{etag}"'
    return Response(dumps(content), status_code=status_code, headers=all_headers, media_type="application/json")
