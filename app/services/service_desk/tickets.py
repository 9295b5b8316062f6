"""Tickets: intake, the workflow, comments, assignment and escalation, the SLA clock, breaches."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.models import (
    BusinessHours,
    CustomerCodeCounter,
    CustomerValue,
    Interaction,
    Order,
    SlaPolicy,
    Team,
    Ticket,
    TicketCategory,
    TicketComment,
    TicketEvent,
    User,
)
from app.schemas.ticket import CommentIn, TicketAttachment, TicketIn, TicketPatch
from app.services.customers.visibility import require_visible, through_customer
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column
from app.services.identity import workspaces
from app.services.loyalty import benefits
from app.services.service_desk.sla_clock import Calendar, add_business_minutes, business_minutes_between

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"assigned", "in_progress", "waiting_on_customer", "resolved", "closed"}),
    "assigned": frozenset({"in_progress", "waiting_on_customer", "resolved"}),
    "in_progress": frozenset({"assigned", "waiting_on_customer", "resolved"}),
    "waiting_on_customer": frozenset({"in_progress", "resolved"}),
    "resolved": frozenset({"closed", "in_progress"}),
    "closed": frozenset(),
}
OPEN = ("new", "assigned", "in_progress", "waiting_on_customer")
REOPEN_WINDOW = timedelta(days=7)
# Used until a workspace sets its own policies (minutes, business time).
DEFAULT_POLICIES = {"urgent": (60, 480), "high": (240, 1440), "normal": (480, 2880), "low": (1440, 7200)}


async def calendar(session: AsyncSession, workspace_id: uuid.UUID) -> Calendar:
    hours = await session.get(BusinessHours, workspace_id)
    if hours is not None:
        return Calendar(
            timezone=hours.timezone,
            weekly=hours.weekly,
            holidays=frozenset(hours.holidays),
            workdays=frozenset(hours.workdays),
        )
    return Calendar(timezone=await workspaces.timezone(session, workspace_id))


async def _policy(session: AsyncSession, workspace_id: uuid.UUID, priority: str, tier: str | None) -> tuple[int, int]:
    rows = await session.execute(
        select(SlaPolicy.tier, SlaPolicy.first_response_minutes, SlaPolicy.resolution_minutes).where(
            SlaPolicy.workspace_id == workspace_id, SlaPolicy.priority == priority
        )
    )
    by_tier = {row[0]: (row[1], row[2]) for row in rows}
    return by_tier.get(tier) or by_tier.get(None) or DEFAULT_POLICIES[priority]


def _record(session: AsyncSession, ctx: Caller, ticket: Ticket, action: str, before: Any, after: Any) -> None:
    session.add(
        TicketEvent(
            workspace_id=ctx.workspace_id,
            id=new_id(),
            ticket_id=ticket.id,
            action=action,
            from_value=None if before is None else str(before),
            to_value=None if after is None else str(after),
            actor=ctx.actor,
            at=clock.now(),
        )
    )


async def _next_number(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    statement = (
        insert(CustomerCodeCounter)
        .values(workspace_id=workspace_id, scope="ticket", last_value=1)
        .on_conflict_do_update(
            index_elements=[CustomerCodeCounter.workspace_id, CustomerCodeCounter.scope],
            set_={"last_value": CustomerCodeCounter.last_value + 1},
        )
        .returning(CustomerCodeCounter.last_value)
    )
    return int((await session.execute(statement)).scalar_one())


async def _check_refs(session: AsyncSession, ctx: Caller, data: TicketIn | TicketPatch) -> None:
    checks: list[tuple[str, Any, Any]] = [
        ("category_id", TicketCategory, data.category_id),
        ("assignee_id", User, data.assignee_id),
        ("team_id", Team, data.team_id),
    ]
    for field, model, value in checks:
        if value is not None:
            found = await session.scalar(
                select(model.id).where(model.workspace_id == ctx.workspace_id, model.id == value)
            )
            if found is None:
                raise ValidationFailed(f"Unknown {field.removesuffix('_id')}.", loc=["body", field])


async def _check_customer_records(session: AsyncSession, ctx: Caller, data: TicketIn) -> None:
    """The order and the contact a ticket is about are records of its own customer (so of the
    workspace, and visible when the customer is): another customer's, or an unknown id, is a 422."""
    checks: list[tuple[str, Any, uuid.UUID | None, list[Any]]] = [
        ("order_id", Order, data.order_id, []),
        ("interaction_id", Interaction, data.interaction_id, [Interaction.deleted_at.is_(None)]),
    ]
    for field, model, value, live in checks:
        if value is not None:
            found = await session.scalar(
                select(model.id).where(
                    model.workspace_id == ctx.workspace_id,
                    model.id == value,
                    model.customer_id == data.customer_id,
                    *live,
                )
            )
            if found is None:
                what = field.removesuffix("_id")
                raise ValidationFailed(f"No {what} with that id for this customer.", loc=["body", field])


async def open_ticket(session: AsyncSession, ctx: Caller, data: TicketIn) -> Ticket:
    await require_visible(session, ctx, data.customer_id)
    await _check_refs(session, ctx, data)
    await _check_customer_records(session, ctx, data)
    tier = await session.scalar(
        select(CustomerValue.tier).where(
            CustomerValue.workspace_id == ctx.workspace_id, CustomerValue.customer_id == data.customer_id
        )
    )
    priority, tier = await benefits.ticket_terms(session, ctx, data.customer_id, priority=data.priority, tier=tier)
    response_minutes, resolution_minutes = await _policy(session, ctx.workspace_id, priority, tier)
    cal = await calendar(session, ctx.workspace_id)
    now = clock.now()
    ticket = Ticket(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        number=await _next_number(session, ctx.workspace_id),
        customer_id=data.customer_id,
        type=data.type,
        channel=data.channel,
        subject=data.subject,
        description=data.description,
        category_id=data.category_id,
        priority=priority,
        status="assigned" if data.assignee_id else "new",
        assignee_id=data.assignee_id,
        team_id=data.team_id,
        order_id=data.order_id,
        interaction_id=data.interaction_id,
        tags=data.tags or [],
        attachments={"items": _attachments(data.attachments or [])},
        tier=tier,
        escalated=False,
        first_response_due_at=add_business_minutes(now, response_minutes, cal),
        resolution_due_at=add_business_minutes(now, resolution_minutes, cal),
        first_response_breached=False,
        resolution_breached=False,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(ticket)
    await session.flush()
    _record(session, ctx, ticket, "opened", None, ticket.status)
    outbox.emit(session, ctx, "ticket.created", event_data(ticket))
    return ticket


async def get(session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID, *, lock: bool = False) -> Ticket:
    """Tickets follow their customer's visibility."""
    statement = through_customer(Ticket, ctx).where(Ticket.id == ticket_id)
    return await scoped.one(session, statement, missing="No ticket with that id.", lock=lock)


async def update(
    session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID, patch: TicketPatch, *, expected_version: int
) -> Ticket:
    ticket = await get(session, ctx, ticket_id, lock=True)
    check_version(ticket.version, expected_version, what="ticket")
    if ticket.status == "closed":
        raise Conflict("A closed ticket does not change.")
    await _check_refs(session, ctx, patch)
    for name in ("tags", "attachments"):
        if name in patch.model_fields_set and getattr(patch, name) is None:
            raise ValidationFailed(f"{name} cannot be null; send [] for none.", loc=["body", name])
    if patch.tags is not None and patch.tags != ticket.tags:
        _record(session, ctx, ticket, "tags_changed", _brief(ticket.tags), _brief(patch.tags))
        ticket.tags = patch.tags
    if patch.attachments is not None:
        items = _attachments(patch.attachments)
        before = ticket.attachments.get("items", [])
        if items != before:
            names = [str(a["name"]) for a in items]
            _record(session, ctx, ticket, "attachments_changed", _brief([a["name"] for a in before]), _brief(names))
            ticket.attachments = {"items": items}
    for name in ("subject", "description", "category_id", "priority", "assignee_id", "team_id"):
        if name not in patch.model_fields_set:
            continue
        value = getattr(patch, name)
        if value is None and name in ("subject", "priority"):
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
        before = getattr(ticket, name)
        if value == before:
            continue
        setattr(ticket, name, value)
        if name in ("assignee_id", "team_id"):
            _record(session, ctx, ticket, "reassigned" if before else "assigned", before, value)
            outbox.emit(
                session, ctx, "ticket.assigned", {"ticket_id": str(ticket.id), name: str(value) if value else None}
            )
            if name == "assignee_id" and value and ticket.status == "new":
                ticket.status = "assigned"
        else:
            _record(session, ctx, ticket, f"{name}_changed", before, value)
    ticket.version += 1
    ticket.updated_at = clock.now()
    return ticket


def _attachments(items: list[TicketAttachment]) -> list[dict[str, Any]]:
    return [dict(to_jsonable(a.model_dump(mode="json"))) for a in items]


def _brief(values: list[str]) -> str:
    """A list as the history's text, cut to its column."""
    text = ", ".join(values)
    return text if len(text) <= 100 else text[:99] + "…"


async def transition(session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID, status: str) -> Ticket:
    """Move along the workflow; 409 names the allowed moves. The SLA clock stops while waiting on
    the customer, keeping the business minutes that were left."""
    ticket = await get(session, ctx, ticket_id, lock=True)
    allowed = set(TRANSITIONS[ticket.status])
    now = clock.now()
    if ticket.status == "resolved" and ticket.resolved_at and now - ticket.resolved_at > REOPEN_WINDOW:
        allowed.discard("in_progress")
    if status not in allowed:
        raise Conflict(
            f"A {ticket.status} ticket cannot move to {status}.", current_status=ticket.status, allowed=sorted(allowed)
        )
    cal = await calendar(session, ctx.workspace_id)
    before = ticket.status
    if status == "waiting_on_customer":
        _pause(ticket, now, cal)
    elif before == "waiting_on_customer":
        _resume(ticket, now, cal)
    if status == "resolved":
        ticket.resolved_at = now
    elif status == "closed":
        ticket.closed_at = now
    elif before == "resolved":
        ticket.resolved_at = None
    ticket.status = status
    ticket.version += 1
    ticket.updated_at = now
    action = "reopened" if before == "resolved" and status == "in_progress" else "status_changed"
    _record(session, ctx, ticket, action, before, status)
    event = {"resolved": "ticket.resolved", "closed": "ticket.closed"}.get(status, "ticket.status_changed")
    outbox.emit(
        session,
        ctx,
        "ticket.reopened" if action == "reopened" else event,
        {**event_data(ticket), "from_status": before},
    )
    return ticket


def _pause(ticket: Ticket, now: datetime, cal: Calendar) -> None:
    ticket.paused_at = now
    if ticket.first_responded_at is None and ticket.first_response_due_at:
        ticket.response_minutes_left = business_minutes_between(now, ticket.first_response_due_at, cal)
        ticket.first_response_due_at = None
    if ticket.resolution_due_at:
        ticket.resolution_minutes_left = business_minutes_between(now, ticket.resolution_due_at, cal)
        ticket.resolution_due_at = None


def _resume(ticket: Ticket, now: datetime, cal: Calendar) -> None:
    if ticket.response_minutes_left is not None:
        ticket.first_response_due_at = add_business_minutes(now, ticket.response_minutes_left, cal)
    if ticket.resolution_minutes_left is not None:
        ticket.resolution_due_at = add_business_minutes(now, ticket.resolution_minutes_left, cal)
    ticket.paused_at = None
    ticket.response_minutes_left = ticket.resolution_minutes_left = None


async def comment(session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID, data: CommentIn) -> TicketComment:
    ticket = await get(session, ctx, ticket_id, lock=True)
    if ticket.status == "closed":
        raise Conflict("A closed ticket takes no replies; open a new ticket instead.")
    now = clock.now()
    note = TicketComment(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        ticket_id=ticket.id,
        public=data.public,
        body=data.body,
        author=ctx.actor,
        created_at=now,
    )
    session.add(note)
    if data.public and ticket.first_responded_at is None:
        ticket.first_responded_at = now
        ticket.response_minutes_left = None
    ticket.updated_at = now
    ticket.version += 1
    _record(session, ctx, ticket, "public_reply" if data.public else "internal_note", None, None)
    await session.flush()
    return note


async def escalate(session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID) -> Ticket:
    ticket = await get(session, ctx, ticket_id, lock=True)
    if ticket.status in ("resolved", "closed"):
        raise Conflict(f"A {ticket.status} ticket is not escalated.")
    order = ["low", "normal", "high", "urgent"]
    before = ticket.priority
    ticket.priority = order[min(order.index(before) + 1, len(order) - 1)]
    ticket.escalated = True
    ticket.version += 1
    ticket.updated_at = clock.now()
    _record(session, ctx, ticket, "escalated", before, ticket.priority)
    outbox.emit(session, ctx, "ticket.escalated", event_data(ticket))
    return ticket


async def comments(
    session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[TicketComment], str | None]:
    """Oldest first, public replies and internal notes alike: whoever sees the ticket sees both, as
    in its history."""
    await get(session, ctx, ticket_id)
    statement = scoped.in_workspace(TicketComment, ctx).where(TicketComment.ticket_id == ticket_id)
    keys = [SortKey(TicketComment.created_at), SortKey(TicketComment.id)]
    return await keyset_page(
        session, statement, keys, list_name=f"ticket-comments:{ticket_id}", limit=limit, cursor=cursor
    )


async def get_comment(session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID, comment_id: uuid.UUID) -> TicketComment:
    """A comment of a ticket the caller sees; 404 as for the ticket otherwise."""
    await get(session, ctx, ticket_id)
    statement = scoped.in_workspace(TicketComment, ctx).where(
        TicketComment.ticket_id == ticket_id, TicketComment.id == comment_id
    )
    return await scoped.one(session, statement, missing="No comment with that id on this ticket.")


def present_comment(note: TicketComment) -> dict[str, Any]:
    return {
        "id": note.id,
        "public": note.public,
        "body": note.body,
        "author": note.author,
        "created_at": note.created_at,
    }


async def history(
    session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID
) -> tuple[list[TicketEvent], list[TicketComment]]:
    await get(session, ctx, ticket_id)
    events = await session.scalars(
        select(TicketEvent)
        .where(TicketEvent.workspace_id == ctx.workspace_id, TicketEvent.ticket_id == ticket_id)
        .order_by(TicketEvent.at, TicketEvent.id)
    )
    comments = await session.scalars(
        select(TicketComment)
        .where(TicketComment.workspace_id == ctx.workspace_id, TicketComment.ticket_id == ticket_id)
        .order_by(TicketComment.created_at, TicketComment.id)
    )
    return list(events.all()), list(comments.all())


async def list_tickets(
    session: AsyncSession,
    ctx: Caller,
    *,
    filters: dict[str, Any],
    at_risk_minutes: int | None,
    limit: int,
    cursor: str | None,
    tags: list[str] | None = None,
) -> tuple[list[Ticket], str | None]:
    """Newest first; `at_risk_minutes` lists open tickets whose next deadline falls within that many minutes;
    `tags`, those that have every tag given."""
    stmt = through_customer(Ticket, ctx)
    for name, value in filters.items():
        if value is not None:
            stmt = stmt.where(getattr(Ticket, name) == value)
    if tags:
        stmt = stmt.where(Ticket.tags.contains(list(dict.fromkeys(tags))))
    if at_risk_minutes is not None:
        horizon = clock.now() + timedelta(minutes=at_risk_minutes)
        stmt = stmt.where(
            Ticket.status.in_(OPEN),
            ((Ticket.first_responded_at.is_(None)) & (Ticket.first_response_due_at <= horizon))
            | (Ticket.resolution_due_at <= horizon),
        )
    keys = [SortKey(Ticket.created_at, descending=True), SortKey(Ticket.id, descending=True)]
    return await keyset_page(session, stmt, keys, list_name="tickets", limit=limit, cursor=cursor)


# `ticket.sla_breached`, over a row of the breaches found.
SLA_BREACHED: Payload[Any] = Payload(
    (column("ticket_id"), column("number"), column("deadline")), model=data_model("ticket.sla_breached")
)
_BREACH_EVENTS = outbox.emit_rows_sql(
    f"(SELECT b.workspace_id, guanxi_uuid7() AS id, {SLA_BREACHED.sql('b')} AS data FROM breached b)",
    workspace_id="new_events.workspace_id",
    event_type="'ticket.sla_breached'",
    at="CAST(:now AS timestamptz)",
    actor=outbox.SYSTEM_ACTOR_SQL,
    returning="1",
)
BREACH_SQL = text(
    f"""
WITH candidates AS (
    SELECT workspace_id, id, number,
           NOT first_response_breached AND first_responded_at IS NULL
               AND first_response_due_at < CAST(:now AS timestamptz) AS response,
           NOT resolution_breached AND resolution_due_at < CAST(:now AS timestamptz) AS resolution
    FROM tickets
    WHERE status IN ('new', 'assigned', 'in_progress')
      AND ((NOT first_response_breached AND first_responded_at IS NULL
            AND first_response_due_at < CAST(:now AS timestamptz))
           OR (NOT resolution_breached AND resolution_due_at < CAST(:now AS timestamptz)))
    FOR UPDATE SKIP LOCKED
),
-- One UPDATE per ticket: a row can change only once in a statement.
flagged AS (
    UPDATE tickets t
    SET first_response_breached = t.first_response_breached OR c.response,
        resolution_breached = t.resolution_breached OR c.resolution
    FROM candidates c
    WHERE t.workspace_id = c.workspace_id AND t.id = c.id
    RETURNING c.workspace_id, c.id, c.number, c.response, c.resolution
),
breached AS (
    SELECT workspace_id, id AS ticket_id, number, 'first_response' AS deadline FROM flagged WHERE response
    UNION ALL
    SELECT workspace_id, id AS ticket_id, number, 'resolution' AS deadline FROM flagged WHERE resolution
),
history AS (
    INSERT INTO ticket_events (workspace_id, id, ticket_id, action, to_value, actor, at)
    SELECT workspace_id, guanxi_uuid7(), ticket_id, 'sla_breached', deadline, {outbox.SYSTEM_ACTOR_SQL},
           CAST(:now AS timestamptz)
    FROM breached
    RETURNING 1
),
events AS (
    {_BREACH_EVENTS}
)
SELECT (SELECT count(*) FROM breached), (SELECT count(*) FROM history), (SELECT count(*) FROM events)
"""
)


async def mark_breaches(session: AsyncSession) -> int:
    """Set-based over every open ticket: flag passed deadlines once, with history and events."""
    return int((await session.execute(BREACH_SQL, {"now": clock.now()})).one()[0])


def present(ticket: Ticket) -> dict[str, Any]:
    now = clock.now()

    def seconds_to(due: datetime | None) -> int | None:
        return int((due - now).total_seconds()) if due else None

    return {
        "id": ticket.id,
        "number": ticket.number,
        "customer_id": ticket.customer_id,
        "type": ticket.type,
        "channel": ticket.channel,
        "subject": ticket.subject,
        "description": ticket.description,
        "category_id": ticket.category_id,
        "priority": ticket.priority,
        "status": ticket.status,
        "assignee_id": ticket.assignee_id,
        "team_id": ticket.team_id,
        "escalated": ticket.escalated,
        "first_response_due_at": ticket.first_response_due_at,
        "resolution_due_at": ticket.resolution_due_at,
        "seconds_to_first_response_due": None
        if ticket.first_responded_at
        else seconds_to(ticket.first_response_due_at),
        "seconds_to_resolution_due": None if ticket.resolved_at else seconds_to(ticket.resolution_due_at),
        "first_response_breached": ticket.first_response_breached,
        "resolution_breached": ticket.resolution_breached,
        "sla_paused": ticket.paused_at is not None,
        "first_responded_at": ticket.first_responded_at,
        "resolved_at": ticket.resolved_at,
        "closed_at": ticket.closed_at,
        "csat_score": ticket.csat_score,
        "tags": list(ticket.tags),
        "attachments": ticket.attachments.get("items", []),
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "version": ticket.version,
    }


def event_data(ticket: Ticket) -> dict[str, Any]:
    return dict(to_jsonable(present(ticket)))
