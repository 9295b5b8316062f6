"""The customer as the API shows it, with personal data masked for callers without the PII scope.

The shape is the table's columns, the address ones nested under `address` (the contract's
AddressOut): `present` builds it in Python, `customer_json_sql` in SQL for the set-based writers,
both from the same column list, so the API's events and an import's carry the same payload."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app.core.access import Caller, system_caller
from app.core.jsonable import jsonable_sql, to_jsonable
from app.core.masking import is_masked, mask_personal
from app.models import Customer
from app.schemas.customer import AddressOut

ADDRESS_FIELDS = tuple(AddressOut.model_fields)
# Every column a reader needs, the id first; the search columns and `workspace_id` stay inside the service.
CUSTOMER_COLUMNS = tuple(
    getattr(Customer, column.key)
    for column in sorted(Customer.__table__.columns, key=lambda column: not column.primary_key)
    if column.key not in ("workspace_id", "search_text", "search_bigrams")
)
COLUMN_NAMES = tuple(column.key for column in CUSTOMER_COLUMNS)
# The fields shown before and after the nested address, in the table's order.
_BEFORE_ADDRESS = COLUMN_NAMES[: COLUMN_NAMES.index(ADDRESS_FIELDS[0])]
_AFTER_ADDRESS = tuple(name for name in COLUMN_NAMES[len(_BEFORE_ADDRESS) :] if name not in ADDRESS_FIELDS)


def columns_of(customer: Customer) -> dict[str, Any]:
    return {name: getattr(customer, name) for name in COLUMN_NAMES}


def _shape_from_columns() -> Callable[[Mapping[Any, Any]], dict[str, Any]]:
    """The API shape written out once from the column list, as one dict display: it runs for every
    customer of every page, and a display costs about half of building the dict field by field,
    while the columns stay named in one place."""
    before = "".join(f"{name!r}: row[{name!r}], " for name in _BEFORE_ADDRESS)
    address = "".join(f"{name!r}: row[{name!r}], " for name in ADDRESS_FIELDS)
    after = "".join(f"{name!r}: row[{name!r}], " for name in _AFTER_ADDRESS)
    source = f"lambda row: {{{before}'address': {{{address}}}, {after}}}"
    shape: Callable[[Mapping[Any, Any]], dict[str, Any]] = eval(source, {})
    return shape


_shape = _shape_from_columns()


def present(record: Mapping[Any, Any] | Customer, ctx: Caller) -> dict[str, Any]:
    """The API shape of a customer: from a row of CUSTOMER_COLUMNS (any mapping) or a Customer."""
    shown = _shape(columns_of(record) if isinstance(record, Customer) else record)
    masked = is_masked(ctx)
    if masked:
        shown = mask_personal(shown)
    shown["pii_masked"] = masked
    return shown


def present_page(rows: Iterable[Mapping[str, Any]], next_cursor: str | None, ctx: Caller) -> dict[str, Any]:
    """A page of customers as the list answers it, from the route or the read lane."""
    return {"items": [present(row, ctx) for row in rows], "next_cursor": next_cursor}


def event_data(customer: Customer) -> dict[str, Any]:
    """Event payloads go to trusted partner systems: unmasked, JSON-ready, in the catalogue's shape
    (CustomerOut, `pii_masked` false)."""
    return dict(to_jsonable(present(customer, system_caller(customer.workspace_id))))


def customer_json_sql(alias: str) -> str:
    """SQL for `event_data` of the customers row `alias` (a jsonb object)."""

    def pairs(names: tuple[str, ...]) -> str:
        return ", ".join(
            f"'{name}', {jsonable_sql(f'{alias}.{name}', Customer.__table__.c[name].type)}" for name in names
        )

    return (
        f"jsonb_build_object({pairs(_BEFORE_ADDRESS)}, 'address', jsonb_build_object({pairs(ADDRESS_FIELDS)}), "
        f"{pairs(_AFTER_ADDRESS)}, 'pii_masked', false)"
    )
