"""The customer as the API shows it, with personal data masked for callers without the PII scope."""

from typing import Any

from app.access import Caller, Scope, system_caller
from app.jsonable import to_jsonable
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


def present(record: Any, ctx: Caller) -> dict[str, Any]:
    """`record` is a Customer or a row of CUSTOMER_COLUMNS; both expose the columns as attributes."""
    masked = not ctx.can(Scope.CUSTOMERS_PII)
    return {
        "id": record.id,
        "code": record.code,
        "kind": record.kind,
        "name": record.name,
        "emails": [mask_email(e) for e in record.emails] if masked else record.emails,
        "phones": [mask_phone(p) for p in record.phones] if masked else record.phones,
        "company": record.company,
        "title": record.title,
        "gender": record.gender,
        "birthday": record.birthday,
        "address": {
            "country": record.country,
            "province": record.province,
            "city": record.city,
            "district": record.district,
            "street": "***" if masked and record.street else record.street,
            "postcode": record.postcode,
        },
        "source": record.source,
        "tags": record.tags,
        "owner_id": record.owner_id,
        "preferences": record.preferences,
        "custom_fields": record.custom_fields,
        "consent": record.consent,
        "notes": record.notes,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "deleted_at": record.deleted_at,
        "version": record.version,
        "pii_masked": masked,
    }


def event_data(customer: Customer) -> dict[str, Any]:
    """Event payloads go to trusted partner systems: unmasked, JSON-ready."""
    data = present(customer, system_caller(customer.workspace_id))
    data.pop("pii_masked")
    return dict(to_jsonable(data))
