"""Pipelines, opportunities, moves and the board: input and output models. Money travels as
decimal strings in the workspace currency's decimals."""

import uuid
from datetime import date, datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import Actor, Day, InputModel, Label, MoneyOut, Name, NoNul, Page
from app.schemas.order import Amount

StageKind = Literal["open", "won", "lost"]
StageCode = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["proposal"]), NoNul]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["CNY"])]
Title = Annotated[str, Field(min_length=1, max_length=200, examples=["年度茶礼团购"]), NoNul]
LostReason = Annotated[str, Field(min_length=1, max_length=500, examples=["预算不足"]), NoNul]
OpportunitySort = Literal["-created_at", "created_at", "-amount", "amount"]


class StageIn(InputModel):
    code: StageCode
    name: Name = Field(examples=["方案报价"])
    probability: int = Field(ge=0, le=100, examples=[40], description="Percent chance of winning from here.")
    kind: StageKind = Field(default="open", examples=["open"])
    stale_after_days: int | None = Field(
        default=None, ge=1, le=3650, examples=[14], description="An open deal in this stage longer is stale."
    )
    lost_reason_required: bool = Field(default=False, description="Lost stages only: a move here needs a reason.")

    @model_validator(mode="after")
    def _reason_on_lost(self) -> Self:
        if self.lost_reason_required and self.kind != "lost":
            raise ValueError("lost_reason_required is for lost stages only")
        return self


Stages = Annotated[list[StageIn], Field(min_length=1, max_length=50)]


def _check_stages(stages: list[StageIn]) -> None:
    codes = [stage.code for stage in stages]
    if len(set(codes)) != len(codes):
        raise ValueError("stage codes must be unique within a pipeline")
    if not any(stage.kind == "open" for stage in stages):
        raise ValueError("a pipeline needs at least one open stage")


class PipelineIn(InputModel):
    name: Name = Field(examples=["新业务"])
    stages: Stages = Field(description="In order; a new opportunity starts in the first open stage unless told.")

    @model_validator(mode="after")
    def _stages(self) -> Self:
        _check_stages(self.stages)
        return self


class PipelinePatch(InputModel):
    name: Name | None = Field(default=None, examples=["续约"])
    stages: Stages | None = Field(
        default=None,
        description="The whole ordered list, replacing the stored one; a stage in use by an opportunity must stay.",
    )

    @model_validator(mode="after")
    def _stages(self) -> Self:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        if "stages" in self.model_fields_set:
            if self.stages is None:
                raise ValueError("stages cannot be null")
            _check_stages(self.stages)
        return self


class StageOut(BaseModel):
    code: str = Field(examples=["proposal"])
    name: str
    probability: int
    kind: StageKind
    stale_after_days: int | None
    lost_reason_required: bool


class PipelineOut(BaseModel):
    id: uuid.UUID
    name: str
    stages: list[StageOut]
    created_at: datetime
    updated_at: datetime
    version: int


class PipelineList(Page[PipelineOut]):
    pass


class OpportunityIn(InputModel):
    customer_id: uuid.UUID
    title: Title
    amount: Amount = Field(examples=["12900.00"], description="Not negative, in the workspace currency's decimals.")
    currency: Currency = Field(description="The workspace's currency.")
    expected_close_date: Day | None = None
    pipeline_id: uuid.UUID
    stage: StageCode | None = Field(default=None, description="A stage of the pipeline; its first open stage if none.")
    owner_id: uuid.UUID | None = Field(default=None, description="An active user; the customer's owner if none.")
    source: Label | None = Field(default=None, examples=["展会"])


class OpportunityPatch(InputModel):
    """The stage changes only through POST /opportunities/{id}/move."""

    title: Title | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    expected_close_date: Day | None = None
    owner_id: uuid.UUID | None = None
    source: Label | None = None

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("title", "amount", "currency"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class OpportunityOut(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    title: str
    amount: MoneyOut
    currency: str = Field(examples=["CNY"])
    expected_close_date: date | None
    pipeline_id: uuid.UUID
    stage: str = Field(examples=["proposal"])
    status: StageKind = Field(description="The kind of its stage: open, won or lost.")
    owner_id: uuid.UUID | None
    source: str | None
    stage_entered_at: datetime
    closed_at: datetime | None = Field(description="When it entered its won or lost stage; null while open.")
    lost_reason: str | None
    created_at: datetime
    created_by: Actor
    updated_at: datetime
    version: int


class OpportunityPage(Page[OpportunityOut]):
    pass


class MoveIn(InputModel):
    stage: StageCode
    lost_reason: LostReason | None = Field(default=None, description="Why it was lost; required by some lost stages.")
    reopen: bool = Field(default=False, description="Required to move a won or lost opportunity anywhere else.")


class StageChangeOut(BaseModel):
    id: uuid.UUID
    from_stage: str | None = Field(description="Null for the stage it was created in.")
    to_stage: str
    to_kind: StageKind
    lost_reason: str | None
    seconds_in_previous: int | None = Field(description="How long it stayed in `from_stage`.")
    actor: Actor
    at: datetime


class StageChangePage(Page[StageChangeOut]):
    pass


class OpportunityFilters(InputModel):
    """Each filter given narrows the list; a repeated one matches any of its values."""

    pipeline_id: list[uuid.UUID] = Field(default=[], max_length=100)
    stage: list[StageCode] = Field(default=[], max_length=100)
    status: list[StageKind] = Field(default=[], max_length=3)
    customer_id: list[uuid.UUID] = Field(default=[], max_length=100)
    owner_id: list[uuid.UUID] = Field(default=[], max_length=100)
    source: list[Label] = Field(default=[], max_length=100)
    q: Annotated[str, Field(min_length=1, max_length=200), NoNul] | None = Field(
        default=None, description="Words of the title (case-insensitive substring)."
    )
    close_from: Day | None = Field(default=None, description="Expected to close on or after this day.")
    close_to: Day | None = Field(default=None, description="Expected to close on or before this day.")
    min_amount: Amount | None = None
    max_amount: Amount | None = None


class OpportunityQuery(OpportunityFilters):
    """The filters as query parameters; page and sort are declared beside them."""

    model_config = ConfigDict(extra="ignore")


class BoardStage(BaseModel):
    code: str
    name: str
    kind: StageKind
    probability: int
    count: int
    amount: MoneyOut
    weighted_amount: MoneyOut = Field(description="The sum of amount × probability / 100.")


class OpportunityChanged(OpportunityOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["amount"]])


class OpportunityMoved(BaseModel):
    opportunity_id: str
    customer_id: str
    pipeline_id: str
    from_stage: str | None
    to_stage: str = Field(examples=["won"])
    to_kind: StageKind
    lost_reason: str | None
    seconds_in_previous: int | None = Field(description="How long it stayed in `from_stage`.")
    amount: MoneyOut
    currency: str = Field(examples=["CNY"])
    at: datetime


class OpportunityRef(BaseModel):
    id: str
    customer_id: str


class BoardOut(BaseModel):
    pipeline_id: uuid.UUID
    currency: str = Field(examples=["CNY"])
    stages: list[BoardStage]
