"""Loyalty: the program and levels documents, a member's account and ledger, adjustments and redemptions."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from app.schemas.common import InputModel, Label, MediumText, Name, OutputModel, ShortText, Timestamp
from app.schemas.order import Amount, decimal_input
from app.schemas.ticket import TicketPriority

# One call moves at most this many points: more is a typing slip, not a loyalty program.
MAX_POINTS = 10_000_000


def _at_most_100(value: Decimal) -> Decimal:
    if value > 100:
        raise ValueError("must be at most 100")
    return value


Multiplier = Annotated[Decimal, *decimal_input(3, minimum=0)]
Percent = Annotated[Decimal, *decimal_input(3, minimum=0), AfterValidator(_at_most_100)]
MultiplierOut = Annotated[str, Field(examples=["1.5"])]
Enrolment = Literal["explicit", "automatic"]
EntryKind = Literal["earn", "reverse", "redeem", "redeem_cancel", "adjust", "expire", "referral", "action", "merge"]


def _whole_number(value: object) -> object:
    """A JSON number without a fraction (`5` or `5.0`, as JSON Schema's integer); never text or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("send a whole number of points")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("points are whole numbers")
        return int(value)
    return value


Points = Annotated[int, Field(ge=1, le=MAX_POINTS, examples=[500]), BeforeValidator(_whole_number)]
SignedPoints = Annotated[int, Field(ge=-MAX_POINTS, le=MAX_POINTS, examples=[-200]), BeforeValidator(_whole_number)]
Multipliers = Annotated[dict[Label, Multiplier], Field(max_length=100)]


class ReferralProgramIn(InputModel):
    referrer_points: int = Field(
        default=0, ge=0, le=MAX_POINTS, description="Credited to the referrer when a referral qualifies."
    )
    referee_points: int = Field(
        default=0, ge=0, le=MAX_POINTS, description="Credited to the referee when its referral qualifies."
    )
    min_order_amount: Amount = Field(
        default=Decimal(0),
        examples=["100"],
        description="The qualifying order's paid amount (net of refunds) at least.",
    )
    window_days: int = Field(
        default=30, ge=1, le=365, description="Days after the referral within which the qualifying order is placed."
    )


class ReferralProgramOut(OutputModel):
    referrer_points: int
    referee_points: int
    min_order_amount: str = Field(examples=["100.00"])
    window_days: int


class ProgramIn(InputModel):
    enabled: bool = Field(default=False, description="Off: no order earns points.")
    earn_rate: Amount = Field(
        examples=["1"], description="Points per unit of the workspace currency paid, before multipliers (rounded down)."
    )
    category_multipliers: Multipliers = Field(default={}, examples=[{"tea": "2"}], description="By line category.")
    channel_multipliers: Multipliers = Field(default={}, examples=[{"wechat": "1.5"}], description="By order channel.")
    source_multipliers: Multipliers = Field(default={}, examples=[{"pos": "1"}], description="By order source.")
    pending_days: int = Field(
        default=0, ge=0, le=365, description="Days after the order before its points can be redeemed (returns window)."
    )
    expiry_months: int | None = Field(
        default=None, ge=1, le=120, description="Months after earning when a lot's unspent points expire; null: never."
    )
    enrolment: Enrolment = Field(
        default="automatic", description="`automatic`: a customer becomes a member at the first paid order."
    )
    referrals: ReferralProgramIn = Field(default_factory=ReferralProgramIn, description="Referral rewards.")
    actions: Annotated[dict[Label, Points], Field(max_length=100)] = Field(
        default={},
        examples=[{"review_written": 50}],
        description="Points for each action the workspace names, awarded by `POST /loyalty/actions`.",
    )


class ProgramOut(OutputModel):
    enabled: bool
    currency: str = Field(examples=["CNY"], description="The workspace currency the earn rate is per unit of.")
    earn_rate: MultiplierOut
    category_multipliers: dict[str, MultiplierOut]
    channel_multipliers: dict[str, MultiplierOut]
    source_multipliers: dict[str, MultiplierOut]
    pending_days: int
    expiry_months: int | None
    enrolment: Enrolment
    referrals: ReferralProgramOut
    actions: dict[str, int] = Field(examples=[{"review_written": 50}])
    version: int = Field(examples=[1], description="0 until the program is first saved.")
    updated_at: datetime | None


class LevelIn(InputModel):
    code: Label = Field(examples=["gold"])
    name: Name = Field(examples=["Gold"])
    metric: Literal["spend", "orders", "points"] = Field(description="What qualifies, counted over the window.")
    threshold: Amount = Field(
        examples=["5000"], description="At least this much: money in the workspace currency, or a whole count."
    )
    earn_multiplier: Multiplier = Field(default=Decimal(1), examples=["1.5"])
    discount_percent: Percent = Field(default=Decimal(0), examples=["5"])
    ticket_priority: TicketPriority | None = Field(
        default=None,
        description="A member's new tickets open at least at this priority (and are timed by its SLA policy).",
    )
    value_tier: Label | None = Field(
        default=None,
        examples=["A"],
        description="The internal value tier it maps to: a member's new tickets are timed by that tier's SLA "
        "policies when it ranks above the customer's own.",
    )


class LevelsIn(InputModel):
    review: Literal["yearly", "rolling"] = Field(
        default="rolling",
        description="`rolling`: up or down at every review; `yearly`: up at once, down only after a year at the level.",
    )
    window_months: int = Field(default=12, ge=1, le=60)
    levels: list[LevelIn] = Field(
        max_length=20, description="Lowest first; a member holds the highest it qualifies for."
    )

    @model_validator(mode="after")
    def _distinct_codes(self) -> Self:
        codes = [level.code for level in self.levels]
        if len(set(codes)) != len(codes):
            raise ValueError("level codes must be distinct")
        for level in self.levels:
            if level.metric != "spend" and level.threshold != level.threshold.to_integral_value():
                raise ValueError(f"level {level.code}: an {level.metric} threshold is a whole number")
        return self


class LevelOut(OutputModel):
    code: str
    name: str
    metric: Literal["spend", "orders", "points"]
    threshold: str = Field(examples=["5000.00"])
    earn_multiplier: MultiplierOut
    discount_percent: str = Field(examples=["5"])
    ticket_priority: TicketPriority | None
    value_tier: str | None


class LevelsOut(OutputModel):
    review: Literal["yearly", "rolling"]
    window_months: int
    levels: list[LevelOut]
    version: int
    updated_at: datetime | None


class ReviewOut(OutputModel):
    reviewed: int = Field(description="Members reviewed.")
    changed: int = Field(description="Members whose level changed.")


class Expiring(OutputModel):
    points: int
    at: Timestamp


class Progress(OutputModel):
    level: str = Field(examples=["gold"], description="The next level.")
    metric: Literal["spend", "orders", "points"]
    current: str = Field(examples=["3200.00"])
    threshold: str = Field(examples=["5000.00"])


class AccountOut(OutputModel):
    customer_id: uuid.UUID
    member: bool = Field(description="False: not enrolled (every figure 0).")
    balance: int = Field(description="The sum of the ledger: available, pending and not yet written-off expired.")
    available: int
    pending: int
    expiring_next: Expiring | None
    referral_code: str = Field(
        examples=["9F3A61C2D4E5B708"], description="The customer's own code, for the customers it brings in."
    )
    level: str | None
    level_since: Timestamp | None
    progress: Progress | None = Field(description="Towards the next level; null at the top or without levels.")
    enrolled_at: Timestamp | None


class EntryOut(OutputModel):
    id: uuid.UUID
    kind: EntryKind
    points: int = Field(examples=[120])
    order_id: uuid.UUID | None
    line_no: int | None
    redemption_id: uuid.UUID | None
    reason: str | None
    available_at: Timestamp | None = Field(description="Credits: when the points can be spent.")
    expires_at: Timestamp | None = Field(description="Credits: when what is left of them expires.")
    created_at: Timestamp


class AdjustmentIn(InputModel):
    customer_id: uuid.UUID
    points: SignedPoints = Field(description="Added (positive, available at once) or taken (negative, oldest first).")
    reason: MediumText = Field(examples=["Goodwill for a late delivery"], description="Required, not blank.")

    @model_validator(mode="after")
    def _not_zero(self) -> Self:
        if self.points == 0:
            raise ValueError("points must not be 0")
        return self


class AdjustmentOut(OutputModel):
    entry: EntryOut
    balance: int
    available: int


class RedemptionIn(InputModel):
    customer_id: uuid.UUID
    points: Points
    description: ShortText = Field(examples=["10 CNY off order SO-42"], description="The discount or gift.")


class RedemptionOut(OutputModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    points: int
    description: str
    status: Literal["active", "cancelled"]
    created_at: Timestamp
    cancelled_at: Timestamp | None
    version: int


class ActionIn(InputModel):
    customer_id: uuid.UUID
    action: Label = Field(examples=["review_written"], description="One of the program's `actions`.")
    reference: ShortText = Field(
        examples=["review-8841"], description="What was done (a review's id, a survey's): awarded once per action."
    )


class EnrolmentOut(OutputModel):
    customer_id: uuid.UUID
    forfeited: int = Field(examples=[320], description="The points the member held, written off by leaving.")
    left_at: Timestamp
