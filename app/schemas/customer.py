"""Customer input and output models."""

import functools
import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from pydantic import AfterValidator, BaseModel, Field, field_validator

from app.core.settings import get_settings
from app.schemas.common import (
    Actor,
    Day,
    EmailText,
    InputModel,
    Label,
    LongText,
    MediumText,
    Name,
    OutputModel,
    Page,
    PhoneText,
    PlaceName,
    Postcode,
    ShortText,
    Tag,
)

MAX_CONTACT_POINTS = 10
MAX_TAGS = 50
MAX_JSON_BYTES = 16_384

CustomerKind = Literal["individual", "company"]
Gender = Literal["male", "female", "other", "unknown"]


def normalise_email(value: str) -> str:
    """email-validator's normalised address, lower-cased. Most addresses are an ASCII dot-atom before
    the @ and a plain host name after it: for those the library is asked once per domain (its verdict
    on a domain does not depend on the part before the @), and the result is the same as its own."""
    local, at, domain = value.partition("@")
    if at and value.isascii() and DOT_ATOM_TEXT.match(local) and _HOST_NAME.match(domain):
        checked = _checked_domain(domain)
        if checked is not None:
            normalised_domain, ascii_domain = checked
            address = f"{local}@{normalised_domain}"
            # The library's length checks: as given, normalised, and with the IDNA ASCII domain.
            if max(len(value), len(address.encode()), len(local) + 1 + len(ascii_domain)) <= EMAIL_MAX_LENGTH:
                return address.lower()
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc
    return result.normalized.lower()


_HOST_NAME = re.compile(r"[A-Za-z0-9.-]+\Z")


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> tuple[str, str] | None:
    """(normalised, IDNA ASCII) form of a domain email-validator accepts; None when it refuses it."""
    try:
        result = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.domain, result.ascii_domain


# A mainland mobile number as people write it: 11 digits from 13 to 19, optionally after +86, grouped
# 3-4-4 with spaces or hyphens. Not 11/12/179, which begin carrier and dial-out prefixes in China.
_CN_MOBILE = re.compile(r"(\+86[ -]?)?(1(?:[3-689]\d|7[0-8]))[ -]?(\d{4})[ -]?(\d{4})\Z")


def normalise_phone(value: str) -> str:
    """E.164, read with the configured default region when the number has no country code.
    A mainland mobile written as above skips phonenumbers' parser, whose result for it is known
    (country code 86, the 11 digits), and only asks it whether the number is valid."""
    mobile = _CN_MOBILE.match(value.strip())
    if mobile and (mobile[1] or get_settings().default_phone_region == "CN"):
        digits = mobile[2] + mobile[3] + mobile[4]
        if phonenumbers.is_valid_number(phonenumbers.PhoneNumber(country_code=86, national_number=int(digits))):
            return "+86" + digits
    try:
        number = phonenumbers.parse(value, get_settings().default_phone_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


Email = Annotated[EmailText, AfterValidator(normalise_email)]
Phone = Annotated[PhoneText, AfterValidator(normalise_phone)]


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    _reject_nul_deep(value)
    if len(orjson.dumps(value)) > MAX_JSON_BYTES:
        raise ValueError(f"must serialise to at most {MAX_JSON_BYTES} bytes")
    return value


def _reject_nul_deep(value: Any) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_nul_deep(key)
            _reject_nul_deep(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul_deep(item)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        raise ValueError("integers must fit in 64 bits")


JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_json)]


class Address(InputModel):
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", examples=["CN"])] | None = None
    province: PlaceName | None = Field(default=None, examples=["广东省"])
    city: PlaceName | None = Field(default=None, examples=["深圳市"])
    district: PlaceName | None = Field(default=None, examples=["南山区"])
    street: MediumText | None = Field(default=None, examples=["科技园路 1 号"])
    postcode: Postcode | None = Field(default=None, examples=["518000"])


class Consent(InputModel):
    """Marketing consent by channel; null means not asked."""

    email: bool | None = None
    sms: bool | None = None
    phone: bool | None = None
    wechat: bool | None = None
    post: bool | None = None


class CustomerFields(InputModel):
    name: Name | None = Field(default=None, examples=["张伟"])
    kind: CustomerKind | None = Field(default=None, examples=["individual"])
    emails: list[Email] | None = Field(
        default=None, max_length=MAX_CONTACT_POINTS, examples=[["zhang.wei@example.com"]]
    )
    phones: list[Phone] | None = Field(default=None, max_length=MAX_CONTACT_POINTS, examples=[["+86 138 0013 8000"]])
    company: ShortText | None = Field(default=None, examples=["深圳星河贸易有限公司"])
    title: ShortText | None = Field(default=None, examples=["采购经理"])
    gender: Gender | None = Field(default=None, examples=["male"])
    birthday: Day | None = Field(default=None, examples=["1988-04-12"])
    address: Address | None = None
    source: Label | None = Field(default=None, examples=["trade_show"])
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS, examples=[["vip", "wholesale"]])
    owner_id: uuid.UUID | None = Field(default=None, description="The user who owns the relationship.")
    preferences: JsonObject | None = Field(default=None, examples=[{"contact_hours": "evening"}])
    custom_fields: JsonObject | None = Field(default=None, examples=[{"vip_level": "gold"}])
    consent: Consent | None = None
    notes: LongText | None = None

    @field_validator("birthday")
    @classmethod
    def _birthday_not_in_future(cls, value: date | None) -> date | None:
        if value is not None and (value > date.today() or value.year < 1900):
            raise ValueError("must be between 1900-01-01 and today")
        return value

    @field_validator("emails", "phones", "tags")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(value)) if value is not None else None


class CustomerCreate(CustomerFields):
    name: Name = Field(examples=["张伟"])
    kind: CustomerKind = Field(default="individual", examples=["individual"])
    referral_code: Label | None = Field(
        default=None,
        examples=["9F3A61C2D4E5B708"],
        description="Another customer's referral code (`GET /customers/{id}/loyalty`): links this customer to "
        "that referrer (`GET /referrals`). A code no customer has is a 422.",
    )


class CustomerPatch(CustomerFields):
    """Only the fields sent are changed; null clears a field."""


class AddressOut(BaseModel):
    country: str | None
    province: str | None
    city: str | None
    district: str | None
    street: str | None
    postcode: str | None


class CustomerOut(OutputModel):
    id: uuid.UUID
    code: str = Field(examples=["KH-2026-000042"])
    kind: CustomerKind
    name: str = Field(examples=["张伟"])
    emails: list[str] = Field(examples=[["zhang.wei@example.com"]])
    phones: list[str] = Field(examples=[["+8613800138000"]])
    company: str | None
    title: str | None
    gender: Gender | None
    birthday: date | None
    address: AddressOut
    source: str | None
    tags: list[str]
    owner_id: uuid.UUID | None
    preferences: dict[str, Any]
    custom_fields: dict[str, Any]
    consent: dict[str, bool | None]
    notes: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    version: int = Field(examples=[3], description="Also sent as the ETag.")
    pii_masked: bool = Field(description="True when emails, phones and street are masked for this caller.")


class CustomerPage(BaseModel):
    items: list[CustomerOut]
    next_cursor: str | None


class BatchCreate(BaseModel):
    """Items are validated one by one, so one bad item fails alone."""

    items: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class BatchUpdateItem(InputModel):
    id: uuid.UUID
    version: int = Field(ge=1, le=2**31 - 1, description="The version (ETag) the change is based on.")
    patch: dict[str, Any]


class BatchUpdate(BaseModel):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=100)


class BatchResult(BaseModel):
    index: int
    status: int = Field(examples=[201])
    id: uuid.UUID | None = None
    version: int | None = None
    problem: dict[str, Any] | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]
    succeeded: int
    failed: int


class AuditEntryOut(BaseModel):
    id: uuid.UUID
    entity_type: str = Field(examples=["customer"], description="The kind of record the entry is about.")
    entity_id: uuid.UUID
    action: str = Field(examples=["updated"])
    actor: Actor
    changes: dict[str, Any] = Field(examples=[{"name": {"before": "张伟", "after": "张伟明"}}])
    occurred_at: datetime


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class MergeIn(InputModel):
    absorb: list[uuid.UUID] = Field(min_length=1, max_length=10, description="Customers to merge into this one.")
    fields: dict[str, uuid.UUID] = Field(
        default_factory=dict, description='Field → the customer whose value to keep, e.g. {"title": "…"}'
    )


DuplicateReason = Literal["similar name", "same company", "same city"]


class DuplicateGroup(BaseModel):
    customer_ids: list[uuid.UUID] = Field(min_length=2)
    score: float = Field(ge=0, le=1, description="The best name similarity in the group (trigrams), 0-1.")
    reasons: list[DuplicateReason]


class DuplicatePage(Page[DuplicateGroup]):
    """Best score first; one page (`next_cursor` is null)."""


class MergeOut(BaseModel):
    merge_id: uuid.UUID = Field(description="Undo with POST /customers/merges/{merge_id}/undo within 24 hours.")
    survivor_id: uuid.UUID
    absorbed_ids: list[uuid.UUID]


class MergeUndone(BaseModel):
    merge_id: uuid.UUID
    undone_at: datetime
