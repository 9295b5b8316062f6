"""Users and teams: creation with Argon2 password hashes, sign-in, listing."""

import uuid

from pwdlib import PasswordHash
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller, Role
from app.core.errors import Conflict, Unauthorized, ValidationFailed
from app.models import Team, User, Workspace
from app.schemas.auth import TeamCreate, UserCreate
from app.services.events import audit

password_hash = PasswordHash.recommended()
# Verified against when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = password_hash.hash("guanxi-timing-equaliser")


async def create_user(session: AsyncSession, ctx: Caller, data: UserCreate) -> User:
    if data.team_id is not None:
        team = await session.scalar(
            select(Team.id).where(Team.workspace_id == ctx.workspace_id, Team.id == data.team_id)
        )
        if team is None:
            raise ValidationFailed("team_id is not a team of this workspace.", loc=["body", "team_id"])
    return await add_user(
        session,
        ctx.workspace_id,
        email=data.email,
        name=data.name,
        password=data.password,
        role=data.role,
        team_id=data.team_id,
        actor=ctx,
    )


async def add_user(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    email: str,
    name: str,
    password: str,
    role: Role,
    team_id: uuid.UUID | None = None,
    actor: Caller | None = None,
) -> User:
    user = User(
        workspace_id=workspace_id,
        email=email.lower(),
        name=name,
        password_hash=password_hash.hash(password),
        role=role.value,
        team_id=team_id,
        is_active=True,
        created_at=clock.now(),
        version=1,
    )
    try:
        # Added inside the savepoint: a duplicate rolls the savepoint back and drops the object.
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        existing = await session.scalar(
            select(User.id).where(User.workspace_id == workspace_id, func.lower(User.email) == email.lower())
        )
        raise Conflict("A user with this email exists.", existing_id=str(existing)) from exc
    if actor is not None:
        audit.record(
            session,
            actor,
            entity_type="user",
            entity_id=user.id,
            action="created",
            changes={"email": {"before": None, "after": user.email}, "role": {"before": None, "after": role}},
        )
    return user


async def authenticate(session: AsyncSession, *, workspace_slug: str, email: str, password: str) -> User:
    user = await session.scalar(
        select(User)
        .join(Workspace, Workspace.id == User.workspace_id)
        .where(Workspace.slug == workspace_slug, func.lower(User.email) == email.lower())
    )
    if user is None or not user.is_active:
        password_hash.verify(password, _DUMMY_HASH)
        raise Unauthorized("Wrong workspace, email or password.")
    if not password_hash.verify(password, user.password_hash):
        raise Unauthorized("Wrong workspace, email or password.")
    return user


async def get_active(session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID) -> User:
    user = await session.scalar(select(User).where(User.workspace_id == workspace_id, User.id == user_id))
    if user is None or not user.is_active:
        raise Unauthorized("The user no longer exists or is deactivated.")
    return user


async def list_users(session: AsyncSession, ctx: Caller) -> list[User]:
    return await scoped.all_of(session, ctx, User, order_by=User.created_at)


async def create_team(session: AsyncSession, ctx: Caller, data: TeamCreate) -> Team:
    team = Team(workspace_id=ctx.workspace_id, name=data.name, created_at=clock.now())
    session.add(team)
    await session.flush()
    return team


async def list_teams(session: AsyncSession, ctx: Caller) -> list[Team]:
    return await scoped.all_of(session, ctx, Team, order_by=Team.created_at)
