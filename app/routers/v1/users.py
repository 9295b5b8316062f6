"""Users, teams and the current workspace: /api/v1/users, /api/v1/teams, /api/v1/workspace."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.core.settings import get_settings
from app.http.json_response import json_response
from app.routers.deps import AnyCaller, IdempotencyKey, IfMatch, Reader, Session, UsersRead, UsersWrite, WorkspaceAdmin
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.auth import (
    PasswordChange,
    PasswordReset,
    TeamCreate,
    TeamList,
    TeamOut,
    TeamPatch,
    TokenOut,
    UserCreate,
    UserList,
    UserOut,
    UserPatch,
    WorkspaceOut,
    WorkspacePatch,
)
from app.services.identity import tokens, users, workspaces

router = APIRouter(tags=["users and teams"])


def _user(user: object) -> Response:
    return resource_response(UserOut.model_validate(user).model_dump(mode="json"))


def _team(team: object) -> Response:
    return resource_response(TeamOut.model_validate(team).model_dump(mode="json"))


@router.get("/users", response_model=UserList, responses=errors(), summary="List users")
async def list_users(ctx: UsersRead, session: Reader) -> Response:
    items = [UserOut.model_validate(u).model_dump(mode="json") for u in await users.list_users(session, ctx)]
    return json_response({"items": items})


@router.post("/users", status_code=201, response_model=UserOut, responses=errors(409), summary="Add a user")
async def create_user(
    request: Request, data: UserCreate, ctx: UsersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """The password is stored as an Argon2 hash; the role sets scopes and visibility. The caller
    must hold every scope of the role it grants (403 otherwise)."""

    async def create() -> StoredResponse:
        user = await users.create_user(session, ctx, data)
        body = UserOut.model_validate(user).model_dump(mode="json")
        return stored_resource(body, location=f"/api/v1/users/{user.id}")

    return await idempotent(request, session, ctx, key, create)


@router.post("/users/me/password", response_model=TokenOut, responses=errors(404), summary="Change your own password")
async def change_own_password(data: PasswordChange, ctx: AnyCaller, session: Session) -> Response:
    """Needs the current password (403 when wrong, or for an API key). Every token issued before
    is refused from now on; the response holds a fresh pair."""
    user = await users.change_own_password(session, ctx, data)
    pair = tokens.issue_pair(get_settings(), user)
    return json_response(
        {
            "access_token": pair.access,
            "refresh_token": pair.refresh,
            "token_type": "bearer",
            "expires_in": pair.expires_in,
        }
    )


@router.get("/users/{user_id}", response_model=UserOut, responses=errors(404), summary="Get a user")
async def get_user(user_id: uuid.UUID, ctx: UsersRead, session: Reader) -> Response:
    return _user(await users.get_user(session, ctx, user_id))


@router.patch("/users/{user_id}", response_model=UserOut, responses=errors(404, 409, 412, 428), summary="Change a user")
async def update_user(
    user_id: uuid.UUID, patch: UserPatch, ctx: UsersWrite, session: Session, if_match: IfMatch
) -> Response:
    """Name, role, team and `is_active`. Deactivating refuses the user's refresh tokens at once and
    its access tokens and API keys within `GUANXI_API_KEY_CACHE_SECONDS`. The last active admin
    cannot be demoted or deactivated (409)."""
    return _user(await users.update_user(session, ctx, user_id, patch, expected_version=if_match))


@router.post(
    "/users/{user_id}/password", response_model=UserOut, responses=errors(404), summary="Reset a user's password"
)
async def reset_password(user_id: uuid.UUID, data: PasswordReset, ctx: UsersWrite, session: Session) -> Response:
    """Sets a new password; the user's tokens issued before are refused. Needs every scope of the user's role."""
    return _user(await users.reset_password(session, ctx, user_id, data.new_password))


@router.get("/teams", response_model=TeamList, responses=errors(), summary="List teams")
async def list_teams(ctx: UsersRead, session: Reader) -> Response:
    items = [TeamOut.model_validate(t).model_dump(mode="json") for t in await users.list_teams(session, ctx)]
    return json_response({"items": items})


@router.post("/teams", status_code=201, response_model=TeamOut, responses=errors(), summary="Add a team")
async def create_team(
    request: Request, data: TeamCreate, ctx: UsersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """A manager sees the customers owned by members of its team."""

    async def create() -> StoredResponse:
        team = await users.create_team(session, ctx, data)
        body = TeamOut.model_validate(team).model_dump(mode="json")
        return stored_resource(body, location=f"/api/v1/teams/{team.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get("/teams/{team_id}", response_model=TeamOut, responses=errors(404), summary="Get a team")
async def get_team(team_id: uuid.UUID, ctx: UsersRead, session: Reader) -> Response:
    return _team(await users.get_team(session, ctx, team_id))


@router.patch("/teams/{team_id}", response_model=TeamOut, responses=errors(404, 412, 428), summary="Rename a team")
async def update_team(
    team_id: uuid.UUID, patch: TeamPatch, ctx: UsersWrite, session: Session, if_match: IfMatch
) -> Response:
    return _team(await users.update_team(session, ctx, team_id, patch, expected_version=if_match))


@router.delete(
    "/teams/{team_id}", status_code=204, responses=errors(404, 409, 412, 428), summary="Delete an empty team"
)
async def delete_team(team_id: uuid.UUID, ctx: UsersWrite, session: Session, if_match: IfMatch) -> Response:
    """A team that still has users or tickets is a 409: move them first."""
    await users.delete_team(session, ctx, team_id, expected_version=if_match)
    return Response(status_code=204)


@router.get("/workspace", response_model=WorkspaceOut, responses=errors(), summary="The caller's workspace")
async def current_workspace(ctx: AnyCaller, session: Reader) -> Response:
    workspace = await workspaces.get(session, ctx.workspace_id)
    return resource_response(WorkspaceOut.model_validate(workspace).model_dump(mode="json"))


@router.patch(
    "/workspace",
    response_model=WorkspaceOut,
    responses=errors(409, 412, 428),
    summary="Change the workspace's settings",
)
async def update_workspace(patch: WorkspacePatch, ctx: WorkspaceAdmin, session: Session, if_match: IfMatch) -> Response:
    """Admins only. The currency changes only while the workspace has no orders (409 after); a new
    code pattern applies to codes issued from now on."""
    workspace = await workspaces.update(session, ctx, patch, expected_version=if_match)
    return resource_response(WorkspaceOut.model_validate(workspace).model_dump(mode="json"))
