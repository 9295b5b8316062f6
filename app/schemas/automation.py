"""Automation rules: a trigger (event, schedule or date), a list of actions, and the runs."""

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import InputModel, Label, MediumText, Name, Page, Tag
from app.schemas.interaction import Priority, TaskKind
from app.schemas.message_template import VariableName
from app.schemas.outreach import Purpose
from app.schemas.segment import FILTER_EXAMPLE, FilterNode
from app.schemas.ticket import TicketPriority, TicketType

MAX_ACTIONS = 10

_AUDIENCE = "Only customers who match this filter (the segments' filter language); null for every customer."
_CONDITIONS = (
    "Conditions on the event's `data`, in the filter language's shape: `{field, op, value}` where `field` is a "
    "dotted path into `data` (e.g. `to_stage`, `changed_fields`), and `and`/`or`/`not` groups. Operators: eq, neq, "
    "in, not_in, gt, gte, lt, lte, contains, is_null, is_not_null."
)


class EventTrigger(InputModel):
    kind: Literal["event"]
    event_type: Label = Field(examples=["lifecycle.stage_changed"], description="A type of GET /events/types.")
    conditions: FilterNode | None = Field(
        default=None, description=_CONDITIONS, examples=[{"field": "to_stage", "op": "eq", "value": "at_risk"}]
    )
    audience: FilterNode | None = Field(default=None, description=_AUDIENCE)


class ScheduleTrigger(InputModel):
    kind: Literal["schedule"]
    cron: Annotated[str, Field(min_length=9, max_length=100)] = Field(
        examples=["0 9 * * 1"],
        description="Five-field cron in the workspace's time zone; at most one firing every 5 minutes.",
    )
    audience: FilterNode = Field(description="The customers each firing runs for.", examples=[FILTER_EXAMPLE])


class DateTrigger(InputModel):
    kind: Literal["date"]
    date: Literal["birthday", "custom_field", "fixed"] = Field(
        description="The customer's birthday, a date custom field (`field_key`), or a fixed day (`month`, `day`)."
    )
    field_key: Label | None = Field(default=None, description="custom_field: a date custom field's key.")
    month: int | None = Field(default=None, ge=1, le=12, description="fixed: the month.")
    day: int | None = Field(default=None, ge=1, le=31, description="fixed: the day (lunar: 1-30).")
    calendar: Literal["gregorian", "lunar"] = Field(
        default="gregorian",
        description="lunar: the month and day are a lunar month and day (a day the month lacks is its last day; "
        "a leap month is not an occurrence).",
    )
    offset_days: int = Field(
        default=0,
        ge=-60,
        le=60,
        description="Days from the occasion: -3 runs three days before (and on any later day up to the occasion, "
        "if a day's run was missed); 2 runs two days after.",
    )
    audience: FilterNode | None = Field(default=None, description=_AUDIENCE)


Trigger = Annotated[EventTrigger | ScheduleTrigger | DateTrigger, Field(discriminator="kind")]


class CreateTask(InputModel):
    type: Literal["create_task"]
    title: MediumText = Field(examples=["生日祝福电话"])
    kind: TaskKind = "follow_up"
    priority: Priority = "normal"
    due_in_days: int = Field(
        default=0, ge=0, le=365, description="Due this many days after the occasion (date rules) or the run."
    )
    assignee_id: uuid.UUID | None = Field(
        default=None, description="An active user; null for the customer's owner, else the workspace's fallback."
    )


class OpenTicket(InputModel):
    type: Literal["open_ticket"]
    subject: MediumText = Field(examples=["流失预警：请回访"])
    ticket_type: TicketType = "inquiry"
    priority: TicketPriority = "normal"


class AddTag(InputModel):
    type: Literal["add_tag"]
    tag: Tag = Field(examples=["生日月"])


class RemoveTag(InputModel):
    type: Literal["remove_tag"]
    tag: Tag = Field(examples=["新客"])


class AddToSegment(InputModel):
    type: Literal["add_to_segment"]
    segment_id: uuid.UUID = Field(description="A static segment.")


class SetLifecycleStage(InputModel):
    type: Literal["set_lifecycle_stage"]
    stage: Label = Field(examples=["at_risk"])


class CallWebhook(InputModel):
    type: Literal["call_webhook"]
    endpoint_id: uuid.UUID = Field(
        description="A webhook endpoint of the workspace: it receives an `automation.webhook_requested` event, "
        "signed, retried, in its delivery log (at least once; `webhook-id`, the event's id, is the idempotency key)."
    )


class SendMessage(InputModel):
    type: Literal["send_message"]
    channel_id: uuid.UUID = Field(description="A channel of `/channels`.")
    template_id: uuid.UUID = Field(
        description="A message template of the channel's kind, rendered for each customer when the run queues it."
    )
    purpose: Purpose = Field(
        default="marketing", description="marketing needs the customer's consent on the channel, and keeps its caps."
    )
    variables: dict[VariableName, Annotated[str, Field(max_length=1_000)] | int | float | bool] = Field(
        default_factory=dict, max_length=20, examples=[{"coupon_code": "BDAY-2026"}]
    )


Action = Annotated[
    CreateTask | OpenTicket | AddTag | RemoveTag | AddToSegment | SetLifecycleStage | CallWebhook | SendMessage,
    Field(discriminator="type"),
]


class RuleIn(InputModel):
    name: Name = Field(examples=["生日前三天提醒"])
    active: bool = True
    trigger: Trigger
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)


class RulePatch(InputModel):
    """The fields to change; the rule as changed is checked as a whole, as a new one is."""

    name: Name | None = None
    active: bool | None = None
    trigger: Trigger | None = None
    actions: list[Action] | None = Field(default=None, min_length=1, max_length=MAX_ACTIONS)


class RuleOut(BaseModel):
    id: uuid.UUID
    name: str
    active: bool
    trigger: dict[str, Any] = Field(examples=[{"kind": "date", "date": "birthday", "offset_days": -3}])
    actions: list[dict[str, Any]] = Field(examples=[[{"type": "create_task", "title": "生日祝福电话"}]])
    next_run_at: datetime | None = Field(description="Schedule rules: the next firing.")
    last_run_at: datetime | None
    managed_by: Literal["care_rules"] | None = Field(
        description="`care_rules` for a rule kept through the deprecated /care-rules API."
    )
    created_at: datetime
    updated_at: datetime
    version: int


class RuleList(Page[RuleOut]):
    """Rules, newest first."""


class PreviewIn(InputModel):
    limit: int = Field(default=20, ge=1, le=100, description="How many customers to list.")


class AffectedCustomer(BaseModel):
    id: uuid.UUID
    name: str
    occasion: date | None = Field(description="Date rules: the occasion the run would be for.")


class PreviewOut(BaseModel):
    count: int = Field(description="Customers a run now would act for (among those the caller may see).")
    customers: list[AffectedCustomer]


ActionType = Literal[
    "create_task",
    "open_ticket",
    "add_tag",
    "remove_tag",
    "add_to_segment",
    "set_lifecycle_stage",
    "call_webhook",
    "send_message",
]


class ActionResult(BaseModel):
    index: int
    type: ActionType
    outcome: Literal["ok", "queued", "failed", "skipped"]
    detail: str | None = None


class RunOut(BaseModel):
    id: uuid.UUID
    rule_id: uuid.UUID
    customer_id: uuid.UUID
    trigger_key: str = Field(examples=["2027"], description="The occasion's year, the firing time or the event id.")
    event_id: uuid.UUID | None
    occasion: date | None
    depth: int = Field(description="1 for a run on a person's change; one more per automation run in the chain.")
    outcome: Literal["ok", "failed", "skipped"]
    reason: str | None
    actions: list[ActionResult]
    ran_at: datetime


class RunList(Page[RunOut]):
    """Runs, newest first."""


class RunNowOut(BaseModel):
    runs: int = Field(description="Runs recorded by this run (none for customers already run for this trigger).")
