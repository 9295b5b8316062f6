"""Lead scoring: the rules document (points per filter condition, decay) as sent and as read."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from app.schemas.common import InputModel, Name
from app.schemas.segment import FilterNode

MAX_RULES = 50
MAX_POINTS = 1000
MAX_HALF_LIFE_DAYS = 365

Points = Annotated[int, Field(ge=-MAX_POINTS, le=MAX_POINTS, description="Points a matching customer scores.")]

RULE_EXAMPLE = {
    "name": "Contacted by phone lately",
    "filter": {"field": "activity.interactions_30d.phone", "op": "gte", "value": 1},
    "points": 20,
    "decays": True,
}


class LeadScoringRule(InputModel):
    name: Name = Field(examples=["Contacted by phone lately"])
    filter: FilterNode = Field(
        description="A condition in the filter language of segments (GET /api/v1/segments/fields).",
        examples=[RULE_EXAMPLE["filter"]],
    )
    points: Points
    decays: bool = Field(
        default=False,
        description="The points halve every `half_life_days` days since the customer's last contact "
        "(since the customer was created, before any contact).",
    )


class LeadScoringIn(InputModel):
    rules: list[LeadScoringRule] = Field(max_length=MAX_RULES, examples=[[RULE_EXAMPLE]])
    half_life_days: Annotated[int, Field(ge=1, le=MAX_HALF_LIFE_DAYS)] = 30


class LeadScoringRuleOut(BaseModel):
    name: str
    filter: FilterNode
    points: int
    decays: bool


class LeadScoringOut(BaseModel):
    rules: list[LeadScoringRuleOut]
    half_life_days: int
    version: int = Field(description="The ETag; 0 while the workspace never saved its rules.")
    updated_at: datetime | None
    scored_at: datetime | None = Field(description="When the last recompute over every customer started.")
    recompute_pending: bool = Field(description="A save's recompute has not run yet.")
