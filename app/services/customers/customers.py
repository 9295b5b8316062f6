"""Customer use cases: create, read, change, soft delete and restore, each one transaction."""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast, get_args

import asyncpg
from sqlalchemy import ARRAY, ColumnElement, Text, bindparam, delete, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, idempotency
from app.core.access import Caller, Visibility
from app.core.errors import Conflict, DuplicateCustomer, Forbidden, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.prepared import PreparedStatement
from app.core.versions import check_version
from app.core.wire import utc_text
from app.models import Customer, CustomerIdentity, CustomFieldDefinition, User, Workspace
from app.schemas.customer import CustomerCreate, CustomerFields, CustomerPatch
from app.services.customers import custom_fields, customer_codes, customer_insert
from app.services.customers.customer_output import ADDRESS_FIELDS, CUSTOMER_COLUMNS, event_data
from app.services.customers.visibility import (
    effective_visibility,
    scope_params,
    visible_customer_clauses,
    visible_customer_template,
)
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, given
from app.services.loyalty import referrals

# The fields a create or PATCH sets as they are sent; address, consent and custom fields have rules of their own.
PLAIN_FIELDS = tuple(
    name for name in CustomerFields.model_fields if name not in ("address", "consent", "custom_fields")
)
# The list and object columns among them, which hold an empty value rather than null.
_EMPTY_WHEN_NULL: dict[str, Callable[[], Any]] = {
    column.key: list if isinstance(column.type, ARRAY) else dict
    for column in Customer.__table__.columns
    if column.key in PLAIN_FIELDS and isinstance(column.type, ARRAY | JSONB)
}


def _get_statement(visibility: Visibility, include_deleted: bool) -> PreparedStatement:
    return PreparedStatement(
        select(*CUSTOMER_COLUMNS).where(
            Customer.id == bindparam("customer_id"),
            *visible_customer_template(visibility, include_deleted=include_deleted),
        )
    )


# The hottest read of the API: compiled once per visibility.
_GET = {
    (visibility, include_deleted): _get_statement(visibility, include_deleted)
    for visibility in get_args(Visibility)
    for include_deleted in (False, True)
}


async def get(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, include_deleted: bool = False
) -> Mapping[str, Any]:
    """One statement: the row if the caller may see it, else 404 (other workspaces included)."""
    statement = _GET[(effective_visibility(ctx), include_deleted)]
    row = await statement.fetchrow(session, {"customer_id": customer_id, **scope_params(ctx)})
    if row is None:
        raise NotFound("No customer with that id.")
    return cast(Mapping[str, Any], row)


async def find_visible(conn: asyncpg.Connection, ctx: Caller, customer_id: uuid.UUID) -> asyncpg.Record | None:
    """`get` on a bare connection for the read lane: the same statement, None instead of 404."""
    statement = _GET[(effective_visibility(ctx), False)]
    return await statement.fetchrow_on(conn, {"customer_id": customer_id, **scope_params(ctx)})


@dataclass(frozen=True)
class NewCustomer:
    """A customer checked and not yet written, with the counter scope and width of its code."""

    customer: Customer
    code_scope: str
    code_width: int
    referral: referrals.NewReferral | None = None


async def create(session: AsyncSession, ctx: Caller, data: CustomerCreate) -> Customer:
    new = await build(session, ctx, data)
    await write_new(session, ctx, new)
    return new.customer


async def build(session: AsyncSession, ctx: Caller, data: CustomerCreate) -> NewCustomer:
    """A new customer, checked and not yet written: `write_new` numbers and writes it."""
    owner_id = data.owner_id if "owner_id" in data.model_fields_set else ctx.user_id
    await _check_owner(session, ctx, owner_id)
    pattern, definitions = await _creation_settings(session, ctx)
    # Definitions are read even without values: a required field must still be reported missing.
    values = custom_fields.validate_values(definitions, data.custom_fields or {})
    now = clock.now()
    address = data.address.model_dump() if data.address else dict.fromkeys(ADDRESS_FIELDS)
    customer = Customer(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        # Set by `write_new`, which takes the number as late as it can.
        code="",
        **(_plain_values(data) | {"owner_id": owner_id}),
        custom_fields=values,
        consent=data.consent.model_dump() if data.consent else {},
        created_at=now,
        updated_at=now,
        deleted_at=None,
        version=1,
        **address,
    )
    scope, width = customer_codes.scope_of(pattern, now)
    return NewCustomer(customer, scope, width, await referrals.new_referral(session, ctx, data.referral_code))


def _plain_values(data: CustomerFields) -> dict[str, Any]:
    """The PLAIN_FIELDS of a create or PATCH as stored: a list or object left out or null is empty."""
    values = {name: getattr(data, name) for name in PLAIN_FIELDS}
    for name, empty in _EMPTY_WHEN_NULL.items():
        if values[name] is None:
            values[name] = empty()
    return values


async def _creation_settings(session: AsyncSession, ctx: Caller) -> tuple[str, custom_fields.Definitions]:
    """The workspace's code pattern and custom field definitions, in one statement."""
    rows = (
        await session.execute(
            select(Workspace.customer_code_pattern, CustomFieldDefinition)
            .outerjoin(CustomFieldDefinition, CustomFieldDefinition.workspace_id == Workspace.id)
            .where(Workspace.id == ctx.workspace_id)
            .order_by(CustomFieldDefinition.key)
        )
    ).all()
    assert rows, "the caller's workspace exists"
    return rows[0][0], {definition.key: definition for _, definition in rows if definition is not None}


async def write_new(
    session: AsyncSession,
    ctx: Caller,
    new: NewCustomer,
    *,
    remember: tuple[idempotency.Claim, idempotency.StoredResponse] | None = None,
    own_transaction: bool = False,
) -> None:
    """Writes a built customer with its code, identities, audit entry and `customer.created` event
    (and its referral with `referral.created` when it came with a code), and the response to replay
    for an Idempotency-Key (the code set in the stored body). An email or phone another customer
    holds is a 409. `own_transaction` for an autocommit session: the write
    is one statement that commits alone; a key another request stored first is
    idempotency.AlreadyStored with that response."""
    customer = new.customer
    snapshot = event_data(customer)
    try:
        complete = await customer_insert.insert(
            session,
            ctx,
            customer,
            scope=new.code_scope,
            width=new.code_width,
            changes={
                k: {"before": None, "after": v}
                for k, v in snapshot.items()
                if v not in (None, [], {}) and k != "pii_masked"
            },
            data=snapshot,
            remember=remember,
            all_or_nothing=own_transaction,
            referral=new.referral,
        )
    except customer_insert.Refused:
        # Which key was taken: the same request's first attempt (replay it), or a contact point.
        if remember is not None:
            claim = remember[0]
            if (stored := await idempotency.stored_response(session, ctx, claim.key, claim.fingerprint)) is not None:
                raise idempotency.AlreadyStored(stored) from None
        complete = False
    if not complete:
        wanted = [("email", email) for email in customer.emails] + [("phone", phone) for phone in customer.phones]
        await _refuse_held(session, ctx, customer.id, wanted)
        raise Conflict("An email or phone of the customer was taken while it was written; send it again.")


async def update(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, patch: CustomerPatch, *, expected_version: int
) -> Customer:
    customer = await _lock(session, ctx, customer_id)
    check_version(customer.version, expected_version, what="customer")
    changes = await _apply(session, ctx, customer, patch)
    record_change(session, ctx, customer, changes)
    return customer


def record_change(session: AsyncSession, ctx: Caller, customer: Customer, changes: audit.Changes) -> None:
    """What every change of a customer's fields writes: a new version, the search text, the audit
    entry and the `customer.updated` event. Nothing when nothing changed. The import writes the
    same set-based (app/services/bulk/imports.py MERGE_SQL)."""
    if not changes:
        return
    customer.version += 1
    customer.updated_at = clock.now()
    customer.search_text = search_text_of(customer)
    audit.record(session, ctx, entity_type="customer", entity_id=customer.id, action="updated", changes=changes)
    outbox.emit(session, ctx, "customer.updated", {**event_data(customer), "changed_fields": sorted(changes)})
    if "consent" in changes:
        before, after = changes["consent"]["before"] or {}, changes["consent"]["after"] or {}
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        outbox.emit(
            session, ctx, "consent.changed", CONSENT_CHANGED.data(customer, before=before, after=after, changed=changed)
        )


# `consent.changed`: whichever path changed the consent (PATCH, batch, merge, an unsubscribe), here.
CONSENT_CHANGED: Payload[Customer] = Payload(
    (
        Field("customer_id", lambda customer: customer.id, lambda alias: f"{alias}.id"),
        given("before"),
        given("after"),
        given("changed"),
    ),
    model=data_model("consent.changed"),
)


async def withdraw_consent(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, channel: str) -> bool:
    """The customer's consent on `channel` set to false (an unsubscribe), as any change of theirs is
    written; False when it already was."""
    customer = await _lock(session, ctx, customer_id)
    changes = assign(customer, {"consent": {**customer.consent, channel: False}})
    record_change(session, ctx, customer, changes)
    return bool(changes)


def assign(customer: Customer, new: Mapping[str, Any]) -> audit.Changes:
    """Sets the fields of `new` that differ, and returns them as the audit log's changes."""
    changes: audit.Changes = {}
    for name, value in new.items():
        before = getattr(customer, name)
        if before != value:
            changes[name] = {"before": to_jsonable(before), "after": to_jsonable(value)}
            setattr(customer, name, value)
    return changes


async def soft_delete(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, expected_version: int) -> Customer:
    customer = await _lock(session, ctx, customer_id)
    check_version(customer.version, expected_version, what="customer")
    now = clock.now()
    customer.deleted_at = now
    customer.updated_at = now
    customer.version += 1
    # A deleted customer no longer holds its email and phone: a new customer may take them.
    await session.execute(
        delete(CustomerIdentity).where(
            CustomerIdentity.workspace_id == ctx.workspace_id, CustomerIdentity.customer_id == customer.id
        )
    )
    audit.record(
        session,
        ctx,
        entity_type="customer",
        entity_id=customer.id,
        action="deleted",
        changes={"deleted_at": {"before": None, "after": utc_text(now)}},
    )
    outbox.emit(session, ctx, "customer.deleted", {"id": str(customer.id), "code": customer.code})
    return customer


async def restore(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> Customer:
    customer = await _lock(session, ctx, customer_id, include_deleted=True)
    if customer.deleted_at is None:
        return customer
    await _claim_identities(session, ctx, customer.id, emails=customer.emails, phones=customer.phones)
    before = customer.deleted_at
    customer.deleted_at = None
    customer.updated_at = clock.now()
    customer.version += 1
    audit.record(
        session,
        ctx,
        entity_type="customer",
        entity_id=customer.id,
        action="restored",
        changes={"deleted_at": {"before": utc_text(before), "after": None}},
    )
    outbox.emit(session, ctx, "customer.restored", event_data(customer))
    return customer


def search_text_of(customer: Customer) -> ColumnElement[str]:
    """The search text of the customer's values, by its one definition, guanxi_customer_search_text
    (migration 0019), which every writer of customers uses."""
    return func.guanxi_customer_search_text(
        literal(customer.name, Text),
        literal(customer.code, Text),
        literal(customer.emails, ARRAY(Text)),
        literal(customer.phones, ARRAY(Text)),
        literal(customer.company, Text),
        type_=Text,
    )


async def _lock(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, include_deleted: bool = False
) -> Customer:
    stmt = (
        select(Customer)
        .where(Customer.id == customer_id, *visible_customer_clauses(ctx, include_deleted=include_deleted))
        .with_for_update()
    )
    customer = await session.scalar(stmt)
    if customer is None:
        raise NotFound("No customer with that id.")
    return customer


async def _apply(session: AsyncSession, ctx: Caller, customer: Customer, patch: CustomerFields) -> audit.Changes:
    sent = patch.model_fields_set
    for required in ("name", "kind"):
        if required in sent and getattr(patch, required) is None:
            raise ValidationFailed(f"{required} cannot be null.", loc=["body", required])
    new = {name: value for name, value in _plain_values(patch).items() if name in sent}
    if "address" in sent:
        if patch.address is None:
            new.update(dict.fromkeys(ADDRESS_FIELDS))
        else:
            new.update({k: getattr(patch.address, k) for k in patch.address.model_fields_set})
    if "consent" in sent:
        new["consent"] = (
            {**customer.consent, **patch.consent.model_dump(include=patch.consent.model_fields_set)}
            if patch.consent
            else {}
        )
    if "custom_fields" in sent:
        new["custom_fields"] = custom_fields.validate_values(
            await custom_fields.definitions(session, ctx),
            patch.custom_fields or {},
            existing=customer.custom_fields,
        )
    if "owner_id" in new and new["owner_id"] != customer.owner_id:
        await _check_owner(session, ctx, new["owner_id"])

    changes = assign(customer, new)
    if "emails" in changes or "phones" in changes:
        await _sync_identities(session, ctx, customer, changes)
    return changes


async def _sync_identities(session: AsyncSession, ctx: Caller, customer: Customer, changes: audit.Changes) -> None:
    for kind, field in (("email", "emails"), ("phone", "phones")):
        if field not in changes:
            continue
        before = set(changes[field]["before"] or [])
        after = set(changes[field]["after"] or [])
        if removed := before - after:
            await session.execute(
                delete(CustomerIdentity).where(
                    CustomerIdentity.workspace_id == ctx.workspace_id,
                    CustomerIdentity.kind == kind,
                    CustomerIdentity.value.in_(removed),
                    CustomerIdentity.customer_id == customer.id,
                )
            )
        if added := after - before:
            await _claim_identities(
                session,
                ctx,
                customer.id,
                emails=sorted(added) if kind == "email" else [],
                phones=sorted(added) if kind == "phone" else [],
            )


async def _claim_identities(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, emails: list[str], phones: list[str]
) -> None:
    """Insert the unique keys; a key another live customer holds is a 409 naming that customer."""
    wanted = [("email", e) for e in emails] + [("phone", p) for p in phones]
    if not wanted:
        return
    stmt = (
        insert(CustomerIdentity)
        .values(
            [
                {"workspace_id": ctx.workspace_id, "kind": kind, "value": value, "customer_id": customer_id}
                for kind, value in wanted
            ]
        )
        .on_conflict_do_nothing()
        .returning(CustomerIdentity.kind, CustomerIdentity.value)
    )
    claimed = {(row.kind, row.value) for row in await session.execute(stmt)}
    if taken := [key for key in wanted if key not in claimed]:
        await _refuse_held(session, ctx, customer_id, taken)
        raise Conflict("An email or phone of the customer was freed while it was written; send it again.")


async def _refuse_held(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, keys: list[tuple[str, str]]) -> None:
    """409 naming the customer that holds the first of `keys` (emails and phones as kind, value)
    held by a customer other than `customer_id`; returns if none is."""
    for kind, value in keys:
        existing = await session.scalar(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.workspace_id == ctx.workspace_id,
                CustomerIdentity.kind == kind,
                CustomerIdentity.value == value,
                CustomerIdentity.customer_id != customer_id,
            )
        )
        if existing is None:
            continue
        field = "emails" if kind == "email" else "phones"
        raise DuplicateCustomer(f"Another customer already has the {kind} {value}.", existing_id=existing, field=field)


async def _check_owner(session: AsyncSession, ctx: Caller, owner_id: uuid.UUID | None) -> None:
    if owner_id is None or owner_id == ctx.user_id:
        return
    owner = (
        await session.execute(
            select(User.id, User.team_id).where(
                User.workspace_id == ctx.workspace_id, User.id == owner_id, User.is_active.is_(True)
            )
        )
    ).first()
    if owner is None:
        raise ValidationFailed("owner_id is not an active user of this workspace.", loc=["body", "owner_id"])
    if ctx.visibility == "own" or (ctx.visibility == "team" and owner.team_id != ctx.team_id):
        raise Forbidden("You cannot hand a customer to someone outside what you can see.")
