"""What the interaction and order imports share: a row's mapped cells, the customer a row names
(by code, email, phone or id, among the customers the uploader may see), the uploader as the
caller, schema errors as report entries, and COPY into a staging table inside the session's
transaction."""

import csv
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import ValidationError
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Caller, Role, system_caller, user_caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.models import Customer, CustomerIdentity, ImportJob, ImportRowError, User
from app.schemas.customer import normalise_email, normalise_phone
from app.services.bulk import imports, scratch
from app.services.bulk.csv_export import read_cell
from app.services.customers.visibility import visible_customer_clauses
from app.services.events.audit import changes_sql as changes_sql

CUSTOMER_KEYS = ("customer_code", "customer_email", "customer_phone", "customer_id")
_KEY_NAMES = {"customer_code": "code", "customer_email": "email", "customer_phone": "phone", "customer_id": "id"}
Problem = tuple[int, str, str]  # row number, file column, reason
Loc = tuple[int | str, ...]


def check_mapping(mapping: Mapping[str, str], fields: Iterable[str], required: Iterable[str]) -> None:
    """File column → field: every field known and mapped once, a customer key and the required fields present."""
    known = set(fields)
    columns: dict[str, str] = {}
    for column, target in mapping.items():
        if target not in known:
            raise ValidationFailed(
                f"Column '{column}' maps to unknown field '{target}'.", loc=["body", "mapping", column]
            )
        if target in columns:
            raise ValidationFailed(
                f"Columns '{columns[target]}' and '{column}' both map to {target}.", loc=["body", "mapping", column]
            )
        columns[target] = column
    if not columns.keys() & set(CUSTOMER_KEYS):
        raise ValidationFailed(
            "Map a column to customer_code, customer_email, customer_phone or customer_id.", loc=["body", "mapping"]
        )
    missing = [field for field in required if field not in columns]
    if missing:
        raise ValidationFailed(f"Map a column to each of: {', '.join(missing)}.", loc=["body", "mapping"])


def columns_of(mapping: Mapping[str, str]) -> dict[str, str]:
    """Field → the file column mapped to it."""
    return {field: column for column, field in mapping.items()}


def read_rows(job: ImportJob) -> Iterator[tuple[int, dict[str, str]]]:
    """The file's rows. A CSV the csv module cannot read on (a cell over its size limit) fails the
    job with the row it stopped at, which the job engine records, rather than escaping it."""
    number = 1
    try:
        for number, cells in imports.read_rows(scratch.local_copy(job), job.file_format, job.encoding):
            yield number, cells
    except csv.Error as exc:
        raise ValueError(f"row {number + 1}: {exc}") from exc


def field_values(
    cells: Mapping[str, str], mapping: Mapping[str, str], number: int
) -> tuple[dict[str, str], list[Problem]]:
    """Field → trimmed cell, for the mapped cells that hold something; a NUL character rejects its cell."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for column, field in mapping.items():
        raw = read_cell(cells.get(column) or "").strip()
        if "\x00" in raw:
            problems.append((number, column, "contains a NUL character"))
        elif raw:
            values[field] = raw
    return values, problems


def _customer_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError("not a customer id (a UUID)") from exc


_NORMALISE: dict[str, Callable[[str], str]] = {
    "customer_code": str,
    "customer_email": normalise_email,
    "customer_phone": normalise_phone,
    "customer_id": _customer_id,
}


def customer_refs(
    values: Mapping[str, str], columns: Mapping[str, str], number: int, rows: Mapping[str, int] | None = None
) -> tuple[dict[str, str], list[Problem]]:
    """The row's customer keys, normalised as the API stores them (E.164 phones, lower-cased emails).
    `rows` says where each value came from when they are gathered from several rows."""
    refs: dict[str, str] = {}
    problems: list[Problem] = []
    for key in CUSTOMER_KEYS:
        if key in values:
            try:
                refs[key] = _NORMALISE[key](values[key])
            except ValueError as exc:
                problems.append(((rows or {}).get(key, number), columns[key], str(exc)))
    if not refs and not problems:
        column = next(columns[key] for key in CUSTOMER_KEYS if key in columns)
        problems.append((number, column, "names no customer: give its code, email, phone or id"))
    return refs, problems


async def find_customers(
    session: AsyncSession, ctx: Caller, refs: Iterable[Mapping[str, str]]
) -> dict[tuple[str, str], uuid.UUID]:
    """(key, value) → customer, for the keys that name a live customer the caller may see: at most
    one statement per kind of key, whatever the number of rows."""
    wanted: dict[str, set[str]] = {key: set() for key in CUSTOMER_KEYS}
    for ref in refs:
        for key, value in ref.items():
            wanted[key].add(value)
    visible = visible_customer_clauses(ctx)
    found: dict[tuple[str, str], uuid.UUID] = {}
    if wanted["customer_code"]:
        rows = await session.execute(
            select(Customer.code, Customer.id).where(*visible, Customer.code.in_(wanted["customer_code"]))
        )
        found.update((("customer_code", code), customer) for code, customer in rows)
    if wanted["customer_id"]:
        ids = await session.scalars(
            select(Customer.id).where(*visible, Customer.id.in_([uuid.UUID(v) for v in wanted["customer_id"]]))
        )
        found.update((("customer_id", str(customer)), customer) for customer in ids)
    for key in ("customer_email", "customer_phone"):
        if wanted[key]:
            rows = await session.execute(
                select(CustomerIdentity.value, Customer.id)
                .join(
                    Customer,
                    (Customer.workspace_id == CustomerIdentity.workspace_id)
                    & (Customer.id == CustomerIdentity.customer_id),
                )
                .where(
                    *visible,
                    CustomerIdentity.workspace_id == ctx.workspace_id,
                    CustomerIdentity.kind == _KEY_NAMES[key],
                    CustomerIdentity.value.in_(wanted[key]),
                )
            )
            found.update(((key, value), customer) for value, customer in rows)
    return found


def customer_of(
    refs: Mapping[str, str],
    found: Mapping[tuple[str, str], uuid.UUID],
    columns: Mapping[str, str],
    number: int,
    rows: Mapping[str, int] | None = None,
) -> tuple[uuid.UUID | None, list[Problem]]:
    """The one customer every key of the row names. A customer the caller may not see is not found,
    in the same words as one that does not exist."""
    first: tuple[str, uuid.UUID] | None = None
    for key, value in refs.items():
        customer = found.get((key, value))
        at = (rows or {}).get(key, number)
        if customer is None:
            return None, [(at, columns[key], f"no customer with {_KEY_NAMES[key]} {value}")]
        if first is None:
            first = (key, customer)
        elif customer != first[1]:
            return None, [(at, columns[key], f"names another customer than column '{columns[first[0]]}'")]
    return (first[1] if first else None), []


def schema_problems(
    errors: Iterable[Mapping[str, Any]], where: Callable[[Loc], tuple[int, str]], *, skip: str = "customer_id"
) -> list[Problem]:
    """Pydantic (or ValidationFailed) errors as (row, column, reason). Errors on `skip`, a field the
    import fills itself, are left out: a row without it has already been reported for that."""
    problems: list[Problem] = []
    for error in errors:
        loc: Loc = tuple(part for part in error["loc"] if part != "body")
        if loc and loc[0] == skip:
            continue
        number, column = where(loc)
        problems.append((number, column, str(error["msg"])))
    return problems


def validation_errors(exc: ValidationError | ValidationFailed) -> list[Mapping[str, Any]]:
    if isinstance(exc, ValidationError):
        return list(exc.errors())
    return list(exc.extra["errors"])


def wall_clock(value: object, zone: ZoneInfo) -> object:
    """A time cell as an instant: one written without an offset (`2026-03-01 10:00`, or a spreadsheet's
    date-and-time cell) is the workspace's wall-clock time, as a spreadsheet means it. Text that is
    no time at all is left for the schema to refuse."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value


async def uploader(session: AsyncSession, job: ImportJob) -> Caller:
    """Who uploaded the file, so the rows reach only the customers they may see. Jobs queued by API
    keys (which see the whole workspace) and by the command line run as the workspace."""
    if job.created_by is None:
        return system_caller(job.workspace_id)
    user = await session.scalar(select(User).where(User.workspace_id == job.workspace_id, User.id == job.created_by))
    if user is None or not user.is_active:
        raise ValueError("the user who uploaded the file is no longer active")
    return user_caller(workspace_id=job.workspace_id, user_id=user.id, role=Role(user.role), team_id=user.team_id)


async def record_problems(session: AsyncSession, job: ImportJob, problems: Sequence[Problem]) -> None:
    if problems:
        await session.execute(
            insert(ImportRowError),
            [
                {
                    "workspace_id": job.workspace_id,
                    "id": new_id(),
                    "job_id": job.id,
                    "row_number": number,
                    "column": column[:200],
                    "reason": reason[:500],
                }
                for number, column, reason in problems
            ],
        )


async def cancel_requested(session: AsyncSession, job: ImportJob) -> bool:
    return bool(
        await session.scalar(
            select(ImportJob.cancel_requested).where(ImportJob.workspace_id == job.workspace_id, ImportJob.id == job.id)
        )
    )


async def stage(
    session: AsyncSession,
    table: str,
    columns: Sequence[tuple[str, str]],
    records: Sequence[tuple[Any, ...]],
    *,
    extra: Sequence[str] = (),
) -> None:
    """Create the transaction's staging table (the copied `columns`, then `extra` ones the merge
    fills) and COPY the records into it. The CREATE goes through the session first: that opens the
    transaction the driver's COPY then runs in."""
    definitions = [f"{name} {kind}" for name, kind in columns] + list(extra)
    await session.execute(text(f"CREATE TEMP TABLE {table} ({', '.join(definitions)}) ON COMMIT DROP"))
    connection = await session.connection()
    driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
    await driver.copy_records_to_table(table, records=records, columns=[name for name, _ in columns])


def as_text(expression: str) -> str:
    """SQL for a value the API writes as a string in JSON (decimals)."""
    return f"({expression})::text"


def as_is(expression: str) -> str:
    return expression
