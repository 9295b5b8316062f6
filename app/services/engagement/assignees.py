"""Who a task goes to when its customer has no owner: a task is never nobody's.

The rule, for every path that makes tasks (the API, follow-up plans, care reminders): the customer's
owner; else the workspace's default assignee while that user is active; else the workspace's
earliest-created active admin (a workspace always keeps one: the last active admin cannot be
deactivated). Users are never deleted, so an inactive admin is the last resort of a workspace
whose admins were all deactivated by hand in the database."""

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def fallback_sql(workspace: str) -> str:
    """A scalar subquery naming the fallback user of the workspace `workspace` (an SQL expression):
    uncorrelated, so a set-based INSERT evaluates it once."""
    return f"""(SELECT u.id FROM users u
     LEFT JOIN workspaces w ON w.id = u.workspace_id AND w.default_assignee_id = u.id
     WHERE u.workspace_id = {workspace} AND ((w.id IS NOT NULL AND u.is_active) OR u.role = 'admin')
     ORDER BY w.id IS NULL, NOT u.is_active, u.created_at, u.id LIMIT 1)"""


_FALLBACK = text(f"SELECT {fallback_sql('CAST(:ws AS uuid)')}")


async def fallback(session: AsyncSession, workspace_id: uuid.UUID) -> uuid.UUID:
    found = await session.scalar(_FALLBACK, {"ws": workspace_id})
    assert found is not None, "a workspace is created with an admin, and users are never deleted"
    return uuid.UUID(str(found))
