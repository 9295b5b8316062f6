"""Ticket, SLA, CSAT, NPS and intake models."""

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from app.schemas.common import (
    Actor,
    EmailText,
    InputModel,
    Label,
    LongText,
    MediumText,
    Name,
    Page,
    PhoneText,
    ShortText,
    Tag,
    Timestamp,
)

TicketType = Literal["complaint", "inquiry", "suggestion", "praise", "fault_report"]
TicketChannel = Literal["phone", "email", "web_form", "chat", "wechat", "in_person", "partner_api", "automation"]
TicketPriority = Literal["low", "normal", "high", "urgent"]
TicketStatus = Literal["new", "assigned", "in_progress", "waiting_on_customer", "resolved", "closed"]
MAX_TICKET_TAGS = 50
MAX_ATTACHMENTS = 20
# The largest file a reference may describe: what a mail or chat attachment can be.
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024


class TicketAttachment(InputModel):
    """A file kept elsewhere (object storage, the mail or chat system), referenced by its URL."""

    url: AnyHttpUrl = Field(examples=["https://files.example.com/t/123/photo.jpg"])
    name: ShortText = Field(examples=["破损照片.jpg"])
    content_type: Annotated[str, Field(max_length=128, pattern=r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")] = Field(
        examples=["image/jpeg"], description="A lower-case media type, type/subtype."
    )
    size_bytes: int = Field(ge=0, le=MAX_ATTACHMENT_BYTES, examples=[482133])


class _TagsAndAttachments(InputModel):
    @field_validator("tags", check_fields=False)
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        # As a customer's tags: surrounding whitespace gone (the Tag type), duplicates dropped in order.
        return list(dict.fromkeys(value)) if value is not None else None


class TicketIn(_TagsAndAttachments):
    customer_id: uuid.UUID
    type: TicketType = Field(examples=["complaint"])
    channel: TicketChannel = Field(examples=["phone"])
    subject: MediumText = Field(examples=["收到的茶叶包装破损"])
    description: LongText | None = None
    category_id: uuid.UUID | None = None
    priority: TicketPriority = "normal"
    assignee_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = Field(default=None, description="A team queue.")
    order_id: uuid.UUID | None = None
    interaction_id: uuid.UUID | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TICKET_TAGS, examples=[["物流", "退款"]])
    attachments: list[TicketAttachment] | None = Field(default=None, max_length=MAX_ATTACHMENTS)


class TicketPatch(_TagsAndAttachments):
    subject: MediumText | None = None
    description: LongText | None = None
    category_id: uuid.UUID | None = None
    priority: TicketPriority | None = None
    assignee_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TICKET_TAGS, description="Replaces the tags.")
    attachments: list[TicketAttachment] | None = Field(
        default=None, max_length=MAX_ATTACHMENTS, description="Replaces the attachments."
    )


class Transition(InputModel):
    status: TicketStatus


class CommentIn(InputModel):
    body: LongText = Field(min_length=1)
    public: bool = Field(description="Visible to the customer; the first public reply is the first response.")


class CategoryIn(InputModel):
    name: Label
    parent_id: uuid.UUID | None = None


class CategoryPatch(InputModel):
    name: Label | None = None
    parent_id: uuid.UUID | None = Field(default=None, description="null: a top-level category.")


class SlaPolicyIn(InputModel):
    priority: TicketPriority
    tier: Annotated[str, Field(max_length=16)] | None = Field(default=None, description="null: any tier")
    first_response_minutes: int = Field(ge=1, le=525_600)
    resolution_minutes: int = Field(ge=1, le=525_600)


Weekday = Literal["0", "1", "2", "3", "4", "5", "6"]
HourMinute = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


def _working_week() -> dict[Weekday, list[tuple[str, str]]]:
    days: tuple[Weekday, ...] = ("0", "1", "2", "3", "4")
    return {day: [("09:00", "18:00")] for day in days}


class SlaSettings(InputModel):
    policies: list[SlaPolicyIn] = Field(min_length=1, max_length=100)
    timezone: Annotated[str, Field(max_length=64)] = "Asia/Shanghai"
    weekly: dict[Weekday, list[tuple[HourMinute, HourMinute]]] = Field(
        default_factory=_working_week,
        description="Open hours per weekday (0 is Monday), HH:MM (24:00 ends a day); a missing day is closed.",
    )
    holidays: list[date] = Field(default_factory=list, max_length=800, description="Closed all day.")
    workdays: list[date] = Field(
        default_factory=list,
        max_length=200,
        description="Make-up working days (调休): open the hours of the week's first working day, "
        "whatever their weekday.",
    )


CalendarSource = Literal["cn_mainland"]


class CalendarLoad(InputModel):
    source: CalendarSource = Field(
        default="cn_mainland", description="The State Council's holidays and make-up days, from chinesecalendar."
    )
    years: list[int] = Field(min_length=1, max_length=5, examples=[[2026]])


class SlaPolicyOut(BaseModel):
    priority: TicketPriority
    tier: str | None
    first_response_minutes: int
    resolution_minutes: int


class SlaSettingsOut(BaseModel):
    policies: list[SlaPolicyOut]
    timezone: str
    weekly: dict[Weekday, list[tuple[str, str]]]
    holidays: list[date] = Field(description="Ascending.")
    workdays: list[date] = Field(description="Ascending.")
    version: int = Field(description="Also sent as the ETag; 1 while the workspace runs on the defaults.")


class CsatAnswer(InputModel):
    score: int = Field(ge=1, le=5)
    comment: LongText | None = None


class SurveyIn(InputModel):
    name: Name
    question: MediumText = Field(examples=["您有多大可能向朋友推荐我们？"])
    segment_id: uuid.UUID | None = Field(default=None, description="Audience; null: any customer.")
    channel: Label = "email"
    opens_at: Timestamp
    closes_at: Timestamp | None = None


class SurveyPatch(InputModel):
    name: Name | None = None
    question: MediumText | None = None
    channel: Label | None = None
    opens_at: Timestamp | None = Field(default=None, description="Only before the first answer.")
    closes_at: Timestamp | None = Field(default=None, description="null: open until closed by hand.")


class SurveyAnswer(InputModel):
    customer_id: uuid.UUID
    score: int = Field(ge=0, le=10)
    comment: LongText | None = None


class IntakeFormIn(InputModel):
    name: Name
    channel: TicketChannel = "web_form"


class IntakeFormPatch(InputModel):
    name: Name | None = None
    channel: TicketChannel | None = None


class IntakeSubmission(InputModel):
    name: Name
    email: EmailText | None = None
    phone: PhoneText | None = None
    type: TicketType = "inquiry"
    subject: MediumText
    description: LongText | None = None


class TicketAttachmentOut(BaseModel):
    url: str
    name: str
    content_type: str
    size_bytes: int


class TicketOut(BaseModel):
    id: uuid.UUID
    number: int
    customer_id: uuid.UUID
    type: TicketType
    channel: TicketChannel
    subject: str
    description: str | None
    category_id: uuid.UUID | None
    priority: TicketPriority
    status: TicketStatus
    assignee_id: uuid.UUID | None
    team_id: uuid.UUID | None
    escalated: bool
    first_response_due_at: datetime | None
    resolution_due_at: datetime | None
    seconds_to_first_response_due: int | None
    seconds_to_resolution_due: int | None
    first_response_breached: bool
    resolution_breached: bool
    sla_paused: bool
    first_responded_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    csat_score: int | None
    tags: list[str]
    attachments: list[TicketAttachmentOut]
    created_at: datetime
    updated_at: datetime
    version: int


class TicketPage(BaseModel):
    items: list[TicketOut]
    next_cursor: str | None


class VolumeRow(BaseModel):
    day: date
    type: TicketType
    channel: TicketChannel
    category_id: uuid.UUID | None
    tickets: int


class BacklogByAge(BaseModel):
    under_1_day: int
    from_1_to_3_days: int = Field(alias="1_to_3_days")
    from_3_to_7_days: int = Field(alias="3_to_7_days")
    over_7_days: int


class CsatMonth(BaseModel):
    month: str = Field(description="YYYY-MM, in the workspace's time zone")
    responses: int
    csat_average: float


class NpsMonth(BaseModel):
    month: str = Field(description="YYYY-MM, in the workspace's time zone")
    responses: int
    nps: float


class TierSatisfaction(BaseModel):
    tier: str = Field(description="A value tier, or `none`")
    csat_average: float | None = Field(description="Scores of tickets opened under this tier")
    nps: float | None = Field(description="Answers of customers in this tier now")


class SegmentSatisfaction(BaseModel):
    segment_id: uuid.UUID
    name: str
    csat_average: float | None
    nps: float | None


class ServiceReportOut(BaseModel):
    since: datetime
    until: datetime
    volume: list[VolumeRow] = Field(description="Tickets opened per day (the workspace's), type, channel, category")
    median_first_response_minutes: float | None = Field(description="Within 1 % of the exact median")
    median_resolution_minutes: float | None = Field(description="Within 1 % of the exact median")
    sla_attainment_pct: float | None = Field(description="Of tickets solved or breached, those met in time")
    backlog_by_age: BacklogByAge = Field(description="Open tickets now, by age at `until`")
    csat_average: float | None
    csat_by_month: list[CsatMonth]
    nps_by_month: list[NpsMonth]
    by_tier: list[TierSatisfaction]
    by_segment: list[SegmentSatisfaction] = Field(description="Segments whose members rated or answered")


TicketAction = Literal[
    "opened",
    "assigned",
    "reassigned",
    "subject_changed",
    "description_changed",
    "category_id_changed",
    "priority_changed",
    "status_changed",
    "reopened",
    "escalated",
    "public_reply",
    "internal_note",
    "sla_breached",
    "tags_changed",
    "attachments_changed",
]


class CommentOut(BaseModel):
    id: uuid.UUID
    public: bool
    body: str
    author: Actor
    created_at: datetime


class CommentPage(Page[CommentOut]):
    """Oldest first."""


class TicketEventOut(BaseModel):
    action: TicketAction
    from_: str | None = Field(alias="from", description="The value before, as text.")
    to: str | None = Field(description="The value after, as text (`sla_breached`: the deadline missed).")
    actor: Actor
    at: datetime


class TicketHistoryOut(BaseModel):
    events: list[TicketEventOut] = Field(description="Oldest first.")
    comments: list[CommentOut] = Field(description="Oldest first.")


class CsatRequestOut(BaseModel):
    token: str = Field(description="Single use; answer at POST /api/v1/csat/{token}.")
    expires_at: datetime
    ticket_number: int
    subject: str
    scale: list[int] = Field(examples=[[1, 2, 3, 4, 5]])


class CategoryOut(BaseModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None
    version: int = Field(description="Also sent as the ETag.")


class CategoryList(Page[CategoryOut]):
    """Every category; one page (`next_cursor` is null)."""


SurveyStatus = Literal["scheduled", "open", "closed"]


class SurveyOut(BaseModel):
    id: uuid.UUID
    name: str
    question: str
    segment_id: uuid.UUID | None
    channel: str
    status: SurveyStatus = Field(description="Before `opens_at`, between it and the close, after.")
    opens_at: datetime
    closes_at: datetime | None
    closed_at: datetime | None = Field(description="When it was closed by hand.")
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Also sent as the ETag.")


class SurveyPage(Page[SurveyOut]):
    """Newest first."""


class SurveyAnswerOut(BaseModel):
    """A customer's answer, read at /surveys/{survey_id}/responses/{customer_id} (one per customer)."""

    survey_id: uuid.UUID
    customer_id: uuid.UUID
    score: int = Field(ge=0, le=10)
    comment: str | None
    answered_at: datetime


class SurveyAnswerPage(Page[SurveyAnswerOut]):
    """Newest first; the answers of the customers the caller may see."""


class SurveyResults(BaseModel):
    responses: int
    promoters: int = Field(description="Scores 9-10.")
    passives: int = Field(description="Scores 7-8.")
    detractors: int = Field(description="Scores 0-6.")
    nps: float | None = Field(description="% promoters − % detractors, one decimal; null without answers.")


IntakeFormStatus = Literal["active", "revoked"]


class IntakeFormOut(BaseModel):
    id: uuid.UUID
    name: str
    channel: TicketChannel
    status: IntakeFormStatus
    token_rotated_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Also sent as the ETag.")


class IntakeFormPage(Page[IntakeFormOut]):
    """Newest first."""


class IntakeFormCreated(IntakeFormOut):
    token: str = Field(description="Shown once: submissions go to POST /api/v1/intake/{token}.")


class CsatAnswered(BaseModel):
    ticket_number: int
    score: int = Field(ge=1, le=5)


class IntakeSubmitted(BaseModel):
    ticket_number: int
    status: TicketStatus
