"""Order input and output models; money travels as decimal strings."""

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from app.schemas.common import DECIMAL_TEXT, Actor, InputModel, Label, MoneyOut, Name, NoNul, OutputModel, Timestamp

OrderStatus = Literal["paid", "refunded", "partially_refunded", "cancelled"]
# The RFM map's segments (app.services.value.customer_values), in its order.
RfmSegment = Literal[
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "Can't lose them",
    "At risk",
    "Hibernating",
    "Lost",
]
FulfilmentStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled", "returned"]
TrackingReference = Annotated[str, Field(min_length=1, max_length=128, examples=["SF1234567890"]), NoNul]
OrderSort = Literal["-ordered_at", "ordered_at"]
QuantityOut = Annotated[str, Field(pattern=DECIMAL_TEXT, examples=["2"])]


def decimal_input(integer_digits: int, minimum: int) -> tuple[Any, ...]:
    """A decimal string with at most `integer_digits` digits before the point and 4 after, or a
    JSON integer: exactly what the document says, so a client that follows it is never refused.
    A JSON float is refused: binary fractions are how money goes wrong."""
    pattern = rf"^[0-9]{{1,{integer_digits}}}(\.[0-9]{{1,4}})?$"
    text = re.compile(pattern)
    largest = 10**integer_digits - 1

    def parse(value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= largest:
            return Decimal(value)
        if isinstance(value, str) and text.fullmatch(value):
            return Decimal(value)
        raise ValueError(f'send a decimal string like "168.00": up to {integer_digits} digits, 4 decimals')

    schema = {
        "anyOf": [
            {"type": "string", "pattern": pattern},
            {"type": "integer", "minimum": minimum, "maximum": largest},
        ]
    }
    return BeforeValidator(parse), WithJsonSchema(schema, mode="validation")


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


Amount = Annotated[Decimal, *decimal_input(14, minimum=0)]
Quantity = Annotated[Decimal, *decimal_input(9, minimum=1), AfterValidator(_positive)]
ExternalId = Annotated[str, Field(min_length=1, max_length=128), NoNul]


class OrderLineIn(InputModel):
    sku: Label = Field(examples=["TEA-LJ-250"])
    product_name: Name = Field(examples=["龙井茶 250g"])
    category: Label | None = Field(default=None, examples=["tea"])
    quantity: Quantity = Field(examples=["2"])
    unit_price: Amount = Field(examples=["168.00"])


class OrderIn(InputModel):
    source: Label = Field(default="api", examples=["shopify"], description="The system the order comes from.")
    external_id: ExternalId = Field(examples=["SO-2026-0042"], description="Its id there: the upsert key.")
    customer_id: uuid.UUID
    ordered_at: Timestamp
    status: OrderStatus = "paid"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["CNY"])]
    total_amount: Amount = Field(examples=["336.00"], description="Must equal the sum of the lines.")
    refunded_amount: Amount = Field(default=Decimal(0), examples=["0"])
    channel: Label | None = Field(default=None, examples=["online"])
    store: Name | None = Field(default=None, examples=["Tmall flagship"])
    lines: list[OrderLineIn] = Field(min_length=1, max_length=500)
    fulfilment_status: FulfilmentStatus | None = Field(
        default=None,
        examples=["shipped"],
        description="Where the goods are. A new order without one starts where its `status` puts it "
        "(paid, partially refunded: `paid`; refunded: `returned`; cancelled: `cancelled`); a stored "
        "order without one keeps its own. A change follows the allowed moves of "
        "POST /orders/{order_id}/fulfilment (409 otherwise).",
    )
    tracking_reference: TrackingReference | None = Field(
        default=None, description="The carrier's reference; without one the stored reference stays."
    )


class OrderLineOut(BaseModel):
    sku: str
    product_name: str
    category: str | None
    quantity: QuantityOut
    unit_price: MoneyOut


class OrderOut(OutputModel):
    id: uuid.UUID
    source: str
    external_id: str
    customer_id: uuid.UUID
    ordered_at: datetime
    status: OrderStatus
    currency: str
    total_amount: MoneyOut
    refunded_amount: MoneyOut
    channel: str | None
    store: str | None
    lines: list[OrderLineOut]
    fulfilment_status: FulfilmentStatus
    tracking_reference: str | None = Field(examples=["SF1234567890"])
    fulfilment_updated_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class FulfilmentIn(InputModel):
    status: FulfilmentStatus = Field(examples=["shipped"])
    tracking_reference: TrackingReference | None = Field(
        default=None, description="The carrier's reference; without one the stored reference stays."
    )
    note: Annotated[str, Field(min_length=1, max_length=500), NoNul] | None = Field(
        default=None, examples=["顺丰 next-day"]
    )


class FulfilmentChangeOut(BaseModel):
    from_status: FulfilmentStatus | None = Field(description="Null on the order's first status.")
    to_status: FulfilmentStatus
    tracking_reference: str | None
    note: str | None
    actor: Actor
    at: datetime


class FulfilmentHistoryPage(BaseModel):
    items: list[FulfilmentChangeOut]
    next_cursor: str | None


class OrderFilters(InputModel):
    """Each filter given narrows the list; a list-valued one matches any of its values."""

    customer_id: list[uuid.UUID] = Field(default=[], max_length=100)
    status: list[OrderStatus] = Field(default=[], max_length=100, description="The financial status.")
    fulfilment_status: list[FulfilmentStatus] = Field(default=[], max_length=100)
    ordered_from: Timestamp | None = Field(default=None, description="Ordered at or after this instant.")
    ordered_to: Timestamp | None = Field(default=None, description="Ordered before this instant.")
    source: list[Label] = Field(default=[], max_length=100)
    channel: list[Label] = Field(default=[], max_length=100)
    store: list[Name] = Field(default=[], max_length=100)
    min_total_amount: Amount | None = Field(default=None, description="Total at least this.")
    max_total_amount: Amount | None = Field(default=None, description="Total at most this.")
    category: list[Label] = Field(default=[], max_length=100, description="Orders with a line in one of them.")


class OrderQuery(OrderFilters):
    """The filters as query parameters (a list filter repeats: `?status=paid&status=refunded`); the
    page and sort parameters are declared beside them."""

    model_config = ConfigDict(extra="ignore")


class OrderSearch(OrderFilters):
    """The filters, sort and page of GET /orders in a body."""

    sort: OrderSort = "-ordered_at"
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)


class OrderBatch(BaseModel):
    items: list[dict[str, object]] = Field(min_length=1, max_length=100)


class CategoryShare(BaseModel):
    category: str
    spend: MoneyOut
    orders: int


class CustomerValueOut(BaseModel):
    customer_id: uuid.UUID
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    order_count: int
    total_spend: MoneyOut = Field(description="Net of refunds; paid and partially refunded orders.")
    avg_order_value: MoneyOut | None
    favourite_categories: list[CategoryShare]
    avg_interval_days: float | None
    predicted_next_purchase_at: datetime | None
    recency_score: int | None = Field(description="1-5, quintiles within the workspace")
    frequency_score: int | None
    monetary_score: int | None
    rfm_segment: RfmSegment | None = Field(examples=["Champions"])
    ltv_historical: MoneyOut
    expected_purchases_365: float | None
    ltv_predicted: MoneyOut | None = Field(description="BG/NBD × Gamma-Gamma, next 365 days")
    tier: str | None
    tier_since: datetime | None
    updated_at: datetime | None = Field(description="When the figures were computed; null before the first order.")


class ValueTierIn(InputModel):
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", examples=["A"])]
    name: Label = Field(examples=["High value"])
    rank: int = Field(ge=1, le=100, description="1 is the best tier; a customer gets the best tier it qualifies for.")
    min_spend: Amount | None = Field(default=None, description="Net spend within the tier window.")
    min_orders: int | None = Field(default=None, ge=0, le=1_000_000)
    max_recency_days: int | None = Field(default=None, ge=0, le=36_500)


class ValueTierOut(OutputModel):
    id: uuid.UUID
    code: str
    name: str
    rank: int
    min_spend: MoneyOut | None
    min_orders: int | None
    max_recency_days: int | None
    version: int


class ValueTierList(BaseModel):
    items: list[ValueTierOut]
    window_days: int


class TierSettings(InputModel):
    tiers: list[ValueTierIn] = Field(min_length=1, max_length=20)
    window_days: int = Field(default=365, ge=1, le=3650)


class RecomputeOut(BaseModel):
    status: Literal["queued"]
    requested_at: datetime


class TierGroup(BaseModel):
    key: str | None = Field(description="The tier's code; null for customers without one.")
    customers: int
    revenue: MoneyOut = Field(description="Their net spend.")


class RfmGroup(BaseModel):
    key: RfmSegment | None = Field(description="null for customers without orders.")
    customers: int
    revenue: MoneyOut = Field(description="Their net spend.")


class TierMove(BaseModel):
    from_tier: str | None
    to_tier: str | None
    customers: int


class TierMigration(BaseModel):
    since: datetime
    until: datetime
    moves: list[TierMove] = Field(description="Customers whose tier at `until` differs from theirs at `since`.")


class TopCustomer(BaseModel):
    id: uuid.UUID
    code: str
    name: str
    total_spend: MoneyOut
    tier: str | None


class ValueReportOut(BaseModel):
    by_tier: list[TierGroup]
    by_rfm_segment: list[RfmGroup]
    tier_migration: TierMigration
    top_customers: list[TopCustomer] = Field(description="By net spend, best first.")
