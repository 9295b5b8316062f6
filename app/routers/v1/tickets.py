"""Tickets and satisfaction: /api/v1/tickets, /api/v1/sla, /api/v1/surveys, /api/v1/intake-forms,
the public /api/v1/csat/{token} and /api/v1/intake/{token}, and /api/v1/reports/service."""

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.responses import Response

from app.core import clock
from app.core.errors import ValidationFailed
from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.http.rate_limits import TooManyRequests
from app.routers.deps import (
    DEFAULT_LIMIT,
    Cursor,
    CustomersRead,
    CustomersWrite,
    IdempotencyKey,
    IfMatch,
    Limit,
    Reader,
    ReportsRead,
    ServiceAdmin,
    Session,
)
from app.routers.responses import errors, idempotent, public_errors, resource_response, stored, stored_resource
from app.schemas.common import Tag, Timestamp
from app.schemas.ticket import (
    CalendarLoad,
    CategoryIn,
    CategoryList,
    CategoryOut,
    CategoryPatch,
    CommentIn,
    CommentOut,
    CommentPage,
    CsatAnswer,
    CsatAnswered,
    CsatRequestOut,
    IntakeFormCreated,
    IntakeFormIn,
    IntakeFormOut,
    IntakeFormPage,
    IntakeFormPatch,
    IntakeSubmission,
    IntakeSubmitted,
    ServiceReportOut,
    SlaSettings,
    SlaSettingsOut,
    SurveyAnswer,
    SurveyAnswerOut,
    SurveyAnswerPage,
    SurveyIn,
    SurveyOut,
    SurveyPage,
    SurveyPatch,
    SurveyResults,
    TicketHistoryOut,
    TicketIn,
    TicketOut,
    TicketPage,
    TicketPatch,
    TicketPriority,
    TicketStatus,
    Transition,
)
from app.services.service_desk import categories, feedback, service_reports, sla_settings, tickets

router = APIRouter(tags=["tickets and satisfaction"])
public = APIRouter(tags=["public"])
_intake_limits = FixedWindowRateLimiter(MemoryStorage())
INTAKE_PER_MINUTE = RateLimitItemPerMinute(30)


@router.post("/tickets", status_code=201, response_model=TicketOut, responses=errors(404), summary="Open a ticket")
async def create_ticket(
    request: Request, data: TicketIn, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Due times come from the SLA policy for the priority and the customer's tier, in business time."""

    async def create() -> StoredResponse:
        ticket = await tickets.open_ticket(session, ctx, data)
        return stored(
            201, tickets.present(ticket), {"ETag": f'"{ticket.version}"', "Location": f"/api/v1/tickets/{ticket.id}"}
        )

    return await idempotent(request, session, ctx, key, create)


@router.get("/tickets", response_model=TicketPage, responses=errors(), summary="List tickets")
async def list_tickets(
    ctx: CustomersRead,
    session: Reader,
    status: TicketStatus | None = None,
    priority: TicketPriority | None = None,
    assignee_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    customer_id: uuid.UUID | None = None,
    at_risk_within_minutes: Annotated[
        int | None, Query(ge=1, le=10_080, description="Open, due within N minutes")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    tag: Annotated[list[Tag] | None, Query(max_length=20, description="Has every tag given.")] = None,
) -> Response:
    """Newest first; tickets of the customers the caller may see."""
    filters = {
        "status": status,
        "priority": priority,
        "assignee_id": assignee_id,
        "team_id": team_id,
        "customer_id": customer_id,
    }
    rows, next_cursor = await tickets.list_tickets(
        session, ctx, filters=filters, at_risk_minutes=at_risk_within_minutes, limit=limit, cursor=cursor, tags=tag
    )
    return json_response({"items": [tickets.present(t) for t in rows], "next_cursor": next_cursor})


@router.get("/tickets/{ticket_id}", response_model=TicketOut, responses=errors(404), summary="Get a ticket")
async def get_ticket(ticket_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(tickets.present(await tickets.get(session, ctx, ticket_id)))


@router.patch("/tickets/{ticket_id}", response_model=TicketOut, responses=errors(404, 409, 412, 428), summary="Change")
async def update_ticket(
    ticket_id: uuid.UUID, patch: TicketPatch, ctx: CustomersWrite, session: Session, version: IfMatch
) -> Response:
    """Reassigning (assignee or team queue) is recorded in the history."""
    return resource_response(
        tickets.present(await tickets.update(session, ctx, ticket_id, patch, expected_version=version))
    )


@router.post("/tickets/{ticket_id}/transition", response_model=TicketOut, responses=errors(404, 409), summary="Move")
async def transition_ticket(ticket_id: uuid.UUID, body: Transition, ctx: CustomersWrite, session: Session) -> Response:
    """new → assigned → in_progress → waiting_on_customer → resolved → closed; a resolved ticket
    reopens (in_progress) within 7 days. 409 lists the allowed moves."""
    return resource_response(tickets.present(await tickets.transition(session, ctx, ticket_id, body.status)))


@router.post("/tickets/{ticket_id}/escalate", response_model=TicketOut, responses=errors(404, 409), summary="Escalate")
async def escalate_ticket(ticket_id: uuid.UUID, ctx: CustomersWrite, session: Session) -> Response:
    """Raises the priority one step and marks the ticket escalated."""
    return resource_response(tickets.present(await tickets.escalate(session, ctx, ticket_id)))


@router.post(
    "/tickets/{ticket_id}/comments",
    status_code=201,
    response_model=CommentOut,
    responses=errors(404, 409),
    summary="Comment",
)
async def add_comment(
    request: Request, ticket_id: uuid.UUID, body: CommentIn, ctx: CustomersWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Public replies reach the customer (the first one is the first response); internal notes do not.
    Idempotency-Key makes a retry safe: a reply resent after a lost answer is not posted twice."""

    async def create() -> StoredResponse:
        note = await tickets.comment(session, ctx, ticket_id, body)
        location = f"/api/v1/tickets/{ticket_id}/comments/{note.id}"
        return stored(201, tickets.present_comment(note), {"Location": location})

    return await idempotent(request, session, ctx, key, create)


@router.get(
    "/tickets/{ticket_id}/comments", response_model=CommentPage, responses=errors(404), summary="A ticket's comments"
)
async def list_comments(
    ticket_id: uuid.UUID, ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Oldest first, public replies and internal notes, to whoever sees the ticket (as its history)."""
    rows, next_cursor = await tickets.comments(session, ctx, ticket_id, limit=limit, cursor=cursor)
    return json_response({"items": [tickets.present_comment(c) for c in rows], "next_cursor": next_cursor})


@router.get(
    "/tickets/{ticket_id}/comments/{comment_id}",
    response_model=CommentOut,
    responses=errors(404),
    summary="Get a comment",
)
async def get_comment(ticket_id: uuid.UUID, comment_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return json_response(tickets.present_comment(await tickets.get_comment(session, ctx, ticket_id, comment_id)))


@router.get(
    "/tickets/{ticket_id}/history",
    response_model=TicketHistoryOut,
    responses=errors(404),
    summary="History and comments",
)
async def ticket_history(ticket_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    events, comments = await tickets.history(session, ctx, ticket_id)
    return json_response(
        {
            "events": [
                {"action": e.action, "from": e.from_value, "to": e.to_value, "actor": e.actor, "at": e.at}
                for e in events
            ],
            "comments": [tickets.present_comment(c) for c in comments],
        }
    )


@router.post(
    "/tickets/{ticket_id}/csat-request",
    response_model=CsatRequestOut,
    responses=errors(404, 409),
    summary="Ask for CSAT",
)
async def csat_request(ticket_id: uuid.UUID, ctx: CustomersWrite, session: Session) -> Response:
    """A single-use token (7 days) for the front-end to render a 1-5 survey; answered at
    POST /api/v1/csat/{token} without credentials. A 200 without Location: the token is a credential,
    not a record to read; the answer is the ticket's `csat_score` (docs/decisions.md)."""
    return json_response(await feedback.request_csat(session, ctx, ticket_id))


@router.get("/ticket-categories", response_model=CategoryList, responses=errors(), summary="Ticket categories")
async def list_categories(ctx: CustomersRead, session: Reader) -> Response:
    rows = await categories.categories(session, ctx)
    return json_response({"items": [categories.present(c) for c in rows], "next_cursor": None})


@router.post(
    "/ticket-categories", status_code=201, response_model=CategoryOut, responses=errors(), summary="Add a category"
)
async def add_category(
    request: Request, body: CategoryIn, ctx: ServiceAdmin, session: Session, key: IdempotencyKey
) -> Response:
    async def create() -> StoredResponse:
        category = await categories.add_category(session, ctx, body)
        return stored_resource(categories.present(category), location=f"/api/v1/ticket-categories/{category.id}")

    return await idempotent(request, session, ctx, key, create)


@router.put("/sla", response_model=SlaSettingsOut, responses=errors(), summary="Set SLA policies and business hours")
async def set_sla(body: SlaSettings, ctx: ServiceAdmin, session: Session) -> Response:
    """Policies by priority and tier (null tier: any), with business hours, holidays and make-up
    working days; answers what it stored, its version as the ETag. New tickets use them; open
    tickets keep their deadlines. A settings document: the last PUT wins, as for the other settings."""
    return resource_response(await sla_settings.set_sla(session, ctx, body))


@router.post("/surveys", status_code=201, response_model=SurveyOut, responses=errors(), summary="Create an NPS survey")
async def create_survey(
    request: Request, body: SurveyIn, ctx: ServiceAdmin, session: Session, key: IdempotencyKey
) -> Response:
    async def create() -> StoredResponse:
        survey = await feedback.create_survey(session, ctx, body)
        return stored_resource(feedback.present_survey(survey), location=f"/api/v1/surveys/{survey.id}")

    return await idempotent(request, session, ctx, key, create)


@router.post(
    "/surveys/{survey_id}/responses",
    status_code=201,
    response_model=SurveyAnswerOut,
    responses=errors(404, 409, 410),
    summary="Record an answer",
)
async def answer_survey(
    request: Request,
    survey_id: uuid.UUID,
    body: SurveyAnswer,
    ctx: CustomersWrite,
    session: Session,
    key: IdempotencyKey,
) -> Response:
    """One 0-10 answer per customer; 409 for a second one or before the survey opens, 410 once it
    closed (by hand or at `closes_at`). With Idempotency-Key a retry replays the first answer's 201
    instead of a 409."""

    async def create() -> StoredResponse:
        response = await feedback.answer_survey(session, ctx, survey_id, body)
        location = f"/api/v1/surveys/{survey_id}/responses/{response.customer_id}"
        return stored(201, feedback.present_response(response), {"Location": location})

    return await idempotent(request, session, ctx, key, create)


@router.get(
    "/surveys/{survey_id}/responses",
    response_model=SurveyAnswerPage,
    responses=errors(404),
    summary="A survey's answers",
)
async def list_survey_responses(
    survey_id: uuid.UUID, ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first; the answers of the customers the caller may see (the NPS at /results counts all)."""
    rows, next_cursor = await feedback.list_responses(session, ctx, survey_id, limit=limit, cursor=cursor)
    return json_response({"items": [feedback.present_response(r) for r in rows], "next_cursor": next_cursor})


@router.get(
    "/surveys/{survey_id}/responses/{customer_id}",
    response_model=SurveyAnswerOut,
    responses=errors(404),
    summary="A customer's answer",
)
async def get_survey_response(
    survey_id: uuid.UUID, customer_id: uuid.UUID, ctx: CustomersRead, session: Reader
) -> Response:
    """One answer per customer, so the customer's id names it; 404 for a customer the caller may not see."""
    return json_response(feedback.present_response(await feedback.get_response(session, ctx, survey_id, customer_id)))


@router.get("/surveys/{survey_id}/results", response_model=SurveyResults, responses=errors(404), summary="NPS")
async def survey_results(survey_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    """NPS = % promoters (9-10) − % detractors (0-6)."""
    return json_response(await feedback.survey_results(session, ctx, survey_id))


@router.post(
    "/intake-forms",
    status_code=201,
    response_model=IntakeFormCreated,
    responses=errors(),
    summary="Create a public intake form",
)
async def create_intake_form(body: IntakeFormIn, ctx: ServiceAdmin, session: Session) -> Response:
    """The token (shown once) authenticates submissions to POST /api/v1/intake/{token}."""
    form, token = await feedback.create_intake_form(session, ctx, body)
    return resource_response(
        {**feedback.present_form(form), "token": token}, status_code=201, location=f"/api/v1/intake-forms/{form.id}"
    )


@router.get("/reports/service", response_model=ServiceReportOut, responses=errors(), summary="Service report")
async def service_report(
    ctx: ReportsRead,
    # A transaction, for the statement's planner setting (service_reports.service_report).
    session: Session,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
) -> Response:
    """Ticket volume per day by type, channel and category; median first-response and resolution
    minutes (within 1 % of the exact median); SLA attainment; backlog by age; CSAT average; NPS by
    month; CSAT by month; CSAT and NPS by value tier (CSAT by the tier the ticket was opened under)
    and by segment. Days and months are the workspace's. Default: the 30 days before `until` (now)."""
    now = clock.now()
    since, until = since or (until or now) - timedelta(days=30), until or now
    if until <= since:
        raise ValidationFailed("until must be after since.", loc=["query", "until"])
    return json_response(await service_reports.workspace_report(session, ctx, since=since, until=until))


@public.post(
    "/csat/{token}",
    response_model=CsatAnswered,
    responses=public_errors(404, 409, 410),
    summary="Answer a CSAT survey (no account)",
)
async def answer_csat(token: Annotated[str, "path"], body: CsatAnswer, session: Session) -> Response:
    """The token is the credential; answering twice is 409, an expired link 410."""
    ticket = await feedback.answer_csat(session, token[:100], body)
    return json_response({"ticket_number": ticket.number, "score": ticket.csat_score})


@public.post(
    "/intake/{token}",
    response_model=IntakeSubmitted,
    responses=public_errors(404),
    summary="Submit a form (no account)",
)
async def submit_intake(token: Annotated[str, "path"], body: IntakeSubmission, session: Session) -> Response:
    """Opens a ticket for a new lead tagged `unverified`, never for the customer who holds the email or
    phone typed (nothing proves the submitter is that customer). Rate-limited per form. A 200 without
    Location: the ticket is the workspace's, and the submitter holds nothing to read it with; the
    ticket number is its receipt (docs/decisions.md)."""
    form = await feedback.intake_form(session, token[:100])
    if not await _intake_limits.hit(INTAKE_PER_MINUTE, str(form.id)):
        raise TooManyRequests("Too many submissions to this form; retry later.", retry_after=60)
    ticket = await feedback.submit(session, form, body)
    return json_response({"ticket_number": ticket.number, "status": ticket.status})


@router.get("/sla", response_model=SlaSettingsOut, responses=errors(), summary="SLA policies and business hours")
async def get_sla(ctx: CustomersRead, session: Reader) -> Response:
    """What new tickets are timed by; the defaults (version 1) until the workspace sets its own."""
    return resource_response(await sla_settings.get_sla(session, ctx))


@router.post(
    "/sla/calendar/load", response_model=SlaSettingsOut, responses=errors(), summary="Load an official calendar"
)
async def load_sla_calendar(body: CalendarLoad, ctx: ServiceAdmin, session: Session) -> Response:
    """Adds the mainland China holidays and make-up working days (调休) of the years asked for to the
    workspace's own (the official calendar wins on a date both name). The days are then the
    workspace's: edit them with PUT /sla. A year the installed calendar does not know is a 422."""
    return resource_response(await sla_settings.load_calendar(session, ctx, body))


@router.get("/surveys", response_model=SurveyPage, responses=errors(), summary="List surveys")
async def list_surveys(
    ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first."""
    rows, next_cursor = await feedback.list_surveys(session, ctx, limit=limit, cursor=cursor)
    return json_response({"items": [feedback.present_survey(s) for s in rows], "next_cursor": next_cursor})


@router.get("/surveys/{survey_id}", response_model=SurveyOut, responses=errors(404), summary="Get a survey")
async def get_survey(survey_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(feedback.present_survey(await feedback.get_survey(session, ctx, survey_id)))


@router.patch(
    "/surveys/{survey_id}", response_model=SurveyOut, responses=errors(404, 409, 412, 428), summary="Change a survey"
)
async def update_survey(
    survey_id: uuid.UUID, patch: SurveyPatch, ctx: ServiceAdmin, session: Session, version: IfMatch
) -> Response:
    """Name, question, channel, the window (`opens_at` only before the first answer). A survey
    closed by hand is a 409."""
    survey = await feedback.update_survey(session, ctx, survey_id, patch, expected_version=version)
    return resource_response(feedback.present_survey(survey))


@router.post(
    "/surveys/{survey_id}/close", response_model=SurveyOut, responses=errors(404, 409), summary="Close a survey"
)
async def close_survey(survey_id: uuid.UUID, ctx: ServiceAdmin, session: Session) -> Response:
    """Now, for good: later answers are 410. A closed survey is a 409."""
    return resource_response(feedback.present_survey(await feedback.close_survey(session, ctx, survey_id)))


@router.get("/intake-forms", response_model=IntakeFormPage, responses=errors(), summary="List intake forms")
async def list_intake_forms(
    ctx: ServiceAdmin, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Newest first, revoked ones included; tokens are never shown again."""
    rows, next_cursor = await feedback.list_forms(session, ctx, limit=limit, cursor=cursor)
    return json_response({"items": [feedback.present_form(f) for f in rows], "next_cursor": next_cursor})


@router.get(
    "/intake-forms/{form_id}", response_model=IntakeFormOut, responses=errors(404), summary="Get an intake form"
)
async def get_intake_form(form_id: uuid.UUID, ctx: ServiceAdmin, session: Reader) -> Response:
    return resource_response(feedback.present_form(await feedback.get_form(session, ctx, form_id)))


@router.patch(
    "/intake-forms/{form_id}",
    response_model=IntakeFormOut,
    responses=errors(404, 412, 428),
    summary="Change an intake form",
)
async def update_intake_form(
    form_id: uuid.UUID, patch: IntakeFormPatch, ctx: ServiceAdmin, session: Session, version: IfMatch
) -> Response:
    """Name and the channel its tickets are opened on."""
    form = await feedback.update_form(session, ctx, form_id, patch, expected_version=version)
    return resource_response(feedback.present_form(form))


@router.post(
    "/intake-forms/{form_id}/rotate-token",
    response_model=IntakeFormCreated,
    responses=errors(404, 409),
    summary="Rotate an intake form's token",
)
async def rotate_intake_form_token(form_id: uuid.UUID, ctx: ServiceAdmin, session: Session) -> Response:
    """A new token, shown once; the old one stops working at once (no overlap). A revoked form is a 409."""
    form, token = await feedback.rotate_token(session, ctx, form_id)
    return resource_response({**feedback.present_form(form), "token": token})


@router.post(
    "/intake-forms/{form_id}/revoke",
    response_model=IntakeFormOut,
    responses=errors(404, 409),
    summary="Revoke an intake form",
)
async def revoke_intake_form(form_id: uuid.UUID, ctx: ServiceAdmin, session: Session) -> Response:
    """Its token stops working at once, for good (submissions get 404); the tickets it opened stay."""
    return resource_response(feedback.present_form(await feedback.revoke_form(session, ctx, form_id)))


@router.get(
    "/ticket-categories/{category_id}", response_model=CategoryOut, responses=errors(404), summary="Get a category"
)
async def get_ticket_category(category_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(categories.present(await categories.get(session, ctx, category_id)))


@router.patch(
    "/ticket-categories/{category_id}",
    response_model=CategoryOut,
    responses=errors(404, 412, 428),
    summary="Rename or move a category",
)
async def update_ticket_category(
    category_id: uuid.UUID, patch: CategoryPatch, ctx: ServiceAdmin, session: Session, version: IfMatch
) -> Response:
    """A move under itself or one of its subcategories is a 422."""
    category = await categories.update(session, ctx, category_id, patch, expected_version=version)
    return resource_response(categories.present(category))


@router.delete(
    "/ticket-categories/{category_id}",
    status_code=204,
    responses=errors(404, 409, 412, 428),
    summary="Delete an unused category",
)
async def delete_ticket_category(
    category_id: uuid.UUID, ctx: ServiceAdmin, session: Session, version: IfMatch
) -> Response:
    """Only a category no ticket is filed under and with no subcategories: otherwise a 409 that says
    how many (tickets keep their category; move them with PATCH /tickets/{id} first)."""
    await categories.delete(session, ctx, category_id, expected_version=version)
    return Response(status_code=204)
