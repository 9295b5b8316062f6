"""Users and teams: creation with Argon2 password hashes, sign-in, changes and offboarding.

No caller grants what it does not hold: creating, changing or resetting the password of a user
needs every scope of the user's present and new role. The workspace keeps one active admin at
least; the admins' rows are locked before one is demoted or deactivated, so two admins demoting
each other at once leave one."""

import unicodedata
import uuid
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import ROLE_SCOPES, Caller, Role
from app.core.errors import Conflict, Forbidden, Unauthorized, ValidationFailed
from app.core.versions import check_version
from app.models import Team, Ticket, User, Workspace
from app.schemas.auth import PasswordChange, TeamCreate, TeamOut, TeamPatch, UserCreate, UserOut, UserPatch
from app.services.events import audit, outbox
from app.services.identity import api_keys, user_state

password_hash = PasswordHash.recommended()
# Verified against when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = password_hash.hash("guanxi-timing-equaliser")


def email_key(email: str) -> str:
    """The form two spellings of one address share: NFKC, case-folded (NFKC again, as folding can
    undo it). Unique per workspace, and what sign-in looks up."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).casefold())


def _check_grantable(ctx: Caller, role: Role) -> None:
    missing = sorted(ROLE_SCOPES[role] - ctx.scopes)
    if missing:
        raise Forbidden(f"The role {role.value} holds scopes you do not: {', '.join(missing)}.", missing_scopes=missing)


async def _check_team(session: AsyncSession, ctx: Caller, team_id: uuid.UUID | None) -> None:
    if team_id is None:
        return
    team = await session.scalar(select(Team.id).where(Team.workspace_id == ctx.workspace_id, Team.id == team_id))
    if team is None:
        raise ValidationFailed("team_id is not a team of this workspace.", loc=["body", "team_id"])


async def create_user(session: AsyncSession, ctx: Caller, data: UserCreate) -> User:
    _check_grantable(ctx, data.role)
    await _check_team(session, ctx, data.team_id)
    user = await add_user(
        session,
        ctx.workspace_id,
        email=data.email,
        name=data.name,
        password=data.password,
        role=data.role,
        team_id=data.team_id,
        actor=ctx,
    )
    outbox.emit(session, ctx, "user.created", _user_data(user))
    return user


def _user_data(user: User) -> dict[str, Any]:
    return UserOut.model_validate(user).model_dump(mode="json")


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
    now = clock.now()
    user = User(
        workspace_id=workspace_id,
        email=email,
        email_key=email_key(email),
        name=name,
        password_hash=password_hash.hash(password),
        role=role.value,
        team_id=team_id,
        is_active=True,
        created_at=now,
        updated_at=now,
        version=1,
    )
    try:
        # Added inside the savepoint: a duplicate rolls the savepoint back and drops the object.
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        existing = await session.scalar(
            select(User.id).where(User.workspace_id == workspace_id, User.email_key == email_key(email))
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
        .where(Workspace.slug == workspace_slug, User.email_key == email_key(email))
    )
    if user is None or not user.is_active:
        password_hash.verify(password, _DUMMY_HASH)
        raise Unauthorized("Wrong workspace, email or password.")
    if not password_hash.verify(password, user.password_hash):
        raise Unauthorized("Wrong workspace, email or password.")
    return user


async def get_active(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, *, issued_at: int | None = None
) -> User:
    """The user a token names, if it may still sign in; `issued_at` refuses a token older than the
    user's last password change."""
    user = await session.scalar(select(User).where(User.workspace_id == workspace_id, User.id == user_id))
    if user is None or not user.is_active:
        raise Unauthorized("The user no longer exists or is deactivated.")
    changed = user.credentials_changed_at
    if issued_at is not None and changed is not None and issued_at < int(changed.timestamp()):
        raise Unauthorized("The password changed since this token was issued; sign in again.")
    return user


async def get_user(session: AsyncSession, ctx: Caller, user_id: uuid.UUID) -> User:
    return await scoped.get(session, ctx, User, user_id, missing="No user with that id.")


async def update_user(
    session: AsyncSession, ctx: Caller, user_id: uuid.UUID, patch: UserPatch, *, expected_version: int
) -> User:
    sent = patch.model_fields_set
    admins: list[uuid.UUID] = []
    if ("role" in sent and patch.role != Role.ADMIN) or ("is_active" in sent and patch.is_active is False):
        # Locked first, in id order, before the user's own row: a concurrent demotion waits here and
        # then counts the admins the first one left.
        admins = list(
            await session.scalars(
                select(User.id)
                .where(User.workspace_id == ctx.workspace_id, User.role == Role.ADMIN.value, User.is_active)
                .order_by(User.id)
                .with_for_update()
            )
        )
    user = await scoped.get(session, ctx, User, user_id, missing="No user with that id.", lock=True)
    _check_grantable(ctx, Role(user.role))
    if patch.role is not None:
        _check_grantable(ctx, patch.role)
    if "team_id" in sent:
        await _check_team(session, ctx, patch.team_id)
    check_version(user.version, expected_version, what="user")
    changes: audit.Changes = {}
    for name in ("name", "role", "team_id", "is_active"):
        if name not in sent:
            continue
        before, after = getattr(user, name), getattr(patch, name)
        after = after.value if isinstance(after, Role) else after
        if before != after:
            changes[name] = {"before": _jsonable(before), "after": _jsonable(after)}
            setattr(user, name, after)
    stays_admin = user.role == Role.ADMIN.value and user.is_active
    if user.id in admins and not stays_admin and len(admins) == 1:
        raise Conflict("The workspace's last active admin cannot be demoted or deactivated.")
    if not changes:
        return user
    audit.record_update(session, ctx, user, entity_type="user", changes=changes)
    await session.flush()
    outbox.emit(session, ctx, "user.updated", {**_user_data(user), "changed_fields": sorted(changes)})
    _forget(user.id)
    return user


def _jsonable(value: object) -> object:
    return str(value) if isinstance(value, uuid.UUID) else value


def _forget(user_id: uuid.UUID) -> None:
    """This process stops trusting what it cached about the user and the keys the user made."""
    user_state.forget(user_id)
    api_keys.forget_created_by(user_id)


async def change_own_password(session: AsyncSession, ctx: Caller, data: PasswordChange) -> User:
    if ctx.user_id is None:
        raise Forbidden("Only a signed-in user has a password to change.")
    user = await scoped.get(session, ctx, User, ctx.user_id, missing="No user with that id.", lock=True)
    if not password_hash.verify(data.current_password, user.password_hash):
        raise Forbidden("The current password is wrong.")
    return _set_password(session, ctx, user, data.new_password, by="self")


async def reset_password(session: AsyncSession, ctx: Caller, user_id: uuid.UUID, new_password: str) -> User:
    user = await scoped.get(session, ctx, User, user_id, missing="No user with that id.", lock=True)
    _check_grantable(ctx, Role(user.role))
    return _set_password(session, ctx, user, new_password, by="admin")


def _set_password(session: AsyncSession, ctx: Caller, user: User, new_password: str, *, by: str) -> User:
    """Every token issued before now stops working (within the cache bound in other processes)."""
    user.password_hash = password_hash.hash(new_password)
    user.credentials_changed_at = clock.now()
    user.version += 1
    user.updated_at = user.credentials_changed_at
    audit.record(session, ctx, entity_type="user", entity_id=user.id, action="password_changed", changes={})
    outbox.emit(session, ctx, "user.password_changed", {"user_id": str(user.id), "by": by})
    _forget(user.id)
    return user


async def list_users(session: AsyncSession, ctx: Caller) -> list[User]:
    return await scoped.all_of(session, ctx, User, order_by=User.created_at)


async def create_team(session: AsyncSession, ctx: Caller, data: TeamCreate) -> Team:
    now = clock.now()
    team = Team(workspace_id=ctx.workspace_id, name=data.name, created_at=now, updated_at=now, version=1)
    session.add(team)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="team",
        entity_id=team.id,
        action="created",
        changes={"name": {"before": None, "after": team.name}},
    )
    outbox.emit(session, ctx, "team.created", _team_data(team))
    return team


def _team_data(team: Team) -> dict[str, Any]:
    return TeamOut.model_validate(team).model_dump(mode="json")


async def get_team(session: AsyncSession, ctx: Caller, team_id: uuid.UUID) -> Team:
    return await scoped.get(session, ctx, Team, team_id, missing="No team with that id.")


async def update_team(
    session: AsyncSession, ctx: Caller, team_id: uuid.UUID, patch: TeamPatch, *, expected_version: int
) -> Team:
    team = await scoped.get(session, ctx, Team, team_id, missing="No team with that id.", lock=True)
    check_version(team.version, expected_version, what="team")
    if team.name == patch.name:
        return team
    changes: audit.Changes = {"name": {"before": team.name, "after": patch.name}}
    team.name = patch.name
    audit.record_update(session, ctx, team, entity_type="team", changes=changes)
    await session.flush()
    outbox.emit(session, ctx, "team.updated", {**_team_data(team), "changed_fields": sorted(changes)})
    return team


async def delete_team(session: AsyncSession, ctx: Caller, team_id: uuid.UUID, *, expected_version: int) -> None:
    """A team still holding users or tickets is a 409: moving them is a decision for a person, and
    a manager's view follows its team."""
    team = await scoped.get(session, ctx, Team, team_id, missing="No team with that id.", lock=True)
    check_version(team.version, expected_version, what="team")
    members = await session.scalar(
        select(func.count()).select_from(User).where(User.workspace_id == ctx.workspace_id, User.team_id == team.id)
    )
    tickets = await session.scalar(
        select(func.count())
        .select_from(Ticket)
        .where(Ticket.workspace_id == ctx.workspace_id, Ticket.team_id == team.id)
    )
    if members or tickets:
        raise Conflict(
            "The team still has users or tickets; move them to another team first.",
            members=members,
            tickets=tickets,
        )
    audit.record(
        session,
        ctx,
        entity_type="team",
        entity_id=team.id,
        action="deleted",
        changes={"name": {"before": team.name, "after": None}},
    )
    outbox.emit(session, ctx, "team.deleted", {"id": str(team.id)})
    await session.delete(team)


async def list_teams(session: AsyncSession, ctx: Caller) -> list[Team]:
    return await scoped.all_of(session, ctx, Team, order_by=Team.created_at)
