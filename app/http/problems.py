"""One mapping from every failure to RFC 9457 problem+json; nothing internal reaches a client."""

import logging
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.core.errors import DomainError
from app.core.problems import problem_body, validation_problem
from app.core.settings import get_settings

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_HTTP_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Payload too large",
    415: "Unsupported media type",
}


DATABASE_UNAVAILABLE = "The database is unavailable; retry shortly."
STATEMENT_TIMED_OUT = "The request took longer than the statement time limit."


def problem_response(
    request: Request | None,
    *,
    status: int,
    title: str,
    slug: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = problem_body(status=status, title=title, slug=slug, detail=detail)
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers or {})


def unavailable(instance: str, detail: str) -> Response:
    """The 503 of a database that failed: for the routes' error handlers and the read lane."""
    retry_after = str(get_settings().retry_after_seconds)
    return problem_response(
        None,
        status=503,
        title="Service unavailable",
        slug="service-unavailable",
        detail=detail,
        headers={"Retry-After": retry_after},
        instance=instance,
    )


def _unavailable(request: Request, detail: str) -> Response:
    return unavailable(request.url.path, detail)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = None
    if exc.status == 429:
        headers = {"Retry-After": str(exc.extra.get("retry_after", 1))}
    elif exc.status == 503:
        headers = {"Retry-After": str(get_settings().retry_after_seconds)}
    elif exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="guanxi"'}
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        slug=exc.slug,
        detail=exc.detail,
        headers=headers,
        **exc.extra,
    )


# Bodies are JSON objects: a form or plain-text body reaches validation as a string or bytes.
SEND_JSON = "The body must be a JSON object sent with Content-Type: application/json."


def _not_json(request: Request, error: dict[str, Any]) -> bool:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    is_json = media_type == "application/json" or media_type.endswith("+json")
    return tuple(error["loc"]) == ("body",) and bool(media_type) and not is_json


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {**error, "msg": SEND_JSON, "type": "json_required"} if _not_json(request, error) else error
        for error in exc.errors()
    ]
    body = validation_problem(errors)
    body["instance"] = request.url.path
    return Response(orjson.dumps(body), status_code=422, media_type=PROBLEM_MEDIA_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = _HTTP_TITLES.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # The router names the methods of the one route it matched; a resource's GET, PATCH and
        # DELETE are separate routes.
        allowed = request.app.state.allowed_methods.of(request.url.path)
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
    return problem_response(
        request,
        status=exc.status_code,
        title=title,
        slug=title.lower().replace(" ", "-"),
        detail=detail,
        headers=headers,
    )


def is_database_unavailable(exc: BaseException) -> bool:
    """Connection-level failures: refused, dropped, pool exhausted, timed out, server shutting down.
    An OSError about a file (it names one) is the process's own fault, not the database's."""
    if isinstance(exc, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError):
        return exc.filename is None
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(
            getattr(exc.orig, "__cause__", None), "sqlstate", None
        )
        # 08*: connection exceptions; 57P*: operator intervention (shutdown, admin/crash shutdown,
        # cannot connect now); 53300: too many connections.
        if sqlstate and (sqlstate.startswith("08") or sqlstate.startswith("57P") or sqlstate == "53300"):
            return True
    return False


def _sqlstate(exc: Exception) -> str | None:
    """The SQLSTATE of a statement's error, whether SQLAlchemy wrapped it or a service ran the
    statement on the raw asyncpg connection (long scans with a timeout of their own)."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate)
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return str(state) if state else None


async def _database_error(request: Request, exc: Exception) -> Response:
    if is_database_unavailable(exc):
        logger.warning("database unavailable: %s", type(exc).__name__)
        return _unavailable(request, DATABASE_UNAVAILABLE)
    if isinstance(exc, sa_exc.DBAPIError | asyncpg.PostgresError):
        sqlstate = _sqlstate(exc)
        if sqlstate == "57014":
            return _unavailable(request, STATEMENT_TIMED_OUT)
        # Serialization failure and deadlock: the transaction was rolled back whole; a retry is safe.
        if sqlstate in ("40001", "40P01"):
            return _unavailable(request, "The write collided with a concurrent one and was not applied; retry.")
        # A unique key taken by a concurrent write that committed between the service's check and
        # its insert: nothing was written, and the client's retry finds the other's row.
        if sqlstate == "23505":
            return problem_response(
                request,
                status=409,
                title="Conflict",
                slug="conflict",
                detail="A concurrent write took the same unique value; nothing was written. Read and retry.",
            )
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error", exc_info=exc)
    return problem_response(
        request, status=500, title="Internal server error", slug="internal", detail="An unexpected error."
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database and network failures are mapped here, inside the routing layer, so they never reach
    # the server's generic 500 path.
    for exc_class in (sa_exc.SQLAlchemyError, asyncpg.PostgresError, OSError, TimeoutError):
        app.add_exception_handler(exc_class, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
