"""Interaction, task, follow-up plan and care rule models."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field

from app.schemas.common import InputModel, Label, LongText, MediumText, Name, NoNul, Page, ShortText, Timestamp

Channel = Literal["phone", "email", "sms", "wechat", "meeting", "visit", "chat", "other"]
Direction = Literal["inbound", "outbound"]
TaskKind = Literal["call_back", "visit", "send_quote", "follow_up", "care", "other"]
Priority = Literal["low", "normal", "high", "urgent"]
PlanRule = Literal["every_n_days", "days_after_first_purchase", "days_after_ticket_resolved"]
CareKind = Literal["birthday", "fixed_date", "custom_date"]
ExternalId = Annotated[str, Field(min_length=1, max_length=128), NoNul]


class Attachment(InputModel):
    url: AnyHttpUrl
    name: ShortText


class Location(InputModel):
    """Where a contact took place, as the phone reported it (WGS 84)."""

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False, examples=[31.2304])
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False, examples=[121.4737])
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False, examples=[12.5])
    address: MediumText | None = Field(default=None, examples=["上海市黄浦区南京东路 1 号"])


_CHECKED_IN = "A visit's arrival (channel `visit` only)."
_CHECKED_OUT = "A visit's departure, not before its arrival (channel `visit` only); null while the visit is open."


class Participants(InputModel):
    users: list[uuid.UUID] = Field(default_factory=list, max_length=20)
    contacts: list[ShortText] = Field(default_factory=list, max_length=20)


class InteractionIn(InputModel):
    customer_id: uuid.UUID
    channel: Channel = Field(examples=["phone"])
    direction: Direction = Field(examples=["outbound"])
    occurred_at: Timestamp
    duration_seconds: int | None = Field(default=None, ge=0, le=86_400)
    user_id: uuid.UUID | None = Field(default=None, description="Who talked to the customer; default the caller.")
    participants: Participants = Field(default_factory=Participants)
    subject: MediumText | None = Field(default=None, examples=["回访：新品试用反馈"])
    content: LongText | None = None
    outcome: Label | None = Field(default=None, examples=["reached"], description="One of the workspace's outcomes.")
    next_step: Name | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    source: Label = Field(default="api", description="The system that logged it.")
    external_id: ExternalId | None = Field(default=None, description="Its id there: imports are idempotent by it.")
    location: Location | None = None
    checked_in_at: Timestamp | None = Field(default=None, description=_CHECKED_IN)
    checked_out_at: Timestamp | None = Field(default=None, description=_CHECKED_OUT)


class InteractionPatch(InputModel):
    channel: Channel | None = None
    direction: Direction | None = None
    occurred_at: Timestamp | None = None
    duration_seconds: int | None = Field(default=None, ge=0, le=86_400)
    subject: MediumText | None = None
    content: LongText | None = None
    outcome: Label | None = None
    next_step: Name | None = None
    location: Location | None = None
    checked_in_at: Timestamp | None = Field(default=None, description=_CHECKED_IN)
    checked_out_at: Timestamp | None = Field(
        default=None, description="Check out of an open visit: its departure, not before its arrival."
    )


class LocationOut(BaseModel):
    latitude: float
    longitude: float
    accuracy_m: float | None
    address: str | None


class ParticipantsOut(BaseModel):
    users: list[uuid.UUID] = Field(default_factory=list)
    contacts: list[str] = Field(default_factory=list, description="Masked without the PII scope.")


class AttachmentOut(BaseModel):
    url: str
    name: str


class InteractionOut(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    user_id: uuid.UUID | None
    channel: Channel
    direction: Direction
    occurred_at: datetime
    duration_seconds: int | None
    participants: ParticipantsOut
    subject: str | None
    content: str | None
    outcome: str | None
    next_step: str | None
    attachments: list[AttachmentOut]
    source: str
    external_id: str | None
    location: LocationOut | None
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class InteractionPage(BaseModel):
    items: list[InteractionOut]
    next_cursor: str | None


class InteractionImport(BaseModel):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class TaskIn(InputModel):
    customer_id: uuid.UUID
    title: Name = Field(examples=["回电确认报价"])
    kind: TaskKind = "follow_up"
    assignee_id: uuid.UUID | None = Field(
        default=None,
        description="Default: the caller; for an API key, the customer's owner, else the workspace's default "
        "assignee, else its first admin.",
    )
    due_at: Timestamp = Field(description="A past time is allowed; the task is then overdue.")
    priority: Priority = "normal"
    notes: LongText | None = None


class TaskPatch(InputModel):
    title: Name | None = None
    assignee_id: uuid.UUID | None = None
    due_at: Timestamp | None = None
    priority: Priority | None = None
    notes: LongText | None = None


class TaskComplete(InputModel):
    interaction_id: uuid.UUID | None = Field(default=None, description="The contact that completed the task.")


class TaskOut(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    title: str
    kind: TaskKind
    assignee_id: uuid.UUID
    due_at: datetime
    priority: Priority
    status: Literal["open", "done", "cancelled"]
    overdue: bool
    origin: Literal["manual", "plan", "care", "automation"]
    plan_id: uuid.UUID | None
    notes: str | None
    interaction_id: uuid.UUID | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class Audience(InputModel):
    """Who a plan covers; every condition given must hold. Empty: every customer."""

    tier: Annotated[str, Field(max_length=16)] | None = None
    segment_id: uuid.UUID | None = None
    stage: Annotated[str, Field(max_length=32)] | None = None


class PlanIn(InputModel):
    name: Name = Field(examples=["A 类客户每月回访"])
    rule: PlanRule
    days: int = Field(ge=1, le=3650, description="N; zero is not a plan.")
    audience: Audience = Field(default_factory=Audience)
    task_title: Name = Field(examples=["月度回访"])
    task_kind: TaskKind = "follow_up"
    task_priority: Priority = "normal"
    active: bool = True


class PlanPatch(InputModel):
    name: Name | None = None
    days: int | None = Field(default=None, ge=1, le=3650)
    audience: Audience | None = None
    task_title: Name | None = None
    task_priority: Priority | None = None
    active: bool | None = Field(default=None, description="false pauses the plan.")


class PlanOut(BaseModel):
    id: uuid.UUID
    name: str
    rule: PlanRule
    days: int
    audience: dict[str, Any]
    task_title: str
    task_kind: TaskKind
    task_priority: Priority
    active: bool
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


Calendar = Literal["gregorian", "lunar"]
_CALENDAR = (
    "lunar: the month and day (the rule's, or the customer's birthday or date field) are a lunar month and day, "
    "e.g. 春节 1/1, 中秋 8/15. A day the month lacks that year is the month's last day; a leap month is not an "
    "occurrence (the ordinary month is)."
)


class CareRuleIn(InputModel):
    name: Name = Field(examples=["生日关怀"])
    kind: CareKind
    calendar: Calendar = Field(default="gregorian", description=_CALENDAR)
    month: int | None = Field(default=None, ge=1, le=12, description="fixed_date: the month")
    day: int | None = Field(default=None, ge=1, le=31, description="fixed_date: the day (lunar: 1-30)")
    field_key: Label | None = Field(default=None, description="custom_date: a date custom field")
    lead_days: int = Field(default=3, ge=0, le=60)
    task_title: Name = Field(examples=["生日祝福"])
    active: bool = True


class CareRulePatch(InputModel):
    """The fields to change; the rule as changed is checked as a whole, as a new one is."""

    name: Name | None = None
    kind: CareKind | None = None
    calendar: Calendar | None = Field(default=None, description=_CALENDAR)
    month: int | None = Field(default=None, ge=1, le=12)
    day: int | None = Field(default=None, ge=1, le=31)
    field_key: Label | None = None
    lead_days: int | None = Field(default=None, ge=0, le=60)
    task_title: Name | None = None
    active: bool | None = Field(default=None, description="false pauses the rule; its open tasks stay.")


class CareRuleOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: CareKind
    calendar: Calendar
    month: int | None
    day: int | None
    field_key: str | None
    lead_days: int
    task_title: str
    active: bool
    version: int


class RunOut(BaseModel):
    created: int


class Outcomes(InputModel):
    outcomes: list[Label] = Field(min_length=1, max_length=50)


class OutcomesOut(BaseModel):
    outcomes: list[str] = Field(examples=[["reached", "no_answer", "callback_requested"]])


class PlanList(Page[PlanOut]):
    """Every plan; one page (`next_cursor` is null)."""


class CareRuleList(Page[CareRuleOut]):
    """Every care rule; one page (`next_cursor` is null)."""
