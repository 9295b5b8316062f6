"""Customer use cases: create, read, change, soft delete and restore, each one transaction."""

import uuid
from collections.abc import Mapping
from typing import Any, cast, get_args

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.access import Caller, Visibility
from app.errors import DuplicateCustomer, Forbidden, NotFound, PreconditionFailed, ValidationFailed
from app.jsonable import to_jsonable
from app.models import Customer, CustomerIdentity, User
from app.prepared import PreparedStatement
from app.schemas.customer import CustomerCreate, CustomerFields, CustomerPatch
from app.services import audit, custom_fields, customer_codes, outbox
from app.services.customer_output import CUSTOMER_COLUMNS, event_data
from app.services.visibility import (
    effective_visibility,
    scope_params,
    visible_customer_clauses,
    visible_customer_template,
)

ADDRESS_FIELDS = ("country", "province", "city", "district", "street", "postcode")
PLAIN_FIELDS = (
    "name",
    "kind",
    "emails",
    "phones",
    "company",
    "title",
    "gender",
    "birthday",
    "source",
    "tags",
    "owner_id",
    "preferences",
    "notes",
)


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


async def create(session: AsyncSession, ctx: Caller, data: CustomerCreate) -> Customer:
    owner_id = data.owner_id if "owner_id" in data.model_fields_set else ctx.user_id
    await _check_owner(session, ctx, owner_id)
    # Definitions are read even without values: a required field must still be reported missing.
    values = custom_fields.validate_values(await custom_fields.definitions(session, ctx), data.custom_fields or {})
    now = clock.now()
    address = data.address.model_dump() if data.address else dict.fromkeys(ADDRESS_FIELDS)
    customer = Customer(
        workspace_id=ctx.workspace_id,
        code=await customer_codes.next_code(session, ctx),
        kind=data.kind,
        name=data.name,
        emails=data.emails or [],
        phones=data.phones or [],
        company=data.company,
        title=data.title,
        gender=data.gender,
        birthday=data.birthday,
        source=data.source,
        tags=data.tags or [],
        owner_id=owner_id,
        preferences=data.preferences or {},
        custom_fields=values,
        consent=data.consent.model_dump() if data.consent else {},
        notes=data.notes,
        created_at=now,
        updated_at=now,
        version=1,
        **address,
    )
    customer.search_text = search_text(customer)
    session.add(customer)
    await session.flush()
    await _claim_identities(session, ctx, customer.id, emails=customer.emails, phones=customer.phones)
    snapshot = event_data(customer)
    audit.record(
        session,
        ctx,
        entity_type="customer",
        entity_id=customer.id,
        action="created",
        changes={k: {"before": None, "after": v} for k, v in snapshot.items() if v not in (None, [], {})},
    )
    outbox.emit(session, ctx, "customer.created", snapshot)
    return customer


async def update(
    session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, patch: CustomerPatch, *, expected_version: int
) -> Customer:
    customer = await _lock(session, ctx, customer_id)
    if customer.version != expected_version:
        raise PreconditionFailed(
            "The customer changed since you read it; read it again and retry.",
            current_version=customer.version,
        )
    changes = await _apply(session, ctx, customer, patch)
    if not changes:
        return customer
    customer.version += 1
    customer.updated_at = clock.now()
    customer.search_text = search_text(customer)
    audit.record(session, ctx, entity_type="customer", entity_id=customer.id, action="updated", changes=changes)
    outbox.emit(session, ctx, "customer.updated", {**event_data(customer), "changed_fields": sorted(changes)})
    return customer


async def soft_delete(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, *, expected_version: int) -> Customer:
    customer = await _lock(session, ctx, customer_id)
    if customer.version != expected_version:
        raise PreconditionFailed("The customer changed since you read it.", current_version=customer.version)
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
        changes={"deleted_at": {"before": None, "after": now.isoformat()}},
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
        changes={"deleted_at": {"before": before.isoformat(), "after": None}},
    )
    outbox.emit(session, ctx, "customer.restored", event_data(customer))
    return customer


def search_text(customer: Customer) -> str:
    """What search matches against: lower-cased name, code, emails, phone digits and company."""
    parts = [customer.name, customer.code, *customer.emails, *(p.lstrip("+") for p in customer.phones)]
    if customer.company:
        parts.append(customer.company)
    return " ".join(parts).lower()


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
    new: dict[str, Any] = {}
    for name in PLAIN_FIELDS:
        if name in sent:
            value = getattr(patch, name)
            new[name] = [] if value is None and name in ("emails", "phones", "tags") else value
    if "preferences" in sent:
        new["preferences"] = patch.preferences or {}
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

    changes: audit.Changes = {}
    for name, value in new.items():
        before = getattr(customer, name)
        if before != value:
            changes[name] = {"before": to_jsonable(before), "after": to_jsonable(value)}
            setattr(customer, name, value)
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
    for kind, value in wanted:
        if (kind, value) in claimed:
            continue
        existing = await session.scalar(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.workspace_id == ctx.workspace_id,
                CustomerIdentity.kind == kind,
                CustomerIdentity.value == value,
            )
        )
        field = "emails" if kind == "email" else "phones"
        raise DuplicateCustomer(
            f"Another customer already has the {kind} {value}.",
            existing_id=existing or customer_id,
            field=field,
        )


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
