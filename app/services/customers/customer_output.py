"""The customer as the API shows it, with personal data masked for callers without the PII scope."""

from collections.abc import Mapping
from typing import Any

from app.core.access import Caller, Scope, system_caller
from app.core.jsonable import to_jsonable
from app.models import Customer

# Every column a reader needs; `search_text` and `workspace_id` stay inside the service.
CUSTOMER_COLUMNS = tuple(
    getattr(Customer, name)
    for name in (
        "id",
        "code",
        "kind",
        "name",
        "emails",
        "phones",
        "company",
        "title",
        "gender",
        "birthday",
        "country",
        "province",
        "city",
        "district",
        "street",
        "postcode",
        "source",
        "tags",
        "owner_id",
        "preferences",
        "custom_fields",
        "consent",
        "notes",
        "created_at",
        "updated_at",
        "deleted_at",
        "version",
    )
)


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str) -> str:
    return phone[:4] + "*" * max(len(phone) - 8, 3) + phone[-4:] if len(phone) > 8 else "***"


COLUMN_NAMES = tuple(column.key for column in CUSTOMER_COLUMNS)


def columns_of(customer: Customer) -> dict[str, Any]:
    return {name: getattr(customer, name) for name in COLUMN_NAMES}


def present(record: Mapping[Any, Any] | Customer, ctx: Caller) -> dict[str, Any]:
    """The API shape of a customer: from a row of CUSTOMER_COLUMNS (any mapping) or a Customer."""
    row = columns_of(record) if isinstance(record, Customer) else record
    masked = not ctx.can(Scope.CUSTOMERS_PII)
    emails: list[str] = row["emails"]
    phones: list[str] = row["phones"]
    street = row["street"]
    return {
        "id": row["id"],
        "code": row["code"],
        "kind": row["kind"],
        "name": row["name"],
        "emails": [mask_email(e) for e in emails] if masked else emails,
        "phones": [mask_phone(p) for p in phones] if masked else phones,
        "company": row["company"],
        "title": row["title"],
        "gender": row["gender"],
        "birthday": row["birthday"],
        "address": {
            "country": row["country"],
            "province": row["province"],
            "city": row["city"],
            "district": row["district"],
            "street": "***" if masked and street else street,
            "postcode": row["postcode"],
        },
        "source": row["source"],
        "tags": row["tags"],
        "owner_id": row["owner_id"],
        "preferences": row["preferences"],
        "custom_fields": row["custom_fields"],
        "consent": row["consent"],
        "notes": row["notes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deleted_at": row["deleted_at"],
        "version": row["version"],
        "pii_masked": masked,
    }


def event_data(customer: Customer) -> dict[str, Any]:
    """Event payloads go to trusted partner systems: unmasked, JSON-ready."""
    data = present(customer, system_caller(customer.workspace_id))
    data.pop("pii_masked")
    return dict(to_jsonable(data))
