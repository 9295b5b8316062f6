"""JWT access and refresh tokens: HS256 pinned, exp/iss/aud/sub required."""

import uuid
from datetime import timedelta
from typing import Any, Literal, NamedTuple

import jwt

from app.core import clock
from app.core.access import Role
from app.core.errors import Unauthorized
from app.core.settings import Settings
from app.models import User

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]


class TokenPair(NamedTuple):
    access: str
    refresh: str
    # The access token's lifetime in seconds.
    expires_in: int


def issue(
    settings: Settings,
    *,
    token_type: TokenType,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID,
    role: Role,
    team_id: uuid.UUID | None,
) -> tuple[str, int]:
    """Return the signed token and its lifetime in seconds."""
    lifetime = (
        timedelta(minutes=settings.access_token_minutes)
        if token_type == "access"
        else timedelta(days=settings.refresh_token_days)
    )
    issued_at = clock.now()
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "ws": str(workspace_id),
        "role": role.value,
        "team": str(team_id) if team_id else None,
        "typ": token_type,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(issued_at.timestamp()),
        "exp": int((issued_at + lifetime).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM), int(lifetime.total_seconds())


def issue_pair(settings: Settings, user: User) -> TokenPair:
    """An access and a refresh token for the user, with the user's present role and team."""
    access, lifetime = _for_user(settings, user, "access")
    refresh, _ = _for_user(settings, user, "refresh")
    return TokenPair(access=access, refresh=refresh, expires_in=lifetime)


def _for_user(settings: Settings, user: User, token_type: TokenType) -> tuple[str, int]:
    return issue(
        settings,
        token_type=token_type,
        user_id=user.id,
        workspace_id=user.workspace_id,
        role=Role(user.role),
        team_id=user.team_id,
    )


def verify(settings: Settings, token: str, *, expected_type: TokenType) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iss", "aud", "sub", "iat"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The token has expired.") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The token is not valid.") from exc
    if claims.get("typ") != expected_type:
        raise Unauthorized(f"An {expected_type} token is required.")
    try:
        uuid.UUID(claims["sub"])
        uuid.UUID(claims["ws"])
        Role(claims["role"])
        if claims.get("team"):
            uuid.UUID(claims["team"])
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise Unauthorized("The token is not valid.") from exc
    return claims
