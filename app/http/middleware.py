"""ASGI middleware: request id, access log, the request body limit, load shedding, the 405 of
a path that a route spells out, and the 422 of a NUL character in the URL.

Plain ASGI rather than BaseHTTPMiddleware: it adds no task or stream copy to every request."""

import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logs import request_id
from app.core.metrics import IN_FLIGHT, REQUEST_SECONDS, REQUESTS_SHED
from app.core.problems import validation_problem
from app.http.allowed_methods import AllowedMethods
from app.http.problems import PROBLEM_MEDIA_TYPE, problem_response

logger = logging.getLogger("guanxi.access")

UPLOAD_PATH = "/api/v1/imports"
# Probes and metrics answer even when the API is full: an orchestrator must still see the process.
UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, upload_max_bytes: int, allowed_methods: AllowedMethods
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_max_bytes = upload_max_bytes
        self.allowed_methods = allowed_methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": None}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        # File uploads have their own, larger limit; the import route enforces it while spooling.
        limit = self.upload_max_bytes if scope["path"] == UPLOAD_PATH else self.max_body_bytes
        try:
            # `GET /customers/search` is not a customer with a malformed id: the path is a route's own.
            spelled_out = self.allowed_methods.spelled_out(scope["path"])
            if spelled_out is not None and scope["method"] not in spelled_out:
                await self._not_allowed(scope, send_with_id, spelled_out)
                return
            nul_at = _nul_in_url(scope)
            if nul_at is not None:
                await self._nul(scope, send_with_id, nul_at)
                return
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                await self._too_large(scope, send_with_id, limit)
                return
            await self.app(scope, self._limited(receive, limit), send_with_id)
        except HTTPException as exc:
            if exc.status_code != 413 or status["code"] is not None:
                raise
            await self._too_large(scope, send_with_id, limit)
        finally:
            route = scope.get("route")
            REQUEST_SECONDS.labels(
                scope["method"],
                getattr(route, "path", "unmatched"),
                f"{str(status['code'] or 0)[0]}xx",
            ).observe(time.perf_counter() - started)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status["code"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id.reset(token)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes an HTTPException from body reading through to the problem handler.
                    raise HTTPException(413, f"The body is larger than {limit} bytes.")
            return message

        return limited_receive

    async def _too_large(self, scope: Scope, send: Send, limit: int) -> None:
        response = problem_response(
            None,
            status=413,
            title="Payload too large",
            slug="payload-too-large",
            detail=f"The body is larger than {limit} bytes.",
            instance=scope["path"],
        )
        await response(scope, _no_receive, send)

    async def _nul(self, scope: Scope, send: Send, loc: list[str]) -> None:
        body = validation_problem([{"loc": loc, "msg": "NUL characters are not allowed.", "type": "string_nul"}])
        body["instance"] = scope["path"]
        response = Response(orjson.dumps(body), status_code=422, media_type=PROBLEM_MEDIA_TYPE)
        await response(scope, _no_receive, send)

    async def _not_allowed(self, scope: Scope, send: Send, allowed: frozenset[str]) -> None:
        response = problem_response(
            None,
            status=405,
            title="Method not allowed",
            slug="method-not-allowed",
            detail="Method Not Allowed",
            headers={"Allow": ", ".join(sorted(allowed))},
            instance=scope["path"],
        )
        await response(scope, _no_receive, send)


class InFlightLimit:
    """Load shedding: at most `limit` requests inside the application at once. The next one is
    answered 503 with Retry-After at once, instead of queueing behind the others for the CPU and a
    database connection, where it would only make every answer late (and on an overloaded process,
    every answer would be). 0 turns the limit off."""

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_seconds: int) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(retry_after_seconds)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in UNSHED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            REQUESTS_SHED.inc()
            response = problem_response(
                None,
                status=503,
                title="Service unavailable",
                slug="overloaded",
                detail="The service is at its limit of concurrent requests; retry shortly.",
                headers={"Retry-After": self.retry_after},
                instance=scope["path"],
            )
            await response(scope, _no_receive, send)
            return
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()


def _nul_in_url(scope: Scope) -> list[str] | None:
    """Where the URL carries a NUL, if it does. PostgreSQL text cannot hold one, so a NUL in any path or
    query parameter is refused here, for every route at once, before it can reach a statement."""
    if "\x00" in scope["path"]:
        return ["path"]
    query: bytes = scope.get("query_string", b"")
    if b"\x00" not in unquote_to_bytes(query):
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in value or "\x00" in name:
            return ["query", name.replace("\x00", "")]
    return ["query"]


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
