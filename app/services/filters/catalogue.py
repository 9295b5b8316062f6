"""The fields a filter can test, with their types and the operators each type allows.

Served at GET /api/v1/segments/fields so front-ends can build a rule editor."""

from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Integer, extract, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller
from app.models import (
    Customer,
    CustomerLeadScore,
    CustomerStage,
    CustomerValue,
    Interaction,
    LoyaltyAccount,
    LoyaltyLot,
    SurveyResponse,
    Ticket,
)
from app.schemas.order import RfmSegment
from app.schemas.segment import FilterFieldType
from app.services.customers import custom_fields

FieldType = FilterFieldType

OPERATORS: dict[FieldType, tuple[str, ...]] = {
    "string": ("eq", "neq", "in", "not_in", "contains", "starts_with", "is_null", "is_not_null"),
    "enum": ("eq", "neq", "in", "not_in", "is_null", "is_not_null"),
    "integer": ("eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "is_null", "is_not_null"),
    "number": ("eq", "neq", "gt", "gte", "lt", "lte", "between", "is_null", "is_not_null"),
    "date": (
        "eq",
        "gt",
        "gte",
        "lt",
        "lte",
        "between",
        "is_null",
        "is_not_null",
        "in_last_days",
        "more_than_days_ago",
        "birthday_within_days",
        "in_current_month",
    ),
    "datetime": (
        "gt",
        "gte",
        "lt",
        "lte",
        "between",
        "is_null",
        "is_not_null",
        "in_last_days",
        "more_than_days_ago",
        "in_current_month",
    ),
    "boolean": ("eq", "is_null", "is_not_null"),
    "tags": ("contains", "in", "not_in", "is_null", "is_not_null"),
    "id": ("eq", "neq", "in", "not_in", "is_null", "is_not_null"),
}

Source = Literal["customer", "value", "stage"]


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    label: str
    group: str
    source: Source
    column: Any
    options: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "field": self.name,
            "type": self.type,
            "label": self.label,
            "group": self.group,
            "operators": list(OPERATORS[self.type]),
            **({"options": list(self.options)} if self.options else {}),
        }


RFM_SEGMENTS: tuple[str, ...] = get_args(RfmSegment)

STAGE_AGE_DAYS: ColumnElement[Any] = extract("epoch", func.now() - CustomerStage.entered_at) / 86400
CHANNELS = ("phone", "email", "sms", "wechat", "meeting", "visit", "chat", "other")
WINDOWS = (30, 90, 365)


def _interactions(*conditions: ColumnElement[bool]) -> Any:
    return select(func.count()).where(
        Interaction.workspace_id == Customer.workspace_id,
        Interaction.customer_id == Customer.id,
        Interaction.deleted_at.is_(None),
        *conditions,
    )


LAST_INTERACTION_AT: Any = (
    select(func.max(Interaction.occurred_at))
    .where(
        Interaction.workspace_id == Customer.workspace_id,
        Interaction.customer_id == Customer.id,
        Interaction.deleted_at.is_(None),
    )
    .scalar_subquery()
)


OPEN_TICKETS: Any = (
    select(func.count())
    .where(
        Ticket.workspace_id == Customer.workspace_id,
        Ticket.customer_id == Customer.id,
        Ticket.status.in_(("new", "assigned", "in_progress", "waiting_on_customer")),
    )
    .scalar_subquery()
)
CSAT_AVERAGE: Any = (
    select(func.avg(Ticket.csat_score))
    .where(Ticket.workspace_id == Customer.workspace_id, Ticket.customer_id == Customer.id)
    .scalar_subquery()
)
LAST_NPS: Any = (
    select(SurveyResponse.score)
    .where(SurveyResponse.workspace_id == Customer.workspace_id, SurveyResponse.customer_id == Customer.id)
    .order_by(SurveyResponse.answered_at.desc())
    .limit(1)
    .scalar_subquery()
)


def _member(column: Any) -> Any:
    """A column of the customer's loyalty account: null for a customer who is not a member."""
    return (
        select(column)
        .where(LoyaltyAccount.workspace_id == Customer.workspace_id, LoyaltyAccount.customer_id == Customer.id)
        .scalar_subquery()
    )


LEAD_SCORE_FIELD = "lead_score"
# A customer without a row has a score of 0 (`app/services/segments/lead_scoring.py`).
LEAD_SCORE: Any = func.coalesce(
    select(CustomerLeadScore.score)
    .where(CustomerLeadScore.workspace_id == Customer.workspace_id, CustomerLeadScore.customer_id == Customer.id)
    .scalar_subquery(),
    # Written into the SQL: the customer list's compiled statements take no parameter for it.
    literal_column("0", Integer),
)

EXPIRY_WINDOWS = (7, 30, 90)


def _expiring_within(days: int) -> Any:
    """Points of the member's lots that expire in the next `days` days (0 when none do)."""
    return (
        select(func.coalesce(func.sum(LoyaltyLot.remaining), 0))
        .where(
            LoyaltyLot.workspace_id == Customer.workspace_id,
            LoyaltyLot.customer_id == Customer.id,
            LoyaltyLot.remaining > 0,
            LoyaltyLot.expires_at > func.now(),
            LoyaltyLot.expires_at <= func.now() + func.make_interval(0, 0, 0, days),
        )
        .scalar_subquery()
    )


def _count_in_window(days: int, channel: str | None) -> Any:
    since = func.now() - func.make_interval(0, 0, 0, days)
    conditions = [Interaction.occurred_at >= since, *([Interaction.channel == channel] if channel else [])]
    return _interactions(*conditions).scalar_subquery()


def _c(name: str, type_: FieldType, label: str, group: str, column: Any, options: tuple[str, ...] = ()) -> Field:
    return Field(name, type_, label, group, "customer", column, options)


def _v(name: str, type_: FieldType, label: str, column: Any, options: tuple[str, ...] = ()) -> Field:
    return Field(f"value.{name}", type_, label, "value", "value", column, options)


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        _c("name", "string", "Name", "profile", Customer.name),
        _c("code", "string", "Customer code", "profile", Customer.code),
        _c("kind", "enum", "Kind", "profile", Customer.kind, ("individual", "company")),
        _c("gender", "enum", "Gender", "profile", Customer.gender, ("male", "female", "other", "unknown")),
        _c("company", "string", "Company", "profile", Customer.company),
        _c("title", "string", "Title", "profile", Customer.title),
        _c("source", "string", "Source channel", "profile", Customer.source),
        _c("tags", "tags", "Tags", "profile", Customer.tags),
        _c("owner_id", "id", "Owner", "profile", Customer.owner_id),
        _c("birthday", "date", "Birthday", "profile", Customer.birthday),
        _c("created_at", "datetime", "Created", "profile", Customer.created_at),
        _c("country", "string", "Country", "address", Customer.country),
        _c("province", "string", "Province", "address", Customer.province),
        _c("city", "string", "City", "address", Customer.city),
        _c("district", "string", "District", "address", Customer.district),
        _c("postcode", "string", "Postcode", "address", Customer.postcode),
        *(
            _c(
                f"consent.{channel}",
                "boolean",
                f"Consent: {channel}",
                "consent",
                Customer.consent[channel].as_boolean(),
            )
            for channel in ("email", "sms", "phone", "wechat", "post")
        ),
        _v("total_spend", "number", "Total spend (net)", CustomerValue.total_spend),
        _v("order_count", "integer", "Orders", CustomerValue.order_count),
        _v("avg_order_value", "number", "Average order value", CustomerValue.avg_order_value),
        _v("first_purchase_at", "datetime", "First purchase", CustomerValue.first_purchase_at),
        _v("last_purchase_at", "datetime", "Last purchase", CustomerValue.last_purchase_at),
        _v("recency_score", "integer", "Recency score (1-5)", CustomerValue.recency_score),
        _v("frequency_score", "integer", "Frequency score (1-5)", CustomerValue.frequency_score),
        _v("monetary_score", "integer", "Monetary score (1-5)", CustomerValue.monetary_score),
        _v("rfm_segment", "enum", "RFM segment", CustomerValue.rfm_segment, RFM_SEGMENTS),
        _v("tier", "string", "Value tier", CustomerValue.tier),
        _v("ltv_predicted", "number", "Predicted lifetime value (365 days)", CustomerValue.ltv_predicted),
        Field("activity.last_interaction_at", "datetime", "Last contact", "activity", "customer", LAST_INTERACTION_AT),
        *(
            Field(
                f"activity.interactions_{days}d" + (f".{channel}" if channel else ""),
                "integer",
                f"Contacts in the last {days} days" + (f" by {channel}" if channel else ""),
                "activity",
                "customer",
                _count_in_window(days, channel),
            )
            for days in WINDOWS
            for channel in (None, *CHANNELS)
        ),
        Field("activity.open_tickets", "integer", "Open tickets", "activity", "customer", OPEN_TICKETS),
        Field("activity.csat_average", "number", "Average CSAT (1-5)", "activity", "customer", CSAT_AVERAGE),
        Field("activity.nps_score", "integer", "Latest NPS answer (0-10)", "activity", "customer", LAST_NPS),
        Field("loyalty.level", "string", "Loyalty level", "loyalty", "customer", _member(LoyaltyAccount.level)),
        Field(
            "loyalty.balance",
            "integer",
            "Loyalty points balance",
            "loyalty",
            "customer",
            _member(LoyaltyAccount.balance),
        ),
        *(
            Field(
                f"loyalty.expiring_within_{days}d",
                "integer",
                f"Loyalty points expiring within {days} days",
                "loyalty",
                "customer",
                _expiring_within(days),
            )
            for days in EXPIRY_WINDOWS
        ),
        Field(LEAD_SCORE_FIELD, "integer", "Lead score", "sales", "customer", LEAD_SCORE),
        Field("lifecycle.stage", "string", "Lifecycle stage", "lifecycle", "stage", CustomerStage.stage),
        Field(
            "lifecycle.stage_age_days",
            "number",
            "Days in the current stage",
            "lifecycle",
            "stage",
            STAGE_AGE_DAYS,
        ),
    )
}


@dataclass(frozen=True)
class RelationField:
    """A customer's related customers of one kind, tested as a set of ids: `eq`/`in` (related to
    one of them), `neq`/`not_in` (to none of them), `is_not_null` (to anyone), `is_null` (to nobody)."""

    name: str
    label: str
    kind: str
    direction: Literal["outgoing", "incoming", "mutual"]

    def describe(self) -> dict[str, Any]:
        return {
            "field": self.name,
            "type": "id",
            "label": self.label,
            "group": "relations",
            "operators": list(OPERATORS["id"]),
        }


RELATION_FIELDS: dict[str, RelationField] = {
    f.name: f
    for f in (
        RelationField("relation.contact_of", "Contact of (company)", "contact_of", "outgoing"),
        RelationField("relation.has_contact", "Has as contact (person)", "contact_of", "incoming"),
        RelationField("relation.subsidiary_of", "Subsidiary of (parent company)", "subsidiary_of", "outgoing"),
        RelationField("relation.parent_of", "Parent company of", "subsidiary_of", "incoming"),
        RelationField("relation.referred_by", "Referred by", "referred_by", "outgoing"),
        RelationField("relation.referrer_of", "Referred (customers)", "referred_by", "incoming"),
        RelationField("relation.family_of", "Family of", "family_of", "mutual"),
    )
}

# Membership of other segments: `{"field": "segment", "op": "in", "value": [segment ids]}`.
SEGMENT_FIELD = "segment"
CUSTOM_PREFIX = "custom."

# The filter type each custom field type is tested as.
_CUSTOM_FIELD_TYPES: dict[str, FieldType] = {
    "text": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "date": "date",
    "select": "enum",
    "multiselect": "tags",
}


async def describe_fields(session: AsyncSession, ctx: Caller) -> list[dict[str, Any]]:
    """Every field a filter can test, the workspace's custom fields included, with its operators."""
    items = [f.describe() for f in FIELDS.values()] + [f.describe() for f in RELATION_FIELDS.values()]
    for definition in await custom_fields.list_all(session, ctx):
        type_ = _CUSTOM_FIELD_TYPES[definition.type]
        items.append(
            {
                "field": CUSTOM_PREFIX + definition.key,
                "type": type_,
                "label": definition.label,
                "group": "custom",
                "operators": list(OPERATORS[type_]),
                "options": definition.rules.get("options"),
            }
        )
    return items
