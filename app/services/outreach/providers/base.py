"""The one interface every provider adapter keeps: `send(outgoing) -> Result`.

A result is `accepted` (the provider took the message, with its id), `rejected` (it did not take it:
`retryable` says whether trying again later can help) or `unknown` (the request went out and no
answer came back: it may have been sent, so it is never sent again by itself)."""

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

Status = Literal["accepted", "rejected", "unknown"]


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


def transport_failure(exc: Exception, account: Account) -> Result:
    """An HTTP request that failed: before the request was written (no connection) it was not
    taken; once it was written, nobody knows."""
    message = redacted(f"{type(exc).__name__}: {exc}", account.secrets)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Result.rejected("connect_failed", message, retryable=True)
    return Result.unknown(message)


def json_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
