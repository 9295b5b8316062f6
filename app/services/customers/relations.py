"""Relations between customers: add, read both directions, remove; each kind's rules; and what a
merge and its undo do to them.

A relation exists for a caller when the caller may see both its customers: lists, reads and
filters show nothing of a customer the caller cannot see. The rules (one referrer, no cycles, no
duplicates) hold over every relation of the workspace, seen or not, since they describe the data,
and their refusals name relations by id only."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.core.wire import utc_text_sql
from app.models import Customer, CustomerRelation
from app.schemas.relation import RelationIn
from app.services.customers.visibility import require_visible, visible_customer_clauses
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, timestamp

# Kinds whose relations form a hierarchy: a cycle (A subsidiary of B, B of A) is refused.
HIERARCHICAL = ("referred_by", "subsidiary_of")
SYMMETRIC = ("family_of",)
# The customer kind each end must have: (from, to); None takes either.
ENDS: dict[str, tuple[str | None, str | None]] = {
    "contact_of": ("individual", "company"),
    "subsidiary_of": ("company", "company"),
    "referred_by": (None, None),
    "family_of": ("individual", "individual"),
}
_END_NAMES = {"individual": "a person (kind individual)", "company": "a company"}

RELATION_EVENT: Payload[CustomerRelation] = Payload(
    (
        column("id"),
        column("kind"),
        column("from_customer_id"),
        column("to_customer_id"),
        column("note"),
        timestamp("created_at"),
        column("created_by"),
        Field("removed_at", lambda row: row.deleted_at, lambda alias: utc_text_sql(f"{alias}.deleted_at")),
    ),
    model=data_model("customer.relation_added"),
)

_OTHER_ID = "other_id"


def _listed(ctx: Caller, customer_id: uuid.UUID) -> Select[Any]:
    """The live relations of a customer, each with the customer at its other end, where the caller
    may see that one too (the caller checks the first)."""
    relation = CustomerRelation
    other = case((relation.from_customer_id == customer_id, relation.to_customer_id), else_=relation.from_customer_id)
    return (
        select(
            relation.id,
            relation.kind,
            relation.from_customer_id,
            relation.to_customer_id,
            relation.note,
            relation.created_at,
            relation.created_by,
            Customer.id.label(_OTHER_ID),
            Customer.code,
            Customer.name,
            Customer.kind.label("other_kind"),
        )
        .join(Customer, (Customer.workspace_id == relation.workspace_id) & (Customer.id == other))
        .where(
            relation.workspace_id == ctx.workspace_id,
            relation.deleted_at.is_(None),
            or_(relation.from_customer_id == customer_id, relation.to_customer_id == customer_id),
            *visible_customer_clauses(ctx),
        )
    )


def present(row: Any, customer_id: uuid.UUID) -> dict[str, Any]:
    """A relation as seen from `customer_id`, with the other customer's id, code, name and kind."""
    if row.kind in SYMMETRIC:
        direction = "mutual"
    else:
        direction = "outgoing" if row.from_customer_id == customer_id else "incoming"
    return {
        "id": row.id,
        "kind": row.kind,
        "direction": direction,
        "from_customer_id": row.from_customer_id,
        "to_customer_id": row.to_customer_id,
        "other": {"id": getattr(row, _OTHER_ID), "code": row.code, "name": row.name, "kind": row.other_kind},
        "note": row.note,
        "created_at": row.created_at,
        "created_by": row.created_by,
    }


async def list_for(
    session: AsyncSession,
    ctx: Caller,
    customer_id: uuid.UUID,
    *,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Both directions, newest first."""
    await require_visible(session, ctx, customer_id)
    stmt = _listed(ctx, customer_id)
    if kind is not None:
        stmt = stmt.where(CustomerRelation.kind == kind)
    keys = [SortKey(CustomerRelation.id, descending=True)]
    rows, next_cursor = await keyset_page(
        session, stmt, keys, list_name=f"relations:{customer_id}", limit=limit, cursor=cursor
    )
    return [present(row, customer_id) for row in rows], next_cursor


async def get(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, relation_id: uuid.UUID) -> dict[str, Any]:
    await require_visible(session, ctx, customer_id)
    row = (await session.execute(_listed(ctx, customer_id).where(CustomerRelation.id == relation_id))).one_or_none()
    if row is None:
        raise NotFound("No relation with that id on this customer.")
    return present(row, customer_id)


async def add(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, data: RelationIn) -> dict[str, Any]:
    """The customer in the path becomes `data.kind` of `data.to_customer_id`."""
    kind, to_id = data.kind.value, data.to_customer_id
    if to_id == customer_id:
        raise ValidationFailed("A customer cannot be related to itself.", loc=["body", "to_customer_id"])
    # FOR SHARE: a merge or delete of either customer waits for this add, or this add for it (and then
    # finds the absorbed customer gone), so no relation is left on an absorbed customer.
    ends = {
        c.id: c
        for c in (
            await session.scalars(
                select(Customer)
                .where(Customer.id.in_((customer_id, to_id)), *visible_customer_clauses(ctx))
                .with_for_update(read=True, of=Customer)
            )
        ).all()
    }
    if customer_id not in ends:
        raise NotFound("No customer with that id.")
    if to_id not in ends:
        raise NotFound("No customer with the id in `to_customer_id`.")
    _check_ends(kind, ends[customer_id].kind, ends[to_id].kind)
    if kind in HIERARCHICAL:
        # Two concurrent adds of A→B and B→A would each find no cycle in what the other has not
        # committed: adds of a hierarchical kind take turns per workspace, so the second sees the
        # first. Taken after the customers' locks, as a merge takes it after locking its customers.
        await scoped.one_at_a_time(session, ctx, f"customer_relations:{kind}")
    await _refuse_taken(session, ctx, kind, customer_id, to_id)
    if kind in HIERARCHICAL and await _reaches(session, ctx.workspace_id, kind, start=to_id, target=customer_id):
        raise Conflict(
            f"This {kind} relation would make a cycle: the other customer is already, directly or through "
            f"others, {kind} this customer."
        )
    now = clock.now()
    relation = CustomerRelation(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        from_customer_id=customer_id,
        to_customer_id=to_id,
        kind=kind,
        note=data.note,
        created_at=now,
        created_by=ctx.actor,
    )
    try:
        # A concurrent add of the same non-hierarchical relation waits on the unique index and fails
        # here once the other commits: it is then the same 409 as one found above.
        async with session.begin_nested():
            session.add(relation)
            await session.flush()
    except IntegrityError:
        await _refuse_taken(session, ctx, kind, customer_id, to_id)
        raise
    _record(session, ctx, relation, "relation_added")
    outbox.emit(session, ctx, "customer.relation_added", RELATION_EVENT.data(relation))
    other = ends[to_id]
    return present(_Row(relation, other), customer_id)


async def remove(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID, relation_id: uuid.UUID) -> None:
    """The caller needs to see the customer in the path only: a link from its customer to one it
    cannot see (another team's, or a deleted one) is still its customer's to cut, and it is what a
    409 about one referrer asks to remove."""
    await require_visible(session, ctx, customer_id)
    relation = await session.scalar(
        select(CustomerRelation)
        .where(
            CustomerRelation.workspace_id == ctx.workspace_id,
            CustomerRelation.id == relation_id,
            CustomerRelation.deleted_at.is_(None),
            or_(CustomerRelation.from_customer_id == customer_id, CustomerRelation.to_customer_id == customer_id),
        )
        .with_for_update()
    )
    if relation is None:
        raise NotFound("No relation with that id on this customer.")
    relation.deleted_at = clock.now()
    _record(session, ctx, relation, "relation_removed")
    outbox.emit(session, ctx, "customer.relation_removed", RELATION_EVENT.data(relation))


class _Row:
    """A new relation and its other customer, in the shape `present` reads."""

    def __init__(self, relation: CustomerRelation, other: Customer) -> None:
        self.id, self.kind, self.note = relation.id, relation.kind, relation.note
        self.from_customer_id, self.to_customer_id = relation.from_customer_id, relation.to_customer_id
        self.created_at, self.created_by = relation.created_at, relation.created_by
        self.other_id, self.code, self.name, self.other_kind = other.id, other.code, other.name, other.kind


def _check_ends(kind: str, from_kind: str, to_kind: str) -> None:
    wanted_from, wanted_to = ENDS[kind]
    if wanted_from is not None and from_kind != wanted_from:
        raise ValidationFailed(
            f"A {kind} relation goes from {_END_NAMES[wanted_from]}; this customer is not one.", loc=["body", "kind"]
        )
    if wanted_to is not None and to_kind != wanted_to:
        raise ValidationFailed(
            f"A {kind} relation goes to {_END_NAMES[wanted_to]}; the customer in `to_customer_id` is not one.",
            loc=["body", "to_customer_id"],
        )


async def _refuse_taken(session: AsyncSession, ctx: Caller, kind: str, from_id: uuid.UUID, to_id: uuid.UUID) -> None:
    """409 naming the live relation that the new one would repeat (either way round for a symmetric
    kind), or the customer's referrer when the new one would be a second."""
    relation = CustomerRelation
    same: ColumnElement[bool] = (relation.from_customer_id == from_id) & (relation.to_customer_id == to_id)
    if kind in SYMMETRIC:
        same = same | ((relation.from_customer_id == to_id) & (relation.to_customer_id == from_id))
    if kind == "referred_by":
        same = relation.from_customer_id == from_id
    found = (
        await session.execute(
            select(relation.id, relation.to_customer_id).where(
                relation.workspace_id == ctx.workspace_id, relation.kind == kind, relation.deleted_at.is_(None), same
            )
        )
    ).first()
    if found is None:
        return
    if kind == "referred_by" and found.to_customer_id != to_id:
        raise Conflict("This customer already has a referrer; remove that relation first.", existing_id=str(found.id))
    raise Conflict(f"These customers already have a {kind} relation.", existing_id=str(found.id))


# From `start`, up the relations of one kind: does it reach `target`? UNION (not ALL) ends the walk
# on a cycle too, should one ever be stored.
_REACHES = text(
    """
WITH RECURSIVE up(id) AS (
    SELECT CAST(:start AS uuid)
    UNION
    SELECT r.to_customer_id FROM customer_relations r JOIN up ON r.from_customer_id = up.id
    WHERE r.workspace_id = :ws AND r.kind = :kind AND r.deleted_at IS NULL
)
SELECT EXISTS (SELECT 1 FROM up WHERE id = :target)
"""
)


async def _reaches(
    session: AsyncSession, workspace_id: uuid.UUID, kind: str, *, start: uuid.UUID, target: uuid.UUID
) -> bool:
    params = {"ws": workspace_id, "kind": kind, "start": start, "target": target}
    return bool(await session.scalar(_REACHES, params))


def _record(session: AsyncSession, ctx: Caller, relation: CustomerRelation, action: str) -> None:
    """An entry on each customer's audit log, which their timelines read: the relation, and the
    customer at its other end by id only."""
    for near, far in (
        (relation.from_customer_id, relation.to_customer_id),
        (relation.to_customer_id, relation.from_customer_id),
    ):
        if relation.kind in SYMMETRIC:
            direction = "mutual"
        else:
            direction = "outgoing" if near == relation.from_customer_id else "incoming"
        described = {"id": str(relation.id), "kind": relation.kind, "direction": direction, "customer_id": str(far)}
        before, after = (None, described) if action == "relation_added" else (described, None)
        audit.record(
            session,
            ctx,
            entity_type="customer",
            entity_id=near,
            action=action,
            changes={"relation": {"before": before, "after": after}},
        )


def _moved_to(survivor_id: uuid.UUID, absorbed: set[uuid.UUID], customer_id: uuid.UUID) -> uuid.UUID:
    return survivor_id if customer_id in absorbed else customer_id


def _key(kind: str, from_id: uuid.UUID, to_id: uuid.UUID) -> tuple[Any, ...]:
    """What one live relation holds to itself: the pair (unordered when symmetric), or for
    `referred_by` the referred customer alone."""
    if kind == "referred_by":
        return (kind, from_id)
    if kind in SYMMETRIC:
        return (kind, min(from_id, to_id), max(from_id, to_id))
    return (kind, from_id, to_id)


async def _lock_hierarchies(session: AsyncSession, ctx: Caller) -> None:
    # In one order, as every path takes them, so two merges never wait on each other's second lock.
    for kind in HIERARCHICAL:
        await scoped.one_at_a_time(session, ctx, f"customer_relations:{kind}")


async def follow_merge(
    session: AsyncSession, ctx: Caller, survivor_id: uuid.UUID, absorbed_ids: list[uuid.UUID], *, now: datetime
) -> dict[str, Any]:
    """Re-point the absorbed customers' relations to the survivor. A relation that would then be
    the survivor's to itself, repeat one it keeps, give it a second referrer or close a cycle is
    removed instead. Returns what `undo_merge` needs: each moved relation's old ends, the removed ids."""
    await _lock_hierarchies(session, ctx)
    absorbed = set(absorbed_ids)
    everyone = [survivor_id, *absorbed_ids]
    relations = (
        await session.scalars(
            select(CustomerRelation)
            .where(
                CustomerRelation.workspace_id == ctx.workspace_id,
                CustomerRelation.deleted_at.is_(None),
                or_(CustomerRelation.from_customer_id.in_(everyone), CustomerRelation.to_customer_id.in_(everyone)),
            )
            .order_by(CustomerRelation.id)
            .with_for_update()
        )
    ).all()

    def touches_absorbed(relation: CustomerRelation) -> bool:
        return relation.from_customer_id in absorbed or relation.to_customer_id in absorbed

    # Every relation that could collide with a moved one touches the survivor or an absorbed customer:
    # the survivor's own are kept as they are and claim their keys first, then the absorbed customers'
    # in the order they were made.
    held = {_key(r.kind, r.from_customer_id, r.to_customer_id) for r in relations if not touches_absorbed(r)}
    moved: list[dict[str, str]] = []
    removed: list[str] = []
    for relation in (r for r in relations if touches_absorbed(r)):
        from_id = _moved_to(survivor_id, absorbed, relation.from_customer_id)
        to_id = _moved_to(survivor_id, absorbed, relation.to_customer_id)
        key = _key(relation.kind, from_id, to_id)
        await session.flush()
        if (
            from_id == to_id
            or key in held
            or (
                relation.kind in HIERARCHICAL
                and await _reaches(session, ctx.workspace_id, relation.kind, start=to_id, target=from_id)
            )
        ):
            relation.deleted_at = now
            removed.append(str(relation.id))
            continue
        moved.append(
            {"id": str(relation.id), "from": str(relation.from_customer_id), "to": str(relation.to_customer_id)}
        )
        relation.from_customer_id, relation.to_customer_id = from_id, to_id
        held.add(key)
    await session.flush()
    return {"moved": moved, "removed": removed}


async def undo_merge(session: AsyncSession, ctx: Caller, followed: dict[str, Any]) -> None:
    """Give the moved relations back their old ends and bring back the ones the merge removed (but
    for one that would now close a cycle, with relations made since the merge)."""
    if not followed["moved"] and not followed["removed"]:
        return
    await _lock_hierarchies(session, ctx)
    for entry in followed["moved"]:
        # A relation removed since the merge stays removed: it is given back its ends all the same.
        await session.execute(
            text(
                "UPDATE customer_relations SET from_customer_id = :from_id, to_customer_id = :to_id "
                "WHERE workspace_id = :ws AND id = :id"
            ),
            {"ws": ctx.workspace_id, "id": uuid.UUID(entry["id"]), "from_id": entry["from"], "to_id": entry["to"]},
        )
    removed = (
        await session.scalars(
            select(CustomerRelation)
            .where(
                CustomerRelation.workspace_id == ctx.workspace_id,
                CustomerRelation.id.in_([uuid.UUID(i) for i in followed["removed"]]),
            )
            .order_by(CustomerRelation.id)
            .with_for_update()
        )
    ).all()
    for relation in removed:
        await session.flush()
        if relation.kind in HIERARCHICAL and await _reaches(
            session, ctx.workspace_id, relation.kind, start=relation.to_customer_id, target=relation.from_customer_id
        ):
            continue
        relation.deleted_at = None
    await session.flush()


def related(ctx: Caller, kind: str, direction: str, ids: list[uuid.UUID] | None) -> ColumnElement[bool]:
    """For the filter language: the customer tested (the enclosing statement's `customers` row) has a
    live relation of `kind`, in `direction` (`outgoing`: it is the `from` end; `incoming`; `mutual`:
    either), to one of `ids` (to anyone when None) whom the caller may see."""
    relation = CustomerRelation
    visible = select(Customer.id).where(*visible_customer_clauses(ctx)).correlate(None)
    outgoing = (relation.from_customer_id, relation.to_customer_id)
    incoming = (relation.to_customer_id, relation.from_customer_id)
    sides = {"outgoing": [outgoing], "incoming": [incoming], "mutual": [outgoing, incoming]}[direction]
    found = []
    for near, far in sides:
        conditions = [
            relation.workspace_id == Customer.workspace_id,
            near == Customer.id,
            relation.kind == kind,
            relation.deleted_at.is_(None),
            far.in_(visible),
            *([far.in_(ids)] if ids is not None else []),
        ]
        found.append(select(relation.id).where(*conditions).exists())
    return or_(*found)
