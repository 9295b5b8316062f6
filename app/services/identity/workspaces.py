"""Workspaces: creation with a first admin, and the current workspace."""

import uuid
import zoneinfo

from babel.numbers import list_currencies
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller, Role
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.versions import check_version
from app.models import Customer, CustomerCodeCounter, Order, User, Workspace
from app.models.workspace import DEFAULT_CUSTOMER_CODE_PATTERN
from app.schemas.auth import WorkspacePatch
from app.services.customers import customer_codes
from app.services.events import audit
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


async def quiet_hours(session: AsyncSession, workspace_id: uuid.UUID) -> tuple[str, tuple[str, str] | None]:
    """The workspace's time zone and its default quiet hours (local start, end), if it has them."""
    row = (
        await session.execute(
            select(Workspace.timezone, Workspace.quiet_start, Workspace.quiet_end).where(Workspace.id == workspace_id)
        )
    ).first()
    if row is None:
        return "UTC", None
    zone, start, end = row
    return zone, (start, end) if start and end else None


async def currency(session: AsyncSession, workspace_id: uuid.UUID) -> str:
    """The workspace's ISO 4217 currency: its orders are recorded in it, so its money figures are
    written in that currency's decimals."""
    code = await session.scalar(select(Workspace.currency).where(Workspace.id == workspace_id))
    if code is None:
        raise NotFound("No such workspace.")
    return code


async def find_by_slug(session: AsyncSession, slug: str) -> Workspace | None:
    return await session.scalar(select(Workspace).where(Workspace.slug == slug))


# Files of a system's zoneinfo folder that name no IANA zone (`localtime` is the machine's own).
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_SETTINGS = ("name", "timezone", "customer_code_pattern", "currency", "default_assignee_id")


async def update(session: AsyncSession, ctx: Caller, patch: WorkspacePatch, *, expected_version: int) -> Workspace:
    """The workspace's settings; every field sent is checked before any is kept."""
    workspace = await session.scalar(select(Workspace).where(Workspace.id == ctx.workspace_id).with_for_update())
    if workspace is None:
        raise NotFound("No such workspace.")
    check_version(workspace.version, expected_version, what="workspace")
    sent = patch.model_fields_set
    for name in sent - {"default_assignee_id", "quiet_hours"}:
        if getattr(patch, name) is None:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
    if patch.timezone is not None and (
        patch.timezone in _NOT_ZONES or patch.timezone not in zoneinfo.available_timezones()
    ):
        raise ValidationFailed(f"'{patch.timezone}' is not an IANA time zone.", loc=["body", "timezone"])
    if patch.customer_code_pattern is not None:
        try:
            customer_codes.check_pattern(patch.customer_code_pattern)
        except ValueError as exc:
            raise ValidationFailed(str(exc), loc=["body", "customer_code_pattern"]) from exc
    if patch.currency is not None and patch.currency not in list_currencies():
        raise ValidationFailed(f"'{patch.currency}' is not an ISO 4217 currency.", loc=["body", "currency"])
    if patch.default_assignee_id is not None:
        active = await session.scalar(
            select(User.id).where(
                User.workspace_id == ctx.workspace_id, User.id == patch.default_assignee_id, User.is_active
            )
        )
        if active is None:
            raise ValidationFailed(
                "default_assignee_id is not an active user of this workspace.", loc=["body", "default_assignee_id"]
            )
    if patch.customer_code_pattern is not None and patch.customer_code_pattern != workspace.customer_code_pattern:
        await _check_codes_stay_unique(session, ctx.workspace_id, patch.customer_code_pattern)
    if patch.currency is not None and patch.currency != workspace.currency:
        # Orders are recorded in the workspace's currency: it changes only before the first one. The
        # table lock holds back a concurrent first order until this commits; a currency changes in a
        # workspace's setup, rarely and briefly.
        await session.execute(text("LOCK TABLE orders IN SHARE MODE"))
        if await session.scalar(select(Order.id).where(Order.workspace_id == ctx.workspace_id).limit(1)) is not None:
            raise Conflict("The workspace has orders: they are recorded in its currency, which stays.")
    changes: audit.Changes = {}
    for name in _SETTINGS:
        if name in sent and getattr(patch, name) != getattr(workspace, name):
            before, after = getattr(workspace, name), getattr(patch, name)
            changes[name] = {
                "before": None if before is None else str(before),
                "after": None if after is None else str(after),
            }
            setattr(workspace, name, after)
    if "quiet_hours" in sent:
        quiet = (patch.quiet_hours.start, patch.quiet_hours.end) if patch.quiet_hours else (None, None)
        if quiet != (workspace.quiet_start, workspace.quiet_end):
            changes["quiet_hours"] = {
                "before": _window(workspace.quiet_start, workspace.quiet_end),
                "after": _window(*quiet),
            }
            workspace.quiet_start, workspace.quiet_end = quiet
    audit.record_update(session, ctx, workspace, entity_type="workspace", changes=changes)
    await session.flush()
    return workspace


def _window(start: str | None, end: str | None) -> str | None:
    return f"{start}-{end}" if start and end else None


async def _check_codes_stay_unique(session: AsyncSession, workspace_id: uuid.UUID, pattern: str) -> None:
    """A pattern whose numbering would start afresh (no counter for its scope yet) over codes of its
    shape that exist would issue them again: 409 rather than a failing create later."""
    scope = customer_codes.render(pattern, clock.now())
    counted = await session.scalar(
        select(CustomerCodeCounter.last_value).where(
            CustomerCodeCounter.workspace_id == workspace_id, CustomerCodeCounter.scope == scope
        )
    )
    if counted is not None:
        return
    taken = await session.scalar(
        select(Customer.code)
        .where(Customer.workspace_id == workspace_id, Customer.code.regexp_match(customer_codes.shape(pattern)))
        .limit(1)
    )
    if taken is not None:
        raise Conflict(f"Codes of this pattern's shape exist (e.g. {taken}); its numbering would repeat them.")
