"""API keys: `gx_<prefix>_<secret>`, shown once, stored as SHA-256, scoped and revocable.

Keys carry 256 bits of randomness, so a fast hash is safe (unlike passwords). Verified keys are
cached in-process for `GUANXI_API_KEY_CACHE_SECONDS`: a revocation takes effect at once in the
process that revoked it and within that many seconds in the others.

A key a user created holds at most that user's present scopes: it stops working when the user is
deactivated and narrows when the user's role does (within the same bound)."""

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import ROLE_SCOPES, Caller, Role, Scope
from app.core.errors import Forbidden, NotFound, Unauthorized
from app.core.settings import get_settings
from app.core.wire import utc_text
from app.models import ApiKey, User
from app.schemas.auth import ApiKeyCreate
from app.services.events import audit

KEY_PREFIX = "gx_"
_PREFIX_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


@dataclass(frozen=True, slots=True)
class _Cached:
    caller: Caller
    created_by: uuid.UUID | None
    secret_hash: str
    expires_at: float | None
    fetched_at: float


_cache: dict[str, _Cached] = {}


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _prefix(key: str) -> str:
    """The lookup prefix of a well-formed key; Unauthorized for any other."""
    if key.startswith(KEY_PREFIX) and len(key) <= 128:
        prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
        if sep and len(prefix) == 10 and len(secret) >= 32:
            return prefix
    raise Unauthorized("The API key is not valid.")


async def create(session: AsyncSession, ctx: Caller, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    if not set(data.scopes) <= ctx.scopes:
        raise Forbidden("An API key cannot have scopes its creator does not have.")
    created_by = ctx.user_id
    if ctx.actor_type == "api_key":
        # A key made with a user's key answers to that user too: offboarding the user stops both.
        created_by = await session.scalar(
            select(ApiKey.created_by).where(ApiKey.workspace_id == ctx.workspace_id, ApiKey.id == ctx.actor_id)
        )
    return await issue(
        session,
        ctx.workspace_id,
        name=data.name,
        scopes=list(data.scopes),
        created_by=created_by,
        expires_at=data.expires_at,
        actor=ctx,
    )


async def issue(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    name: str,
    scopes: list[Scope],
    created_by: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    actor: Caller | None = None,
) -> tuple[ApiKey, str]:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(10))
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey(
        workspace_id=workspace_id,
        name=name,
        prefix=prefix,
        secret_hash=hash_secret(key),
        scopes=[s.value for s in scopes],
        created_by=created_by,
        created_at=clock.now(),
        expires_at=expires_at,
    )
    session.add(api_key)
    await session.flush()
    if actor is not None:
        audit.record(
            session,
            actor,
            entity_type="api_key",
            entity_id=api_key.id,
            action="created",
            changes={"name": {"before": None, "after": name}, "scopes": {"before": None, "after": api_key.scopes}},
        )
    return api_key, key


def cached_caller(key: str) -> Caller | None:
    """The caller of a key this process verified within the cache period, without a database
    round trip; None when only the database can tell (`load_caller`). Unauthorized for a key that
    is not valid."""
    cached = _cache.get(_prefix(key))
    if cached is None or time.time() - cached.fetched_at > _ttl():
        return None
    return _checked(cached, key)


async def load_caller(session: AsyncSession, key: str) -> Caller:
    """The caller of a key as the database has it now, cached for the next requests; Unauthorized
    for a key that is not valid (unknown, revoked, expired)."""
    return _checked(await _load(session, _prefix(key), time.time()), key)


def _checked(cached: _Cached, key: str) -> Caller:
    if not hmac.compare_digest(cached.secret_hash, hash_secret(key)):
        raise Unauthorized("The API key is not valid.")
    if cached.expires_at is not None and cached.expires_at <= clock.now().timestamp():
        raise Unauthorized("The API key has expired.")
    return cached.caller


async def _load(session: AsyncSession, prefix: str, now: float) -> _Cached:
    # One statement finds the key, its creator's present role (null when deactivated) and records its use.
    creator_role = (
        select(User.role)
        .where(User.workspace_id == ApiKey.workspace_id, User.id == ApiKey.created_by, User.is_active)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
            .values(last_used_at=clock.now())
            .returning(
                ApiKey.id,
                ApiKey.workspace_id,
                ApiKey.scopes,
                ApiKey.secret_hash,
                ApiKey.expires_at,
                ApiKey.created_by,
                creator_role.label("creator_role"),
            )
        )
    ).first()
    if row is None or (row.created_by is not None and row.creator_role is None):
        _cache.pop(prefix, None)
        raise Unauthorized("The API key is not valid.")
    scopes = frozenset(row.scopes)
    if row.created_by is not None:
        scopes &= ROLE_SCOPES[Role(row.creator_role)]
    cached = _Cached(
        caller=Caller(
            workspace_id=row.workspace_id,
            actor_type="api_key",
            actor_id=row.id,
            scopes=scopes,
            visibility="all",
        ),
        created_by=row.created_by,
        secret_hash=row.secret_hash,
        expires_at=row.expires_at.timestamp() if row.expires_at else None,
        fetched_at=now,
    )
    _cache[prefix] = cached
    return cached


def forget_created_by(user_id: uuid.UUID) -> None:
    """The user's standing changed: this process checks the user's keys in the database again."""
    for prefix in [prefix for prefix, cached in _cache.items() if cached.created_by == user_id]:
        _cache.pop(prefix, None)


def _ttl() -> float:
    return get_settings().api_key_cache_seconds


async def list_keys(session: AsyncSession, ctx: Caller) -> list[ApiKey]:
    return await scoped.all_of(session, ctx, ApiKey, order_by=ApiKey.created_at)


async def get(session: AsyncSession, ctx: Caller, key_id: uuid.UUID) -> ApiKey:
    return await scoped.get(session, ctx, ApiKey, key_id, missing="No API key with that id.")


async def revoke(session: AsyncSession, ctx: Caller, key_id: uuid.UUID) -> ApiKey:
    api_key = await session.scalar(
        select(ApiKey).where(ApiKey.workspace_id == ctx.workspace_id, ApiKey.id == key_id).with_for_update()
    )
    if api_key is None:
        raise NotFound("No API key with that id.")
    if api_key.revoked_at is None:
        api_key.revoked_at = clock.now()
        audit.record(
            session,
            ctx,
            entity_type="api_key",
            entity_id=api_key.id,
            action="revoked",
            changes={"revoked_at": {"before": None, "after": utc_text(api_key.revoked_at)}},
        )
    _cache.pop(api_key.prefix, None)
    return api_key
