"""The one interface every provider adapter keeps: `send(outgoing) -> Result`.

A result is `accepted` (the provider took the message, with its id), `rejected` (it did not take it:
`retryable` says whether trying again later can help) or `unknown` (the request went out and no
answer came back: it may have been sent, so it is never sent again by itself)."""

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from app.services.events import webhook_targets

Status = Literal["accepted", "rejected", "unknown"]
ANSWER_BYTES = 65_536


@dataclass(frozen=True)
class Outgoing:
    """One message as a provider receives it: `to` (an address or a number, None for a robot or
    URL), `content` (the message's content dict) and `reference` (our message id)."""

    to: str | None
    content: dict[str, Any]
    reference: str


@dataclass(frozen=True)
class Result:
    status: Status
    provider_message_id: str | None = None
    code: str | None = None
    message: str | None = None
    retryable: bool = False

    @staticmethod
    def accepted(provider_message_id: str | None, code: str | None = None) -> "Result":
        return Result("accepted", provider_message_id, code)

    @staticmethod
    def rejected(code: str | None, message: str | None, *, retryable: bool) -> "Result":
        return Result("rejected", None, code, _short(message), retryable)

    @staticmethod
    def unknown(message: str) -> "Result":
        return Result("unknown", None, None, _short(message))


class Provider(Protocol):
    async def send(self, outgoing: Outgoing) -> Result: ...

    async def close(self) -> None: ...


@dataclass
class Account:
    """A channel as its provider needs it: kind, settings and opened secrets."""

    kind: str
    settings: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False)


def _short(text: str | None) -> str | None:
    return None if text is None else text[:500]


def redacted(text: str, secrets: dict[str, Any]) -> str:
    """`text` without any secret of the account (an error may quote a URL that carries a key)."""
    for value in secrets.values():
        if isinstance(value, str) and value:
            text = text.replace(value, "***")
    return text


def http_session(max_connections: int, *, allow_private: bool) -> aiohttp.ClientSession:
    """The session HTTP providers post on: aiohttp directly (its C parser, without a second client's
    layer over it: most of a message's cost in the worker), no proxies from the environment, and
    unless private targets are allowed, names resolved by the webhooks' `PublicOnlyResolver`, so a
    provider endpoint is judged on the addresses a connection is opened to."""
    resolver = None if allow_private else webhook_targets.PublicOnlyResolver()
    connector = aiohttp.TCPConnector(limit=max_connections, resolver=resolver)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body[:200].decode("utf-8", errors="replace")

    def json(self) -> dict[str, Any] | None:
        try:
            parsed = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    data: bytes | str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> Answer:
    """POST without following redirects; the answer read up to ANSWER_BYTES."""
    async with http.post(url, data=data, headers=headers, params=params, allow_redirects=False) as response:
        return Answer(response.status, await response.content.read(ANSWER_BYTES))


def transport_failure(exc: Exception, account: Account) -> Result:
    """An HTTP request that failed: before the request was written (no connection) it was not
    taken; once it was written, nobody knows."""
    message = redacted(f"{type(exc).__name__}: {exc}", account.secrets)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Result.rejected("connect_failed", message, retryable=True)
    return Result.unknown(message)


# What post() may raise: aiohttp's errors, and a timeout.
HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)
