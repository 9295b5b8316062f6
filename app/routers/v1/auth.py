"""Token exchange: /api/v1/auth/token."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from app.core.errors import Unauthorized
from app.core.settings import get_settings
from app.http.json_response import json_response
from app.http.rate_limits import SignInThrottle
from app.routers.deps import Session
from app.routers.responses import errors
from app.schemas.auth import PasswordGrant, TokenOut, TokenRequest
from app.services.identity import tokens, users

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=TokenOut, responses=errors(), summary="Sign in or refresh")
async def issue_token(grant: Annotated[TokenRequest, Body()], request: Request, session: Session) -> Response:
    """`grant_type=password` with workspace slug, email and password, or `grant_type=refresh_token`.
    Access tokens last `GUANXI_ACCESS_TOKEN_MINUTES`; a refresh re-reads the user, so a deactivated
    user or a changed role takes effect at the next refresh. Failed sign-ins are throttled by
    account and by source address (429 with Retry-After)."""
    settings = get_settings()
    if isinstance(grant, PasswordGrant):
        throttle: SignInThrottle = request.app.state.sign_in_throttle
        account = f"{grant.workspace.lower()}:{users.email_key(grant.email)}"
        source = request.client.host if request.client else ""
        throttle.check(account=account, source=source)
        try:
            user = await users.authenticate(
                session, workspace_slug=grant.workspace, email=grant.email, password=grant.password
            )
        except Unauthorized:
            throttle.failed(account=account, source=source)
            raise
        throttle.succeeded(account=account)
    else:
        claims = tokens.verify(settings, grant.refresh_token, expected_type="refresh")
        user = await users.get_active(
            session, uuid.UUID(claims["ws"]), uuid.UUID(claims["sub"]), issued_at=int(claims["iat"])
        )
    pair = tokens.issue_pair(settings, user)
    return json_response(
        {
            "access_token": pair.access,
            "refresh_token": pair.refresh,
            "token_type": "bearer",
            "expires_in": pair.expires_in,
        }
    )
