"""Workspaces: creation with a first admin, and the current workspace."""

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Role
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.models import User, Workspace
from app.models.workspace import DEFAULT_CUSTOMER_CODE_PATTERN
from app.services.customers import customer_codes
from app.services.identity import users


async def create(
    session: AsyncSession,
    *,
    slug: str,
    name: str,
    admin_email: str,
    admin_password: str,
    customer_code_pattern: str = DEFAULT_CUSTOMER_CODE_PATTERN,
) -> tuple[Workspace, User]:
    try:
        customer_codes.check_pattern(customer_code_pattern)
    except ValueError as exc:
        raise ValidationFailed(str(exc), loc=["customer_code_pattern"]) from exc
    workspace = Workspace(slug=slug, name=name, customer_code_pattern=customer_code_pattern, created_at=clock.now())
    try:
        # Added inside the savepoint: a duplicate rolls the savepoint back and drops the object.
        async with session.begin_nested():
            session.add(workspace)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A workspace with slug '{slug}' exists.") from exc
    admin = await users.add_user(
        session,
        workspace.id,
        email=admin_email,
        name="Administrator",
        password=admin_password,
        role=Role.ADMIN,
    )
    return workspace, admin


async def get(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace:
    workspace = await session.scalar(select(Workspace).where(Workspace.id == workspace_id))
    if workspace is None:
        raise NotFound("No such workspace.")
    return workspace


async def all_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every workspace, for the worker's passes over all of them."""
    return list((await session.scalars(select(Workspace.id).order_by(Workspace.id))).all())


async def timezone(session: AsyncSession, workspace_id: uuid.UUID) -> str:
    """The workspace's IANA time zone; UTC for a workspace that is gone."""
    return await session.scalar(select(Workspace.timezone).where(Workspace.id == workspace_id)) or "UTC"


async def currency(session: AsyncSession, workspace_id: uuid.UUID) -> str:
    """The workspace's ISO 4217 currency: its orders are recorded in it, so its money figures are
    written in that currency's decimals."""
    code = await session.scalar(select(Workspace.currency).where(Workspace.id == workspace_id))
    if code is None:
        raise NotFound("No such workspace.")
    return code


async def find_by_slug(session: AsyncSession, slug: str) -> Workspace | None:
    return await session.scalar(select(Workspace).where(Workspace.slug == slug))
