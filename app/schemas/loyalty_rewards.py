"""Loyalty rewards and vouchers: what points buy, and what a customer holds and spends on an order."""

import uuid
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from app.schemas.common import Description, InputModel, Label, MediumText, Name, OutputModel, Timestamp
from app.schemas.loyalty import MAX_POINTS, _whole_number
from app.schemas.order import Amount

RewardKind = Literal["gift", "discount_amount", "discount_percent"]
VoucherStatus = Literal["issued", "redeemed", "voided", "expired"]
# A reward's stock is a count of things on a shelf: more is a typing slip.
MAX_STOCK = 100_000_000
Cost = Annotated[int, Field(ge=0, le=MAX_POINTS, examples=[500]), BeforeValidator(_whole_number)]
Stock = Annotated[int, Field(ge=0, le=MAX_STOCK, examples=[1000]), BeforeValidator(_whole_number)]
Limit = Annotated[int, Field(ge=1, le=1000, examples=[1]), BeforeValidator(_whole_number)]
ValidDays = Annotated[int, Field(ge=1, le=3650, examples=[30]), BeforeValidator(_whole_number)]
# Codes are 16 characters of Crockford base32, shown in groups of four; the 64 allows spaces and dashes.
VoucherCode = Annotated[str, Field(min_length=1, max_length=64, examples=["7KQ2-M9XD-4HRT-B8WN"])]


def check_terms(kind: str | None, value: Decimal | None) -> None:
    """A gift has no value; a discount has one above zero, a percentage at most 100."""
    if kind == "gift" and value is not None:
        raise ValueError("a gift has no value")
    if kind in ("discount_amount", "discount_percent"):
        if value is None or value <= 0:
            raise ValueError(f"a {kind} needs a value above 0")
        if kind == "discount_percent" and value > 100:
            raise ValueError("a discount_percent is at most 100")


class RewardIn(InputModel):
    name: Name = Field(examples=["10 元代金券"])
    description: Description = Field(default="", examples=["满 100 减 10"])
    points_cost: Cost = Field(description="Points a redemption takes; 0 for a reward that costs none.")
    kind: RewardKind = Field(description="`gift`, or a discount: an amount off, or a percentage off.")
    value: Amount | None = Field(
        default=None,
        examples=["10.00"],
        description="discount_amount: money in the workspace currency; discount_percent: 0-100; gift: null.",
    )
    stock: Stock | None = Field(default=None, description="Vouchers left to issue; null: unlimited.")
    per_customer_limit: Limit | None = Field(
        default=None, description="Vouchers of this reward one customer may hold (voided ones not counted)."
    )
    eligible_levels: list[Label] = Field(
        default=[], max_length=20, examples=[["gold"]], description="Level codes that may redeem; empty: everyone."
    )
    valid_from: Timestamp | None = Field(default=None, description="Redeemable from; null: at once.")
    valid_until: Timestamp | None = Field(default=None, description="Redeemable until (410 after); null: no end.")
    voucher_valid_days: ValidDays | None = Field(
        default=None, description="A voucher expires this many days after it is issued; null: never."
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_terms(self.kind, self.value)
        if len(set(self.eligible_levels)) != len(self.eligible_levels):
            raise ValueError("eligible_levels must be distinct")
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class RewardPatch(InputModel):
    """Fields sent replace the stored ones (`null` clears the nullable ones); the reward as changed
    is checked as a new one is."""

    name: Name | None = None
    description: Description | None = None
    points_cost: Cost | None = None
    kind: RewardKind | None = None
    value: Amount | None = None
    stock: Stock | None = Field(default=None, description="The new count left; null: unlimited.")
    per_customer_limit: Limit | None = None
    eligible_levels: list[Label] | None = Field(default=None, max_length=20)
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    voucher_valid_days: ValidDays | None = None


class RewardOut(OutputModel):
    id: uuid.UUID
    name: str
    description: str
    points_cost: int
    kind: RewardKind
    value: str | None = Field(
        examples=["10.00"], description="discount_amount: in the currency's decimals; discount_percent: the percentage."
    )
    currency: str = Field(examples=["CNY"])
    stock: int | None
    per_customer_limit: int | None
    eligible_levels: list[str]
    valid_from: Timestamp | None
    valid_until: Timestamp | None
    voucher_valid_days: int | None
    created_at: Timestamp
    updated_at: Timestamp
    version: int


class RewardList(OutputModel):
    items: list[RewardOut]
    next_cursor: str | None


class RewardRedeemIn(InputModel):
    customer_id: uuid.UUID


class VoucherIssueIn(InputModel):
    """A voucher issued by hand, costing no points (a new-customer offer, a goodwill gesture)."""

    customer_id: uuid.UUID
    name: Name = Field(examples=["新客礼 20 元"])
    kind: RewardKind
    value: Amount | None = Field(default=None, examples=["20.00"])
    expires_at: Timestamp | None = Field(default=None, description="Null: never.")
    reason: MediumText = Field(examples=["New-customer offer"], description="Required, not blank; audited.")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_terms(self.kind, self.value)
        return self


class VoucherRedeemIn(InputModel):
    code: VoucherCode = Field(description="As shown when issued; case, spaces and dashes do not matter.")
    order_id: uuid.UUID = Field(description="An order of the voucher's customer.")


class VoucherOut(OutputModel):
    id: uuid.UUID
    customer_id: uuid.UUID
    reward_id: uuid.UUID | None
    redemption_id: uuid.UUID | None = Field(description="The points redemption that paid for it; null: none.")
    code: str | None = Field(
        examples=["7KQ2-M9XD-4HRT-B8WN"],
        description="The whole code: in the issuing response only (a replay of it included none); null elsewhere.",
    )
    code_prefix: str = Field(examples=["7KQ2"], description="The code's first four characters, kept to recognise it.")
    name: str
    kind: RewardKind
    value: str | None = Field(examples=["10.00"])
    currency: str
    points: int = Field(description="Points paid for it.")
    source: Literal["reward", "admin"]
    reason: str | None
    status: VoucherStatus = Field(description="`expired`: issued and past `expires_at`.")
    issued_at: Timestamp
    expires_at: Timestamp | None
    order_id: uuid.UUID | None
    redeemed_at: Timestamp | None
    voided_at: Timestamp | None
    version: int


class VoucherList(OutputModel):
    items: list[VoucherOut]
    next_cursor: str | None
