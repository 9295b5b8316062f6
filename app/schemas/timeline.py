"""The customer view: the timeline's items and the contact summary."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import ActorType, MoneyOut, Page
from app.schemas.interaction import Channel, Direction, LocationOut, TaskKind
from app.schemas.order import OrderStatus
from app.schemas.ticket import TicketPriority, TicketStatus, TicketType


class InteractionData(BaseModel):
    channel: Channel
    direction: Direction
    subject: str | None
    outcome: str | None
    user_id: uuid.UUID | None
    location: LocationOut | None
    checked_in_at: datetime | None
    checked_out_at: datetime | None


class TaskDoneData(BaseModel):
    title: str
    kind: TaskKind
    interaction_id: uuid.UUID | None


class ChangeData(BaseModel):
    action: str = Field(examples=["updated"])
    changes: dict[str, Any] = Field(examples=[{"name": {"before": "张伟", "after": "张伟明"}}])
    actor_type: ActorType
    actor_id: uuid.UUID | None


class OrderData(BaseModel):
    external_id: str
    status: OrderStatus
    currency: str = Field(examples=["CNY"])
    total_amount: MoneyOut


class StageChangeData(BaseModel):
    stage: str
    from_stage: str | None
    by_rule: str | None = Field(description="The rule that moved the customer; null when a person did.")
    by_user_id: uuid.UUID | None


class TierChangeData(BaseModel):
    from_tier: str | None
    to_tier: str | None
    reason: str


class TicketData(BaseModel):
    number: int
    type: TicketType
    subject: str
    status: TicketStatus
    priority: TicketPriority


class SegmentJoinData(BaseModel):
    segment_id: uuid.UUID
    name: str


class _Item(BaseModel):
    occurred_at: datetime
    id: uuid.UUID = Field(description="The record's id (the segment's for a segment join).")


class InteractionItem(_Item):
    type: Literal["interaction"]
    data: InteractionData


class TaskDoneItem(_Item):
    type: Literal["task_done"]
    data: TaskDoneData


class ChangeItem(_Item):
    type: Literal["change"]
    data: ChangeData


class OrderItem(_Item):
    type: Literal["order"]
    data: OrderData


class StageChangeItem(_Item):
    type: Literal["stage_change"]
    data: StageChangeData


class TierChangeItem(_Item):
    type: Literal["tier_change"]
    data: TierChangeData


class TicketItem(_Item):
    type: Literal["ticket"]
    data: TicketData


class SegmentJoinItem(_Item):
    type: Literal["segment_join"]
    data: SegmentJoinData


TimelineItem = Annotated[
    InteractionItem
    | TaskDoneItem
    | ChangeItem
    | OrderItem
    | StageChangeItem
    | TierChangeItem
    | TicketItem
    | SegmentJoinItem,
    Field(discriminator="type"),
]


class TimelinePage(Page[TimelineItem]):
    """Newest first."""


class LastContact(BaseModel):
    at: datetime
    channel: Channel
    user_id: uuid.UUID | None


class NextFollowUp(BaseModel):
    task_id: uuid.UUID
    title: str
    due_at: datetime


class ChannelCounts(BaseModel):
    days_30: int
    days_90: int
    days_365: int


class ContactSummary(BaseModel):
    customer_id: uuid.UUID
    last_contact: LastContact | None
    days_since_last_contact: int | None
    open_tasks: int
    next_follow_up: NextFollowUp | None = Field(description="The open task due first.")
    interactions_by_channel: dict[Channel, ChannelCounts] = Field(description="Channels contacted in 365 days.")
    preferred_channel: Channel | None = Field(description="Of answered contacts (any outcome but no_answer).")
    preferred_contact_hours: list[Annotated[int, Field(ge=0, le=23)]] = Field(
        description="Up to three hours of the day, in the workspace's time zone, most answered first."
    )
    timezone: str = Field(examples=["Asia/Shanghai"])
