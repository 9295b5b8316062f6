"""Request-scoped dependencies: the unit of work, the reader, the caller, If-Match and Idempotency-Key."""

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer, SecurityScopes
from starlette.requests import HTTPConnection

from app.core.access import Caller, Scope
from app.core.db import DbSession
from app.core.errors import DomainError, Forbidden, PreconditionRequired
from app.core.pagination import MAX_CURSOR_LENGTH
from app.core.versions import ANY_VERSION
from app.http.credentials import caller_from_headers


async def unit_of_work(request: Request) -> AsyncIterator[DbSession]:
    """One transaction per request, committed before the response leaves: a failed commit is an
    error response, never a 2xx for a lost write (the dependency runs with scope="function")."""
    async with request.app.state.sessions() as session:
        yield session
        await session.commit()


async def reader(request: Request) -> AsyncIterator[DbSession]:
    """Autocommit session for reads: no BEGIN/COMMIT round trips around a single SELECT."""
    async with request.app.state.readers() as session:
        yield session


Session = Annotated[DbSession, Depends(unit_of_work, scope="function")]
Reader = Annotated[DbSession, Depends(reader, scope="function")]
# The same autocommit session, for a write that is one statement and so its own transaction.
Autocommit = Reader

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1-100.")]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page.")]

# Set in the request's state by whatever already counted the request against the caller's rate.
RATE_COUNTED = "rate_limit_counted"


class _BearerScheme(HTTPBearer):
    """The bearer scheme as the OpenAPI document declares it; `caller_from_headers` reads the header."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


class _ApiKeyScheme(APIKeyHeader):
    """The API key scheme as the OpenAPI document declares it; `caller_from_headers` reads the header."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


_bearer = _BearerScheme(
    scheme_name="HTTPBearer", auto_error=False, description="JWT access token from `POST /api/v1/auth/token`."
)
_api_key = _ApiKeyScheme(
    name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False, description="An API key `gx_…` from an admin."
)


async def authenticate(
    request: Request,
    security_scopes: SecurityScopes,
    session: Reader,
    _bearer_scheme: Annotated[None, Depends(_bearer)],
    _api_key_scheme: Annotated[None, Depends(_api_key)],
) -> Caller:
    caller = await caller_from_headers(request.scope["headers"], session)
    # The read lane counts the requests it looked at and then passed on (app/http/read_lane.py).
    if not getattr(request.state, RATE_COUNTED, False):
        await request.app.state.rate_limiter.check(caller)
    missing = sorted(scope for scope in security_scopes.scopes if scope not in caller.scopes)
    if missing:
        raise Forbidden(f"This needs the scope(s): {', '.join(missing)}.", missing_scopes=missing)
    return caller


def _caller(*scopes: Scope) -> Any:
    return Security(authenticate, scopes=[s.value for s in scopes])


AnyCaller = Annotated[Caller, _caller()]
CustomersRead = Annotated[Caller, _caller(Scope.CUSTOMERS_READ)]
CustomersWrite = Annotated[Caller, _caller(Scope.CUSTOMERS_WRITE)]
CustomersDelete = Annotated[Caller, _caller(Scope.CUSTOMERS_DELETE)]
CustomFieldsWrite = Annotated[Caller, _caller(Scope.CUSTOM_FIELDS_WRITE)]
AuditRead = Annotated[Caller, _caller(Scope.CUSTOMERS_READ, Scope.AUDIT_READ)]
WorkspaceAudit = Annotated[Caller, _caller(Scope.AUDIT_READ, Scope.AUDIT_WORKSPACE)]
UsersRead = Annotated[Caller, _caller(Scope.USERS_READ)]
UsersWrite = Annotated[Caller, _caller(Scope.USERS_WRITE)]
ApiKeysWrite = Annotated[Caller, _caller(Scope.API_KEYS_WRITE)]
EventsRead = Annotated[Caller, _caller(Scope.EVENTS_READ)]
# A webhook endpoint is a way to read the event stream, personal data included.
WebhooksWrite = Annotated[Caller, _caller(Scope.WEBHOOKS_WRITE, Scope.EVENTS_READ)]
OrdersWrite = Annotated[Caller, _caller(Scope.ORDERS_WRITE)]
ReportsRead = Annotated[Caller, _caller(Scope.REPORTS_READ)]
ValueAdmin = Annotated[Caller, _caller(Scope.VALUE_ADMIN)]
PlansWrite = Annotated[Caller, _caller(Scope.PLANS_WRITE)]
ServiceAdmin = Annotated[Caller, _caller(Scope.SERVICE_ADMIN)]
WorkspaceAdmin = Annotated[Caller, _caller(Scope.WORKSPACE_ADMIN)]
OutreachAdmin = Annotated[Caller, _caller(Scope.OUTREACH_ADMIN)]
MessagesSend = Annotated[Caller, _caller(Scope.MESSAGES_SEND)]
AutomationWrite = Annotated[Caller, _caller(Scope.AUTOMATION_WRITE)]
LoyaltyAdmin = Annotated[Caller, _caller(Scope.LOYALTY_ADMIN)]
PipelinesAdmin = Annotated[Caller, _caller(Scope.PIPELINES_ADMIN)]

# Versions start at 1.
NO_VERSION = 0
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,10})"?$')


# Header dependencies are `async def` though they await nothing: FastAPI runs a plain `def` in its
# thread pool, a thread hop per request.
async def expected_version(
    if_match: Annotated[
        str | None,
        Header(
            description="The ETag of the version you read, or `*` for whatever version is current; required.",
            max_length=64,
        ),
    ] = None,
) -> int:
    if if_match is None:
        raise PreconditionRequired("Send If-Match with the ETag you read.")
    if if_match.strip() == "*":
        return ANY_VERSION
    match = _ETAG.match(if_match.strip())
    if match is None:
        # Names no version, so it matches none: the service answers 412 once it has found the
        # resource, after the request itself was validated (a 422 or a 404 comes first).
        return NO_VERSION
    return int(match.group(1))


IfMatch = Annotated[int, Depends(expected_version)]


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            # Stated in the document, so FastAPI checks it: a bad key is a 422 like any bad field.
            pattern=r"^[\x21-\x7e]{1,255}$",
            description="Makes a create safe to retry: the first response is replayed. 1-255 visible ASCII.",
        ),
    ] = None,
) -> str | None:
    return key


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


async def required_idempotency_key(
    key: Annotated[str | None, Header(alias="Idempotency-Key", pattern=_KEY_PATTERN, include_in_schema=False)] = None,
) -> str:
    """Creates that must never run twice (points redeemed) refuse a request without a key: 400,
    not the 422 of a bad field, so FastAPI must not check its presence; the route states it as
    required in the document (`REQUIRED_IDEMPOTENCY_KEY`)."""
    if key is None:
        raise DomainError("This request needs an Idempotency-Key header, so that a retry cannot repeat it.")
    return key


RequiredIdempotencyKey = Annotated[str, Depends(required_idempotency_key)]
# The route's `openapi_extra`: the header as the document states it.
REQUIRED_IDEMPOTENCY_KEY: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "Required: a request without one is a 400. The first response is replayed. "
            "1-255 visible ASCII.",
            "schema": {"type": "string", "pattern": _KEY_PATTERN},
        }
    ]
}
