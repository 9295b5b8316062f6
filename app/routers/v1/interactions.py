"""Interactions, tasks and the customer view: /api/v1/interactions, /api/v1/tasks,
/api/v1/customers/{id}/timeline, /api/v1/customers/{id}/summary."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    Cursor,
    CustomersRead,
    CustomersWrite,
    IdempotencyKey,
    IfMatch,
    Limit,
    Reader,
    Session,
    UsersWrite,
)
from app.routers.responses import errors, existing, idempotent, resource_response, stored_resource
from app.schemas.common import Timestamp
from app.schemas.customer import BatchResponse
from app.schemas.interaction import (
    Channel,
    InteractionImport,
    InteractionIn,
    InteractionOut,
    InteractionPage,
    InteractionPatch,
    Outcomes,
    OutcomesOut,
    TaskComplete,
    TaskIn,
    TaskOut,
    TaskPage,
    TaskPatch,
)
from app.schemas.timeline import ContactSummary, TimelinePage
from app.services.customers import timeline
from app.services.engagement import interactions, tasks

router = APIRouter(tags=["interactions and tasks"])


@router.post(
    "/interactions",
    status_code=201,
    response_model=InteractionOut,
    responses=errors(404) | existing(InteractionOut, "Pushed before with this `external_id`: the stored contact"),
    summary="Log a contact",
)
async def log_interaction(
    request: Request, data: InteractionIn, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """With `external_id`, the same contact pushed again answers 200 with the stored one."""

    async def create() -> StoredResponse:
        interaction, created = await interactions.log(session, ctx, data)
        body = interactions.present(interaction, ctx)
        if not created:
            return stored_resource(body, location=None, status_code=200)
        return stored_resource(body, location=f"/api/v1/interactions/{interaction.id}")

    return await idempotent(request, session, ctx, key, create)


@router.post(
    "/interactions/import",
    status_code=207,
    response_model=BatchResponse,
    responses=errors(413),
    summary="Import up to 100",
)
async def import_interactions(batch: InteractionImport, ctx: CustomersWrite, session: Session) -> Response:
    """For call centres and other partners: each item idempotent by (`source`, `external_id`);
    `results[i].status` is 201 (new), 200 (already there) or the item's problem."""
    return json_response(await interactions.import_many(session, ctx, batch.items), status_code=207)


@router.get("/interactions", response_model=InteractionPage, responses=errors(404), summary="List contacts")
async def list_interactions(
    ctx: CustomersRead,
    session: Reader,
    customer_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    occurred_from: Timestamp | None = None,
    occurred_to: Timestamp | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first, per customer or per user, over the customers the caller may see."""
    rows, next_cursor = await interactions.list_interactions(
        session,
        ctx,
        customer_id=customer_id,
        user_id=user_id,
        channel=channel,
        outcome=outcome,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        limit=limit,
        cursor=cursor,
    )
    return json_response({"items": [interactions.present(r, ctx) for r in rows], "next_cursor": next_cursor})


@router.get(
    "/interactions/{interaction_id}", response_model=InteractionOut, responses=errors(404), summary="Get a contact"
)
async def get_interaction(interaction_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(interactions.present(await interactions.get(session, ctx, interaction_id), ctx))


@router.patch(
    "/interactions/{interaction_id}", response_model=InteractionOut, responses=errors(404, 412, 428), summary="Change"
)
async def update_interaction(
    interaction_id: uuid.UUID, patch: InteractionPatch, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    interaction = await interactions.update(session, ctx, interaction_id, patch, expected_version=version)
    return resource_response(interactions.present(interaction, ctx))


@router.delete("/interactions/{interaction_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete")
async def delete_interaction(
    interaction_id: uuid.UUID, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    """Soft delete: the contact leaves lists, the timeline and the summary."""
    await interactions.delete(session, ctx, interaction_id, expected_version=version)
    return Response(status_code=204)


@router.get(
    "/settings/interaction-outcomes", response_model=OutcomesOut, responses=errors(), summary="Interaction outcomes"
)
async def get_outcomes(ctx: CustomersRead, session: Reader) -> Response:
    return json_response({"outcomes": await interactions.outcomes(session, ctx)})


@router.put(
    "/settings/interaction-outcomes", response_model=OutcomesOut, responses=errors(), summary="Set interaction outcomes"
)
async def put_outcomes(body: Outcomes, ctx: UsersWrite, session: Session) -> Response:
    """The outcomes a contact can have in this workspace (`no_answer` is what summaries read as unanswered)."""
    return json_response({"outcomes": await interactions.set_outcomes(session, ctx, body.outcomes)})


@router.post("/tasks", status_code=201, response_model=TaskOut, responses=errors(404), summary="Add a task")
async def create_task(
    request: Request, data: TaskIn, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """A due time in the past is accepted: the task is then `overdue`."""

    async def create() -> StoredResponse:
        task = await tasks.create(session, ctx, data)
        return stored_resource(tasks.present(task), location=f"/api/v1/tasks/{task.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get("/tasks", response_model=TaskPage, responses=errors(), summary="Tasks (my tasks by default)")
async def list_tasks(
    ctx: CustomersRead,
    session: Reader,
    view: Literal["overdue", "today", "upcoming", "all"] = "all",
    assignee: Annotated[
        str,
        Query(
            # A UUID in its canonical form: 36 characters of hex digits and dashes may be neither.
            pattern=r"^(me|anyone|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
            description="me, anyone or a user id",
        ),
    ] = "me",
    customer_id: uuid.UUID | None = None,
    status: Literal["open", "done", "cancelled"] | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """By due time. `today` uses the workspace's time zone."""
    assignee_id = None if assignee == "anyone" else (ctx.user_id if assignee == "me" else uuid.UUID(assignee))
    rows, next_cursor = await tasks.list_tasks(
        session,
        ctx,
        view=view,
        assignee_id=assignee_id,
        customer_id=customer_id,
        status=status,
        limit=limit,
        cursor=cursor,
    )
    return json_response({"items": [tasks.present(t) for t in rows], "next_cursor": next_cursor})


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=errors(404), summary="Get a task")
async def get_task(task_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(tasks.present(await tasks.get(session, ctx, task_id)))


@router.patch("/tasks/{task_id}", response_model=TaskOut, responses=errors(404, 409, 412, 428), summary="Change a task")
async def update_task(
    task_id: uuid.UUID, patch: TaskPatch, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    return resource_response(tasks.present(await tasks.update(session, ctx, task_id, patch, expected_version=version)))


@router.post("/tasks/{task_id}/complete", response_model=TaskOut, responses=errors(404, 409), summary="Complete a task")
async def complete_task(
    task_id: uuid.UUID, ctx: CustomersWrite, session: Session, body: TaskComplete | None = None
) -> Response:
    """Optionally linked to the interaction that completed it (same customer); no body, no link."""
    interaction_id = body.interaction_id if body is not None else None
    return resource_response(tasks.present(await tasks.complete(session, ctx, task_id, interaction_id)))


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut, responses=errors(404, 409), summary="Cancel a task")
async def cancel_task(task_id: uuid.UUID, ctx: CustomersWrite, session: Session) -> Response:
    return resource_response(tasks.present(await tasks.cancel(session, ctx, task_id)))


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=TimelinePage,
    responses=errors(404),
    summary="Everything that happened",
)
async def customer_timeline(
    customer_id: uuid.UUID,
    ctx: CustomersRead,
    session: Reader,
    type: Annotated[list[Literal[timeline.TYPES]] | None, Query(description="Only these item types.")] = None,  # type: ignore[valid-type]
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Interactions, completed tasks, field changes, orders, stage and tier changes and segment joins,
    newest first, from one query."""
    items, next_cursor = await timeline.timeline(
        session, ctx, customer_id, types=list(type or []), limit=limit, cursor=cursor
    )
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get(
    "/customers/{customer_id}/summary", response_model=ContactSummary, responses=errors(404), summary="Contact summary"
)
async def customer_summary(customer_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """Last contact, days since, open tasks, next follow-up, contacts by channel over 30/90/365 days,
    and the preferred channel and hours, from answered contacts."""
    return json_response(await timeline.summary(session, ctx, customer_id))
