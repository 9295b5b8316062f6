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
from app.core.jsonable import to_jsonable
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.core.wire import utc_text
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
from app.schemas.ticket import (
    CsatAnswer,
    IntakeFormIn,
    IntakeFormPatch,
    IntakeSubmission,
    SurveyAnswer,
    SurveyIn,
    SurveyPatch,
    TicketIn,
)
from app.services.customers import customers
from app.services.customers.visibility import require_visible, through_customer
from app.services.events import audit, outbox
from app.services.service_desk import tickets

CSAT_VALID_FOR = timedelta(days=7)


class Gone(DomainError):
    status, title, slug = 410, "Gone", "expired"


def _token() -> str:
    return "gxf_" + secrets.token_urlsafe(24)


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
        updated_at=clock.now(),
        version=1,
    )
    session.add(survey)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="survey",
        entity_id=survey.id,
        action="created",
        changes={"name": {"before": None, "after": data.name}},
    )
    return survey


def survey_status(survey: Survey) -> str:
    now = clock.now()
    if survey.closed_at is not None or (survey.closes_at is not None and survey.closes_at <= now):
        return "closed"
    return "scheduled" if now < survey.opens_at else "open"


def present_survey(survey: Survey) -> dict[str, Any]:
    return {
        "id": survey.id,
        "name": survey.name,
        "question": survey.question,
        "segment_id": survey.segment_id,
        "channel": survey.channel,
        "status": survey_status(survey),
        "opens_at": survey.opens_at,
        "closes_at": survey.closes_at,
        "closed_at": survey.closed_at,
        "created_at": survey.created_at,
        "updated_at": survey.updated_at,
        "version": survey.version,
    }


async def list_surveys(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None
) -> tuple[list[Survey], str | None]:
    """Newest first."""
    keys = [SortKey(Survey.created_at, descending=True), SortKey(Survey.id, descending=True)]
    statement = scoped.in_workspace(Survey, ctx)
    return await keyset_page(session, statement, keys, list_name="surveys", limit=limit, cursor=cursor)


async def update_survey(
    session: AsyncSession, ctx: Caller, survey_id: uuid.UUID, patch: SurveyPatch, *, expected_version: int
) -> Survey:
    """A closed survey stays closed: its answers are final. `opens_at` moves only before the first answer."""
    survey = await get_survey(session, ctx, survey_id, lock=True)
    check_version(survey.version, expected_version, what="survey")
    if survey.closed_at is not None:
        raise Conflict("A survey closed by hand does not change.")
    for name in ("name", "question", "channel", "opens_at"):
        if name in patch.model_fields_set and getattr(patch, name) is None:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
    opens_at = patch.opens_at or survey.opens_at
    closes_at = patch.closes_at if "closes_at" in patch.model_fields_set else survey.closes_at
    if closes_at is not None and closes_at <= opens_at:
        raise ValidationFailed("closes_at must be after opens_at.", loc=["body", "closes_at"])
    if patch.opens_at is not None and patch.opens_at != survey.opens_at:
        answered = await session.scalar(
            select(func.count()).where(
                SurveyResponse.workspace_id == ctx.workspace_id, SurveyResponse.survey_id == survey.id
            )
        )
        if answered:
            raise Conflict("The survey has answers: opens_at no longer moves.")
    changes: dict[str, dict[str, Any]] = {}
    for name in ("name", "question", "channel", "opens_at", "closes_at"):
        if name not in patch.model_fields_set:
            continue
        value, before = getattr(patch, name), getattr(survey, name)
        if value != before:
            changes[name] = {"before": to_jsonable(before), "after": to_jsonable(value)}
            setattr(survey, name, value)
    audit.record_update(session, ctx, survey, entity_type="survey", changes=changes)
    return survey


async def close_survey(session: AsyncSession, ctx: Caller, survey_id: uuid.UUID) -> Survey:
    """Closes now: later answers are 410. Closing a closed survey is a 409."""
    survey = await get_survey(session, ctx, survey_id, lock=True)
    if survey_status(survey) == "closed":
        raise Conflict("The survey is already closed.")
    now = clock.now()
    survey.closed_at = now
    audit.record_update(
        session, ctx, survey, entity_type="survey", changes={"closed_at": {"before": None, "after": to_jsonable(now)}}
    )
    return survey


async def get_survey(session: AsyncSession, ctx: Caller, survey_id: uuid.UUID, *, lock: bool = False) -> Survey:
    return await scoped.get(session, ctx, Survey, survey_id, missing="No survey with that id.", lock=lock)


async def answer_survey(
    session: AsyncSession, ctx: Caller, survey_id: uuid.UUID, answer: SurveyAnswer
) -> SurveyResponse:
    """One answer per customer; outside the survey's window or audience it is refused."""
    survey = await get_survey(session, ctx, survey_id)
    now = clock.now()
    if survey.closed_at is not None:
        raise Gone(f"The survey was closed at {utc_text(survey.closed_at)}.", closed_at=utc_text(survey.closed_at))
    if survey.closes_at and now >= survey.closes_at:
        raise Gone(f"The survey closed at {utc_text(survey.closes_at)}.", closed_at=utc_text(survey.closes_at))
    if now < survey.opens_at:
        raise Conflict(f"The survey opens at {utc_text(survey.opens_at)}.", opens_at=utc_text(survey.opens_at))
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


def present_response(response: SurveyResponse) -> dict[str, Any]:
    return {
        "survey_id": response.survey_id,
        "customer_id": response.customer_id,
        "score": response.score,
        "comment": response.comment,
        "answered_at": response.answered_at,
    }


async def list_responses(
    session: AsyncSession, ctx: Caller, survey_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[SurveyResponse], str | None]:
    """Newest first; the answers of the customers the caller may see."""
    await get_survey(session, ctx, survey_id)
    statement = through_customer(SurveyResponse, ctx).where(SurveyResponse.survey_id == survey_id)
    keys = [SortKey(SurveyResponse.answered_at, descending=True), SortKey(SurveyResponse.customer_id, descending=True)]
    return await keyset_page(
        session, statement, keys, list_name=f"survey-responses:{survey_id}", limit=limit, cursor=cursor
    )


async def get_response(
    session: AsyncSession, ctx: Caller, survey_id: uuid.UUID, customer_id: uuid.UUID
) -> SurveyResponse:
    """A customer's answer (one per customer, so the customer's id names it); 404 for a customer the
    caller may not see, as for one that did not answer."""
    await get_survey(session, ctx, survey_id)
    statement = through_customer(SurveyResponse, ctx).where(
        SurveyResponse.survey_id == survey_id, SurveyResponse.customer_id == customer_id
    )
    response = await session.scalar(statement)
    if response is None:
        raise NotFound("That customer has not answered this survey.")
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
    token = _token()
    now = clock.now()
    form = IntakeForm(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=data.name,
        token_hash=_hash(token),
        channel=data.channel,
        active=True,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(form)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="intake_form",
        entity_id=form.id,
        action="created",
        changes={"name": {"before": None, "after": data.name}},
    )
    return form, token


def present_form(form: IntakeForm) -> dict[str, Any]:
    return {
        "id": form.id,
        "name": form.name,
        "channel": form.channel,
        "status": "active" if form.active else "revoked",
        "token_rotated_at": form.token_rotated_at,
        "revoked_at": form.revoked_at,
        "created_at": form.created_at,
        "updated_at": form.updated_at,
        "version": form.version,
    }


async def get_form(session: AsyncSession, ctx: Caller, form_id: uuid.UUID, *, lock: bool = False) -> IntakeForm:
    return await scoped.get(session, ctx, IntakeForm, form_id, missing="No intake form with that id.", lock=lock)


async def list_forms(
    session: AsyncSession, ctx: Caller, *, limit: int, cursor: str | None
) -> tuple[list[IntakeForm], str | None]:
    """Newest first."""
    keys = [SortKey(IntakeForm.created_at, descending=True), SortKey(IntakeForm.id, descending=True)]
    statement = scoped.in_workspace(IntakeForm, ctx)
    return await keyset_page(session, statement, keys, list_name="intake_forms", limit=limit, cursor=cursor)


async def update_form(
    session: AsyncSession, ctx: Caller, form_id: uuid.UUID, patch: IntakeFormPatch, *, expected_version: int
) -> IntakeForm:
    form = await get_form(session, ctx, form_id, lock=True)
    check_version(form.version, expected_version, what="intake form")
    changes: dict[str, dict[str, Any]] = {}
    for name in ("name", "channel"):
        if name not in patch.model_fields_set:
            continue
        value = getattr(patch, name)
        if value is None:
            raise ValidationFailed(f"{name} cannot be null.", loc=["body", name])
        if value != getattr(form, name):
            changes[name] = {"before": getattr(form, name), "after": value}
            setattr(form, name, value)
    audit.record_update(session, ctx, form, entity_type="intake_form", changes=changes)
    return form


async def rotate_token(session: AsyncSession, ctx: Caller, form_id: uuid.UUID) -> tuple[IntakeForm, str]:
    """A new token; the old one stops working when this commits (no overlap: a leaked token is why
    one rotates). A revoked form has no token to rotate: 409."""
    form = await get_form(session, ctx, form_id, lock=True)
    if not form.active:
        raise Conflict("The intake form is revoked; create a new one.")
    token = _token()
    now = clock.now()
    changes = {"token_rotated_at": {"before": to_jsonable(form.token_rotated_at), "after": to_jsonable(now)}}
    form.token_hash = _hash(token)
    form.token_rotated_at = now
    audit.record_update(session, ctx, form, entity_type="intake_form", changes=changes)
    return form, token


async def revoke_form(session: AsyncSession, ctx: Caller, form_id: uuid.UUID) -> IntakeForm:
    """Submissions with its token are 404 from now on, as an unknown token's; for good (a 409 the
    second time): the form's tickets stay."""
    form = await get_form(session, ctx, form_id, lock=True)
    if not form.active:
        raise Conflict("The intake form is already revoked.")
    now = clock.now()
    form.active = False
    form.revoked_at = now
    audit.record_update(
        session, ctx, form, entity_type="intake_form", changes={"status": {"before": "active", "after": "revoked"}}
    )
    return form


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
