"""Idempotency-Key: the first response is stored with its effect, in one transaction, and replayed."""

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import IdempotencyInProgress, IdempotencyKeyReused
from app.models import IdempotencyRecord

RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """A key this transaction holds (see `claim`) whose response is not stored yet."""

    key: str
    fingerprint: str


class AlreadyStored(Exception):
    """Another request with the same key stored its response first: replay it."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__("stored by an earlier request")
        self.response = response


def caller_key(ctx: Caller, key: str) -> str:
    """The key as stored: the client's key within its caller (user or API key), never the workspace
    alone, so one caller's key can neither replay nor block another's create. A digest, so that the
    client's 255 characters and the caller's id fit the column."""
    caller = f"{ctx.actor_type}:{ctx.actor_id}".encode()
    return hashlib.sha256(caller + b"\x00" + key.encode()).hexdigest()


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


async def claim(session: AsyncSession, ctx: Caller, key: str, request_fingerprint: str) -> StoredResponse | None:
    """Take the key for this transaction. Returns the stored response to replay, or None to proceed.

    A transaction-scoped advisory lock marks the key as in flight: a concurrent request with the same
    key gets 409 at once instead of waiting, and the lock ends with the commit that stores the response.
    """
    lock_key = func.hashtextextended(f"idempotency:{ctx.workspace_id}:{key}", 0)
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(lock_key))):
        raise IdempotencyInProgress("A request with this Idempotency-Key is still being processed.")
    return await stored_response(session, ctx, key, request_fingerprint)


async def stored_response(
    session: AsyncSession, ctx: Caller, key: str, request_fingerprint: str
) -> StoredResponse | None:
    """The response stored for `key` to replay, or None (an expired one is removed); a key used
    with another request is a 422."""
    stored = await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.workspace_id == ctx.workspace_id, IdempotencyRecord.key == key
        )
    )
    if stored is None:
        return None
    if stored.created_at < clock.now() - RETENTION:
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.workspace_id == ctx.workspace_id, IdempotencyRecord.key == key
            )
        )
        return None
    if stored.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was used with a different request.")
    return StoredResponse(status_code=stored.status_code, headers=stored.headers, body=stored.body)


def remember(session: AsyncSession, ctx: Caller, key: str, request_fingerprint: str, response: StoredResponse) -> None:
    session.add(
        IdempotencyRecord(
            workspace_id=ctx.workspace_id,
            key=key,
            fingerprint=request_fingerprint,
            status_code=response.status_code,
            headers=response.headers,
            body=response.body,
            created_at=clock.now(),
        )
    )
