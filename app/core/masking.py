"""Personal-data masking: one rule, a property of the caller, applied to every customer-carrying
answer (records, audit before/after values, timelines, event payloads, files).

It masks by field name wherever the field sits in a JSON value, so a payload's new place for an email
(an audit entry, an interaction's participants, an event's `data`) is masked without being listed."""

import re
from collections.abc import Callable
from typing import Any

from app.core.access import Caller, Scope


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str) -> str:
    return phone[:4] + "*" * max(len(phone) - 8, 3) + phone[-4:] if len(phone) > 8 else "***"


def mask_street(street: str) -> str:
    return "***" if street else street


_EMAIL = re.compile(r"[^\s@<>(),;]+@[^\s@<>(),;]+")
# A phone as people write it: seven or more digits, with spaces, dashes, dots or brackets between.
_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")


def mask_contact(contact: str) -> str:
    """A free-form contact ("王经理 138 0013 8000", "li@example.com"): its emails and phones masked,
    the rest (a name, a role) kept."""
    contact = _EMAIL.sub(lambda found: mask_email(found.group()), contact)
    return _PHONE.sub(lambda found: mask_phone(re.sub(r"[^\d+]", "", found.group())), contact)


# The personal fields by name: a value under one of these keys (a string, a list of them, or an
# audit entry's {"before": ..., "after": ...}) is masked wherever it appears.
_MASKS: dict[str, Callable[[str], str]] = {
    "email": mask_email,
    "emails": mask_email,
    "phone": mask_phone,
    "phones": mask_phone,
    "street": mask_street,
    "contacts": mask_contact,
}

# The names masked wherever they appear (message templates mark their variables of these names personal).
PERSONAL_FIELDS = frozenset(_MASKS)


def is_masked(ctx: Caller) -> bool:
    return not ctx.can(Scope.CUSTOMERS_PII)


def mask_for(ctx: Caller, value: Any) -> Any:
    """`value` as `ctx` may see it: unchanged for a caller with the PII scope, masked otherwise."""
    return mask_personal(value) if is_masked(ctx) else value


def mask_personal(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: True
            if key == "pii_masked"
            else _masked_field(_MASKS[key], item)
            if key in _MASKS
            else mask_personal(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_personal(item) for item in value]
    return value


def _masked_field(mask: Callable[[str], str], value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list | tuple):
        return [_masked_field(mask, item) for item in value]
    if isinstance(value, dict):
        return {key: _masked_field(mask, item) for key, item in value.items()}
    return value
