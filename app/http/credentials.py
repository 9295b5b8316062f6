"""The caller a request's credential speaks for, read one way for the routes' authentication
dependency (app/routers/deps.py) and the read lane (app/http/read_lane.py).

A request carries one credential: an API key (`X-API-Key: gx_…`) or an access token
(`Authorization: Bearer <JWT>`), each header at most once. Which of two would win is a guess the
caller should not have to make, and an invalid one of the two must not pass unnoticed (RFC 6750:
one method per request), an empty one included.

The headers are the ASGI scope's own list (names in lower case), so the lane reads them without
building a Request."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.core.access import Caller
from app.core.db import DbSession
from app.core.errors import Unauthorized
from app.core.settings import get_settings
from app.services.identity import api_keys, tokens, user_state

API_KEY_HEADER = b"x-api-key"
AUTHORIZATION_HEADER = b"authorization"
BEARER = "bearer"

ONE_CREDENTIAL = "Send one credential, an Authorization header or an X-API-Key header, not both."
API_KEY_AS_BEARER = "This is an API key: send it in the X-API-Key header, not as a bearer token."


@dataclass(frozen=True, slots=True)
class Unverified:
    """A well-formed credential whose standing only the database can tell: an API key, or the
    claims of a signed access token whose user this process has not looked up lately."""

    api_key: str | None = None
    claims: dict[str, Any] | None = None


async def caller_from_headers(headers: Iterable[tuple[bytes, bytes]], session: DbSession) -> Caller:
    """The caller, checked against the database when this process cannot tell alone; Unauthorized
    for no credential or an invalid one."""
    known = caller_in_process(headers)
    if isinstance(known, Caller):
        return known
    if known.api_key is not None:
        return await api_keys.load_caller(session, known.api_key)
    assert known.claims is not None
    return await user_state.load_caller(session, known.claims)


def caller_in_process(headers: Iterable[tuple[bytes, bytes]]) -> Caller | Unverified:
    """`caller_from_headers` without the database: the caller of an API key or an access token's
    user that this process checked within the cache period; else what only the database can check.
    Unauthorized for no credential or an invalid one."""
    api_key: bytes | None = None
    authorization: bytes | None = None
    for name, value in headers:
        if name == API_KEY_HEADER:
            if api_key is not None:
                raise Unauthorized(ONE_CREDENTIAL)
            api_key = value
        elif name == AUTHORIZATION_HEADER:
            if authorization is not None:
                raise Unauthorized(ONE_CREDENTIAL)
            authorization = value
    if api_key is not None:
        if authorization is not None:
            raise Unauthorized(ONE_CREDENTIAL)
        key = api_key.decode("latin-1")
        return api_keys.cached_caller(key) or Unverified(api_key=key)
    if authorization is not None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if token and scheme.lower() == BEARER:
            if token.startswith(api_keys.KEY_PREFIX):
                raise Unauthorized(API_KEY_AS_BEARER)
            return _token_caller(token)
    raise Unauthorized("Send a bearer token or an X-API-Key header.")


def _token_caller(token: str) -> Caller | Unverified:
    """The user an access token speaks for; Unauthorized if it is not a valid one."""
    claims = tokens.verify(get_settings(), token, expected_type="access")
    return user_state.cached_caller(claims) or Unverified(claims=claims)
