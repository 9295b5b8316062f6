"""Segment, filter and lifecycle models."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, computed_field

from app.schemas.common import Description, InputModel, MoneyOut, Name, Page, Reason
from app.schemas.customer import CustomerOut
from app.schemas.order import Amount

FILTER_EXAMPLE = {
    "and": [
        {"field": "city", "op": "in", "value": ["深圳市", "广州市"]},
        {"field": "value.rfm_segment", "op": "in", "value": ["Champions", "Loyal"]},
        {"field": "tags", "op": "contains", "value": "vip"},
        {"not": {"field": "lifecycle.stage", "op": "eq", "value": "churned"}},
    ]
}
FilterNode = dict[str, Any]


class SegmentCreate(InputModel):
    name: Name = Field(examples=["华南 VIP"])
    description: Description | None = None
    kind: Literal["dynamic", "static"] = "dynamic"
    filter: FilterNode | None = Field(default=None, examples=[FILTER_EXAMPLE])


class SegmentPatch(InputModel):
    name: Name | None = None
    description: Description | None = None
    filter: FilterNode | None = None


class SegmentOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    kind: Literal["dynamic", "static", "snapshot"]
    filter: FilterNode | None
    builtin: str | None
    member_count: int = Field(description="Members as of `refreshed_at` (0 before a dynamic segment's first refresh).")
    refreshed_at: datetime | None
    refresh_requested_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int

    @computed_field(  # type: ignore[prop-decorator]
        description="`computing` while a refresh is queued (after a create, a filter change or a refresh "
        "request): `member_count` and the members are then those of the last refresh, none before the first. "
        "The worker refreshes it promptly; read the segment again until `ready`."
    )
    @property
    def members_status(self) -> Literal["computing", "ready"]:
        return "computing" if self.refresh_requested_at is not None else "ready"


class SegmentList(BaseModel):
    items: list[SegmentOut]


class MemberChange(InputModel):
    add: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    remove: list[uuid.UUID] = Field(default_factory=list, max_length=1000)


class SnapshotIn(InputModel):
    name: Name | None = None


class Preview(InputModel):
    filter: FilterNode = Field(examples=[FILTER_EXAMPLE])
    limit: int = Field(default=20, ge=1, le=100)


class PreviewOut(BaseModel):
    count: int
    items: list[CustomerOut]


class CustomerSearch(InputModel):
    filter: FilterNode = Field(examples=[FILTER_EXAMPLE])
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)


class SizeOut(BaseModel):
    measured_at: datetime
    members: int
    joined: int
    left: int


class SizeList(BaseModel):
    items: list[SizeOut]


# The filter language's value types (app.services.filters.catalogue).
FilterFieldType = Literal["string", "enum", "integer", "number", "date", "datetime", "boolean", "tags", "id"]


class FieldOut(BaseModel):
    field: str
    type: FilterFieldType
    label: str
    group: str
    operators: list[str]
    options: list[str] | None = None


class FieldList(BaseModel):
    items: list[FieldOut]


class StageMove(InputModel):
    stage: str = Field(max_length=32, examples=["prospect"])
    reason: Reason | None = Field(default=None, examples=["Asked for a quote at the trade show"])


class StageStay(BaseModel):
    stage: str
    from_stage: str | None
    entered_at: datetime
    left_at: datetime | None
    by_user_id: uuid.UUID | None
    by_rule: str | None = Field(description="The rule that moved the customer; null when a person did.")
    reason: str | None


class StageOut(BaseModel):
    customer_id: uuid.UUID
    stage: str | None
    entered_at: datetime | None
    history: list[StageStay]


class StageIn(InputModel):
    key: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", examples=["vip_prospect"])]
    name: Name = Field(examples=["VIP 潜在客户"])


class StagesIn(InputModel):
    stages: list[StageIn] = Field(min_length=1, max_length=30)


class LifecycleRulesIn(InputModel):
    """The thresholds the stage rules apply; every one is sent (the whole set is replaced)."""

    loyal_orders: int = Field(ge=1, le=1_000_000, examples=[5], description="Orders in the tier window for loyal.")
    loyal_spend: Amount = Field(
        examples=["5000.00"], description="Or this net spend in the tier window, in the workspace's currency; > 0."
    )
    at_risk_days: int = Field(ge=1, le=36_500, examples=[90], description="Days without a purchase for at risk.")
    churned_days: int = Field(
        ge=1, le=36_500, examples=[180], description="Days without a purchase for churned; more than at_risk_days."
    )


class LifecycleRulesOut(BaseModel):
    loyal_orders: int = Field(examples=[5])
    loyal_spend: MoneyOut
    at_risk_days: int = Field(examples=[90])
    churned_days: int = Field(examples=[180])
    defaults: bool = Field(description="true while the workspace has not set its own.")
    updated_at: datetime | None
    version: int


class StageDefinition(BaseModel):
    key: str = Field(examples=["prospect"], description="A default stage's or the workspace's own.")
    name: str
    position: int


class StageList(Page[StageDefinition]):
    """In order; one page (`next_cursor` is null)."""


class LifecycleStages(StageList):
    transitions: dict[str, list[str]] = Field(
        description="From each default stage (`none`: no stage yet), the default stages it may move to."
    )
    rules: LifecycleRulesOut


class StageCount(BaseModel):
    stage: str
    now: int
    at: int = Field(description="Customers in the stage at the report's `at`.")
    median_days_in_stage: float | None = Field(description="Of stays that ended.")


class StageMoveCount(BaseModel):
    from_stage: str | None
    to_stage: str
    customers: int


class Funnel(BaseModel):
    since: datetime
    until: datetime
    moves: list[StageMoveCount] = Field(description="Most frequent first.")


class Cohort(BaseModel):
    cohort: str = Field(examples=["2026-03"], description="The month of the first purchase, YYYY-MM.")
    customers: int
    retention: list[float] = Field(
        min_length=12, max_length=12, description="Share of the cohort buying in each of months 1-12 after."
    )


class LifecycleReport(BaseModel):
    stages: list[StageCount]
    at: datetime
    funnel: Funnel
    cohorts: list[Cohort]
