"""Tasks tied to customers: create, change, complete (linked to the contact that did it), cancel,
and the "my tasks" views (overdue, today, upcoming)."""

import uuid
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.models import Customer, Interaction, Task, User
from app.schemas.interaction import TaskIn, TaskPatch
from app.services.customers.visibility import through_customer, visible_customer_clauses
from app.services.engagement import assignees
from app.services.events import audit, outbox
from app.services.identity import workspaces

View = Literal["overdue", "today", "upcoming", "all"]


async def _check_assignee(session: AsyncSession, ctx: Caller, assignee_id: uuid.UUID) -> None:
    found = await session.scalar(
        select(User.id).where(User.workspace_id == ctx.workspace_id, User.id == assignee_id, User.is_active.is_(True))
    )
    if found is None:
        raise ValidationFailed("assignee_id is not an active user of this workspace.", loc=["body", "assignee_id"])


async def create(session: AsyncSession, ctx: Caller, data: TaskIn) -> Task:
    found = (
        await session.execute(
            select(Customer.id, Customer.owner_id).where(
                Customer.id == data.customer_id, *visible_customer_clauses(ctx)
            )
        )
    ).first()
    if found is None:
        raise NotFound("No customer with that id.")
    if data.assignee_id is not None:
        await _check_assignee(session, ctx, data.assignee_id)
    # An API key is nobody: its tasks go to the customer's owner, else the workspace's fallback.
    assignee = data.assignee_id or ctx.user_id or found.owner_id or await assignees.fallback(session, ctx.workspace_id)
    now = clock.now()
    task = Task(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        customer_id=data.customer_id,
        title=data.title,
        kind=data.kind,
        assignee_id=assignee,
        due_at=data.due_at,
        priority=data.priority,
        status="open",
        origin="manual",
        notes=data.notes,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(task)
    await session.flush()
    outbox.emit(session, ctx, "task.created", event_data(task))
    return task


async def get(session: AsyncSession, ctx: Caller, task_id: uuid.UUID, *, lock: bool = False) -> Task:
    return await scoped.one(
        session, through_customer(Task, ctx).where(Task.id == task_id), missing="No task with that id.", lock=lock
    )


async def update(
    session: AsyncSession, ctx: Caller, task_id: uuid.UUID, patch: TaskPatch, *, expected_version: int
) -> Task:
    task = await get(session, ctx, task_id, lock=True)
    check_version(task.version, expected_version, what="task")
    if task.status != "open":
        raise Conflict(f"The task is {task.status}; only open tasks change.")
    if patch.assignee_id is not None:
        await _check_assignee(session, ctx, patch.assignee_id)
    changes: audit.Changes = {}
    for name in ("title", "assignee_id", "due_at", "priority", "notes"):
        value = getattr(patch, name)
        if name in patch.model_fields_set and value != getattr(task, name):
            if value is None and name in ("title", "assignee_id", "due_at", "priority"):
                raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
            changes[name] = {"before": to_jsonable(getattr(task, name)), "after": to_jsonable(value)}
            setattr(task, name, value)
    audit.record_update(session, ctx, task, entity_type="task", changes=changes)
    if changes:
        outbox.emit(session, ctx, "task.updated", event_data(task) | {"changed_fields": list(changes)})
    return task


async def complete(session: AsyncSession, ctx: Caller, task_id: uuid.UUID, interaction_id: uuid.UUID | None) -> Task:
    task = await get(session, ctx, task_id, lock=True)
    if task.status != "open":
        raise Conflict(f"The task is already {task.status}.")
    if interaction_id is not None:
        found = await session.scalar(
            select(Interaction.id).where(
                Interaction.workspace_id == ctx.workspace_id,
                Interaction.id == interaction_id,
                Interaction.customer_id == task.customer_id,
                Interaction.deleted_at.is_(None),
            )
        )
        if found is None:
            raise ValidationFailed(
                "No interaction with that id for this task's customer.", loc=["body", "interaction_id"]
            )
    now = clock.now()
    task.status, task.completed_at, task.completed_by, task.interaction_id = "done", now, ctx.user_id, interaction_id
    task.version += 1
    task.updated_at = now
    outbox.emit(session, ctx, "task.completed", event_data(task))
    return task


async def cancel(session: AsyncSession, ctx: Caller, task_id: uuid.UUID) -> Task:
    task = await get(session, ctx, task_id, lock=True)
    if task.status != "open":
        raise Conflict(f"The task is already {task.status}.")
    task.status = "cancelled"
    task.version += 1
    task.updated_at = clock.now()
    outbox.emit(session, ctx, "task.cancelled", event_data(task))
    return task


async def list_tasks(
    session: AsyncSession,
    ctx: Caller,
    *,
    view: View,
    assignee_id: uuid.UUID | None,
    customer_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Task], str | None]:
    """By due time. `today` is the workspace's local day; `overdue` is open and past due."""
    now = clock.now()
    tz = ZoneInfo(await workspaces.timezone(session, ctx.workspace_id))
    local_midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    end_of_today = local_midnight + timedelta(days=1)
    stmt = through_customer(Task, ctx)
    if assignee_id:
        stmt = stmt.where(Task.assignee_id == assignee_id)
    if customer_id:
        stmt = stmt.where(Task.customer_id == customer_id)
    if view != "all":
        stmt = stmt.where(Task.status == "open")
    elif status:
        stmt = stmt.where(Task.status == status)
    if view == "overdue":
        stmt = stmt.where(Task.due_at < now)
    elif view == "today":
        stmt = stmt.where(Task.due_at >= now, Task.due_at < end_of_today)
    elif view == "upcoming":
        stmt = stmt.where(Task.due_at >= end_of_today)
    keys = [SortKey(Task.due_at), SortKey(Task.id)]
    return await keyset_page(session, stmt, keys, list_name=f"tasks:{view}", limit=limit, cursor=cursor)


def present(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "customer_id": task.customer_id,
        "title": task.title,
        "kind": task.kind,
        "assignee_id": task.assignee_id,
        "due_at": task.due_at,
        "priority": task.priority,
        "status": task.status,
        "overdue": task.status == "open" and task.due_at < clock.now(),
        "origin": task.origin,
        "plan_id": task.plan_id,
        "notes": task.notes,
        "interaction_id": task.interaction_id,
        "completed_at": task.completed_at,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "version": task.version,
    }


def event_data(task: Task) -> dict[str, Any]:
    return dict(to_jsonable(present(task)))
