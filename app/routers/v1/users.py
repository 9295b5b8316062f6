"""Users, teams and the current workspace: /api/v1/users, /api/v1/teams, /api/v1/workspace."""

from fastapi import APIRouter
from starlette.responses import Response

from app.http.json_response import json_response
from app.routers.deps import AnyCaller, Reader, Session, UsersRead, UsersWrite
from app.routers.responses import errors
from app.schemas.auth import TeamCreate, TeamList, TeamOut, UserCreate, UserList, UserOut, WorkspaceOut
from app.services.identity import users, workspaces

router = APIRouter(tags=["users and teams"])


@router.get("/users", response_model=UserList, responses=errors(), summary="List users")
async def list_users(ctx: UsersRead, session: Reader) -> Response:
    items = [UserOut.model_validate(u).model_dump(mode="json") for u in await users.list_users(session, ctx)]
    return json_response({"items": items})


@router.post("/users", status_code=201, response_model=UserOut, responses=errors(409), summary="Add a user")
async def create_user(data: UserCreate, ctx: UsersWrite, session: Session) -> Response:
    """The password is stored as an Argon2 hash; the role sets scopes and visibility."""
    user = await users.create_user(session, ctx, data)
    return json_response(UserOut.model_validate(user).model_dump(mode="json"), status_code=201)


@router.get("/teams", response_model=TeamList, responses=errors(), summary="List teams")
async def list_teams(ctx: UsersRead, session: Reader) -> Response:
    items = [TeamOut.model_validate(t).model_dump(mode="json") for t in await users.list_teams(session, ctx)]
    return json_response({"items": items})


@router.post("/teams", status_code=201, response_model=TeamOut, responses=errors(), summary="Add a team")
async def create_team(data: TeamCreate, ctx: UsersWrite, session: Session) -> Response:
    """A manager sees the customers owned by members of its team."""
    team = await users.create_team(session, ctx, data)
    return json_response(TeamOut.model_validate(team).model_dump(mode="json"), status_code=201)


@router.get("/workspace", response_model=WorkspaceOut, responses=errors(), summary="The caller's workspace")
async def current_workspace(ctx: AnyCaller, session: Reader) -> Response:
    workspace = await workspaces.get(session, ctx.workspace_id)
    return json_response(WorkspaceOut.model_validate(workspace).model_dump(mode="json"))
