"""Field types and envelopes shared by every resource schema."""

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

T = TypeVar("T")

MAX_INT64 = 2**63 - 1

# Who did something: app.core.access.Caller's actor types.
ActorType = Literal["user", "api_key", "system", "automation"]


class Actor(BaseModel):
    """Who did something, as app.core.access.Caller.actor writes it."""

    type: ActorType = Field(examples=["user"])
    id: str | None = Field(description="The user's or API key's id, or the automation rule's; null for the system.")
    depth: int | None = Field(
        default=None, description="automation: the run's place in a chain of automation runs (1 for the first)."
    )


def reject_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


NoNul = AfterValidator(reject_nul)

_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME = re.compile(_FULL_DATE.pattern + r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339(pattern: re.Pattern[str], example: str) -> BeforeValidator:
    """Only the text the document's format names (RFC 3339): pydantic alone also takes Unix
    seconds, a date for a date-time, and a time without an offset, which means no instant."""

    def check(value: object) -> object:
        if isinstance(value, int | float) or (isinstance(value, str) and not pattern.fullmatch(value)):
            raise ValueError(f"expected an RFC 3339 value like {example}")
        return value

    return BeforeValidator(check)


def _an_instant(value: datetime) -> datetime:
    """The instant in UTC: the offset it was sent with is not kept, so whatever echoes it back (a
    create's response, an event) says `Z` like every read."""
    # 0001-01-01T00:00:00+01:00 is valid RFC 3339 but before the first instant Python can hold.
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of the range of representable times") from exc


Timestamp = Annotated[datetime, _rfc3339(_DATE_TIME, "2026-11-22T08:30:00Z"), AfterValidator(_an_instant)]
Day = Annotated[date, _rfc3339(_FULL_DATE, "2026-11-22")]

DECIMAL_TEXT = r"^-?[0-9]+(\.[0-9]+)?$"
# Written by app.core.wire.money_text: the currency's decimals, always (CNY "12900.00", JPY "12900").
MoneyOut = Annotated[
    str,
    Field(
        pattern=DECIMAL_TEXT,
        examples=["12900.00"],
        description="A decimal string in the currency's decimals (ISO 4217: CNY 2, JPY 0).",
    ),
]


def _bounded(max_length: int, min_length: int = 1) -> tuple[StringConstraints, AfterValidator]:
    """The lengths the document states, of the text as sent; then surrounding whitespace goes, and
    a text that must not be empty must not be blank either (a rule the document cannot state
    exactly: JSON Schema's and Python's ideas of whitespace differ)."""

    def strip(value: str) -> str:
        stripped = value.strip()
        if min_length and not stripped:
            raise ValueError("must not be blank")
        return stripped

    return StringConstraints(min_length=min_length, max_length=max_length), AfterValidator(strip)


Name = Annotated[str, *_bounded(200), NoNul]
ShortText = Annotated[str, *_bounded(200), NoNul]
MediumText = Annotated[str, *_bounded(300), NoNul]
PlaceName = Annotated[str, *_bounded(100), NoNul]
Label = Annotated[str, *_bounded(64), NoNul]
Tag = Annotated[str, *_bounded(64), NoNul]
Postcode = Annotated[str, *_bounded(20), NoNul]
LongText = Annotated[str, *_bounded(10_000, min_length=0), NoNul]
# Bounded by their columns: a longer one would fail in the database, not in validation.
Description = Annotated[str, *_bounded(1_000, min_length=0), NoNul]
Reason = Annotated[str, *_bounded(500, min_length=0), NoNul]
EmailText = Annotated[str, *_bounded(254), NoNul]
PhoneText = Annotated[str, *_bounded(32), NoNul]
Password = Annotated[str, StringConstraints(min_length=10, max_length=128), NoNul]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul_anywhere(self) -> Self:
        """PostgreSQL text cannot hold NUL. Typed text fields refuse it themselves (NoNul, naming
        the field); this catches every other string, dictionary keys included."""
        for name, value in self:
            if _holds_nul(value):
                raise ValueError(f"{name}: NUL characters are not allowed")
        return self


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    # Nested input models check themselves.
    return False


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    line: int | None = Field(default=None, description="In a message template: the line of the template text.")
    variable: str | None = Field(default=None, description="In a message template: the variable path refused.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["https://guanxi.dev/problems/not-found"])
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["No customer with that id."])
    instance: str | None = Field(default=None, examples=["/api/v1/customers/0190..."])
    errors: list[FieldError] | None = Field(default=None, description="On 422: each bad field.")
    existing_id: str | None = Field(default=None, description="On 409 duplicates: the record that exists.")
    field: str | None = Field(default=None, description="On a 409 duplicate customer: the field that matched.")
    current_version: int | None = Field(default=None, description="On 412: the version now current.")
    allowed: list[str] | None = Field(
        default=None, description="On a 409 refused move: the ticket statuses or lifecycle stages allowed next."
    )
    current_status: str | None = Field(default=None, description="On a 409 refused ticket transition.")
    current_stage: str | None = Field(default=None, description="On a 409 refused stage move; null: no stage.")
    members: int | None = Field(default=None, description="On a 409 team delete: its users.")
    tickets: int | None = Field(default=None, description="On a 409 team or ticket category delete: its tickets.")
    subcategories: int | None = Field(default=None, description="On a 409 ticket category delete: its children.")
    opens_at: datetime | None = Field(default=None, description="On a 409 answer to a survey not yet open.")
    closed_at: datetime | None = Field(default=None, description="On a 410 answer to a closed survey.")
    missing_scopes: list[str] | None = Field(default=None, description="On 403: the scopes the caller lacks.")
    retry_after: int | None = Field(default=None, description="On 429: seconds to wait, as in `Retry-After`.")
    consent_key: str | None = Field(default=None, description="On a 409 `consent_required`: the consent needed.")
    suppression_id: str | None = Field(default=None, description="On a 409 `suppressed`: the suppression entry.")
    available: int | None = Field(default=None, description="On a 409 `not-enough-points`: the points available.")
    cap: dict[str, int] | None = Field(default=None, description="On a 409 `frequency_capped`: `count` per `hours`.")
    allowed_with_reopen: list[str] | None = Field(
        default=None, description="On a 409 move of a won or lost opportunity: the stages open to `reopen: true`."
    )
    stages_in_use: list[str] | None = Field(
        default=None, description="On a 409 pipeline change: the stages opportunities stand in."
    )
    opportunities: int | None = Field(default=None, description="On a 409 pipeline delete: its live opportunities.")
