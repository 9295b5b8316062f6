"""Satisfaction: CSAT requests on resolved tickets, NPS surveys, and public intake forms."""

import hashlib
import secrets
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller, system_caller
from app.core.errors import Conflict, DomainError, NotFound, ValidationFailed
from app.core.ids import new_id
from app.models import (
    CsatRequest,
    CustomerIdentity,
    IntakeForm,
    Segment,
    SegmentMember,
    Survey,
    SurveyResponse,
    Ticket,
)
from app.schemas.customer import CustomerCreate, normalise_email, normalise_phone
from app.schemas.ticket import CsatAnswer, IntakeFormIn, IntakeSubmission, SurveyAnswer, SurveyIn, TicketIn
from app.services.customers import customers
from app.services.customers.visibility import require_visible
from app.services.events import outbox
from app.services.service_desk import tickets

CSAT_VALID_FOR = timedelta(days=7)


class Gone(DomainError):
    status, title, slug = 410, "Gone", "expired"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def request_csat(session: AsyncSession, ctx: Caller, ticket_id: uuid.UUID) -> dict[str, Any]:
    """A single-use token for the front-end to render a 1-5 survey on; valid 7 days."""
    ticket = await tickets.get(session, ctx, ticket_id)
    if ticket.status not in ("resolved", "closed"):
        raise Conflict("Satisfaction is asked once the ticket is resolved.")
    token = secrets.token_urlsafe(32)
    expires_at = clock.now() + CSAT_VALID_FOR
    session.add(
        CsatRequest(token_hash=_hash(token), workspace_id=ctx.workspace_id, ticket_id=ticket.id, expires_at=expires_at)
    )
    return {
        "token": token,
        "expires_at": expires_at,
        "ticket_number": ticket.number,
        "subject": ticket.subject,
        "scale": [1, 2, 3, 4, 5],
    }


async def answer_csat(session: AsyncSession, token: str, answer: CsatAnswer) -> Ticket:
    request = await session.scalar(select(CsatRequest).where(CsatRequest.token_hash == _hash(token)).with_for_update())
    if request is None:
        raise NotFound("Unknown survey link.")
    if request.answered_at is not None:
        raise Conflict("This survey was already answered.")
    now = clock.now()
    if request.expires_at < now:
        raise Gone("This survey link has expired.")
    request.answered_at = now
    ticket = await tickets.get(session, system_caller(request.workspace_id), request.ticket_id, lock=True)
    ticket.csat_score, ticket.csat_comment = answer.score, answer.comment
    ticket.version += 1
    outbox.emit(
        session,
        system_caller(request.workspace_id),
        "ticket.csat_received",
        {"ticket_id": str(ticket.id), "score": answer.score},
    )
    return ticket


async def create_survey(session: AsyncSession, ctx: Caller, data: SurveyIn) -> Survey:
    if data.closes_at is not None and data.closes_at <= data.opens_at:
        raise ValidationFailed("closes_at must be after opens_at.", loc=["body", "closes_at"])
    if data.segment_id is not None:
        found = await session.scalar(
            select(Segment.id).where(Segment.workspace_id == ctx.workspace_id, Segment.id == data.segment_id)
        )
        if found is None:
            raise ValidationFailed("Unknown segment.", loc=["body", "segment_id"])
    survey = Survey(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        question=data.question,
        segment_id=data.segment_id,
        channel=data.channel,
        opens_at=data.opens_at,
        closes_at=data.closes_at,
        created_at=clock.now(),
    )
    session.add(survey)
    await session.flush()
    return survey


async def get_survey(session: AsyncSession, ctx: Caller, survey_id: uuid.UUID) -> Survey:
    return await scoped.get(session, ctx, Survey, survey_id, missing="No survey with that id.")


async def answer_survey(
    session: AsyncSession, ctx: Caller, survey_id: uuid.UUID, answer: SurveyAnswer
) -> SurveyResponse:
    """One answer per customer; outside the survey's window or audience it is refused."""
    survey = await get_survey(session, ctx, survey_id)
    now = clock.now()
    if now < survey.opens_at or (survey.closes_at and now >= survey.closes_at):
        raise Conflict("The survey is not open.")
    await require_visible(session, ctx, answer.customer_id)
    if survey.segment_id is not None:
        member = await session.scalar(
            select(SegmentMember.customer_id).where(
                SegmentMember.workspace_id == ctx.workspace_id,
                SegmentMember.segment_id == survey.segment_id,
                SegmentMember.customer_id == answer.customer_id,
            )
        )
        if member is None:
            raise ValidationFailed("The customer is not in the survey's audience.", loc=["body", "customer_id"])
    response = SurveyResponse(
        workspace_id=ctx.workspace_id,
        survey_id=survey.id,
        customer_id=answer.customer_id,
        score=answer.score,
        comment=answer.comment,
        answered_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(response)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("This customer already answered the survey.") from exc
    return response


async def survey_results(session: AsyncSession, ctx: Caller, survey_id: uuid.UUID) -> dict[str, Any]:
    await get_survey(session, ctx, survey_id)
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(SurveyResponse.score >= 9),
                func.count().filter(SurveyResponse.score <= 6),
            ).where(SurveyResponse.workspace_id == ctx.workspace_id, SurveyResponse.survey_id == survey_id)
        )
    ).one()
    total, promoters, detractors = int(row[0]), int(row[1]), int(row[2])
    nps = round(100 * (promoters - detractors) / total, 1) if total else None
    return {
        "responses": total,
        "promoters": promoters,
        "passives": total - promoters - detractors,
        "detractors": detractors,
        "nps": nps,
    }


async def create_intake_form(session: AsyncSession, ctx: Caller, data: IntakeFormIn) -> tuple[IntakeForm, str]:
    token = "gxf_" + secrets.token_urlsafe(24)
    form = IntakeForm(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        token_hash=_hash(token),
        channel=data.channel,
        active=True,
        created_at=clock.now(),
    )
    session.add(form)
    await session.flush()
    return form, token


async def intake_form(session: AsyncSession, token: str) -> IntakeForm:
    form = await session.scalar(select(IntakeForm).where(IntakeForm.token_hash == _hash(token)))
    if form is None or not form.active:
        raise NotFound("Unknown form.")
    return form


async def submit(session: AsyncSession, form: IntakeForm, data: IntakeSubmission) -> Ticket:
    """Opens the ticket for a new lead, never for the customer who holds the email or phone typed:
    nothing in a public form proves the submitter is that customer, so the submission neither writes
    to nor reveals an existing record. The lead (tagged `unverified`) claims the contact points no one
    holds; for a taken one its notes name the holder's id, a match for the staff to confirm (and
    merge). The taken value itself is copied nowhere, so masking keeps covering it."""
    if data.email is None and data.phone is None:
        raise ValidationFailed("Give an email or a phone to be answered on.", loc=["body", "email"])
    ctx = system_caller(form.workspace_id)
    free: dict[str, str] = {}
    matches: list[str] = []
    for kind, value, normalise in (("email", data.email, normalise_email), ("phone", data.phone, normalise_phone)):
        if value:
            try:
                key = normalise(value)
            except ValueError as exc:
                raise ValidationFailed(str(exc), loc=["body", kind]) from exc
            held = await session.scalar(
                select(CustomerIdentity.customer_id).where(
                    CustomerIdentity.workspace_id == form.workspace_id,
                    CustomerIdentity.kind == kind,
                    CustomerIdentity.value == key,
                )
            )
            if held is None:
                free[kind] = value
            else:
                matches.append(f"The {kind} given is held by customer {held}.")
    notes = " ".join([*matches, "Confirm with that customer before merging."]) if matches else None
    lead = CustomerCreate(
        name=data.name,
        emails=[free["email"]] if "email" in free else None,
        phones=[free["phone"]] if "phone" in free else None,
        source=f"form:{form.name}"[:64],
        tags=["lead", "unverified"],
        notes=notes,
    )
    try:
        async with session.begin_nested():
            customer = await customers.create(session, ctx, lead)
    except Conflict:
        # A customer took a free contact point meanwhile: the lead is made without contact points
        # rather than answer a 409 that would tell the submitter someone holds it.
        customer = await customers.create(session, ctx, lead.model_copy(update={"emails": None, "phones": None}))
    ticket_in = TicketIn(
        customer_id=customer.id,
        type=data.type,
        channel=form.channel,
        subject=data.subject,
        description=data.description,
    )
    return await tickets.open_ticket(session, ctx, ticket_in)
