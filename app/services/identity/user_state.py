"""What an access token's user may do now: active or not, role and team, as the database last said.

Access tokens are checked without the database, so a deactivation, a role change or a password
reset would wait for the token's expiry. Each process keeps the users' present state for
`GUANXI_API_KEY_CACHE_SECONDS` (the bound API keys already have): a change takes effect at once in
the process that made it and within that bound in the others. The caller is built from this
state, not from the token's claims, so a demotion narrows a token that is still valid."""

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller, Role, user_caller
from app.core.errors import Unauthorized
from app.core.settings import get_settings
from app.models import User


@dataclass(frozen=True, slots=True)
class _State:
    caller: Caller | None
    # Tokens issued (`iat`, whole seconds) before this are refused.
    valid_from: float | None
    fetched_at: float


_cache: dict[uuid.UUID, _State] = {}
# Past this many users the cache is swept of entries older than the bound, so it cannot grow without limit.
_SWEEP_AT = 10_000


def cached_caller(claims: dict[str, Any]) -> Caller | None:
    """The caller of a verified access token's claims from this process's recent look-up; None
    when only the database can tell (`load_caller`). Unauthorized for a user who may not sign in."""
    state = _cache.get(uuid.UUID(claims["sub"]))
    if state is None or time.time() - state.fetched_at > _ttl():
        return None
    return _checked(state, claims)


async def load_caller(session: AsyncSession, claims: dict[str, Any]) -> Caller:
    user_id, workspace_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["ws"])
    row = (
        await session.execute(
            select(User.role, User.team_id, User.is_active, User.credentials_changed_at).where(
                User.workspace_id == workspace_id, User.id == user_id
            )
        )
    ).first()
    now = time.time()
    caller = None
    if row is not None and row.is_active:
        caller = user_caller(workspace_id=workspace_id, user_id=user_id, role=Role(row.role), team_id=row.team_id)
    state = _State(caller=caller, valid_from=_valid_from(row.credentials_changed_at if row else None), fetched_at=now)
    if len(_cache) >= _SWEEP_AT:
        for stale in [key for key, value in _cache.items() if now - value.fetched_at > _ttl()]:
            del _cache[stale]
    _cache[user_id] = state
    return _checked(state, claims)


def forget(user_id: uuid.UUID) -> None:
    """The user changed: this process asks the database at the user's next request."""
    _cache.pop(user_id, None)


def _valid_from(changed_at: datetime | None) -> float | None:
    return None if changed_at is None else float(int(changed_at.timestamp()))


def _checked(state: _State, claims: dict[str, Any]) -> Caller:
    if state.caller is None:
        raise Unauthorized("The user no longer exists or is deactivated.")
    if state.valid_from is not None and claims["iat"] < state.valid_from:
        raise Unauthorized("The password changed since this token was issued; sign in again.")
    # A token names its workspace; a user id from another workspace is no user of it.
    if state.caller.workspace_id != uuid.UUID(claims["ws"]):
        raise Unauthorized("The user no longer exists or is deactivated.")
    return state.caller


def _ttl() -> float:
    return get_settings().api_key_cache_seconds
