"""Segments: dynamic ones materialised from a filter, static lists, snapshots, previews, built-ins.

A refresh is one statement: the new member set, the rows that join and leave, their events and the
counts, committed together — readers see the old membership or the new, never half of one."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Uuid, and_, delete, exists, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller, system_caller
from app.core.errors import Conflict, ValidationFailed
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.models import Customer, CustomerStage, CustomerValue, Segment, SegmentMember, SegmentSize
from app.schemas.segment import SegmentOut
from app.services.customers.customer_output import CUSTOMER_COLUMNS
from app.services.customers.visibility import visible_customer_clauses
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Payload, column
from app.services.filters.catalogue import RFM_SEGMENTS
from app.services.filters.compiler import Compiled, compile_filter

MAX_LIST_CHANGE = 1000

BUILTINS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    *(
        (f"rfm:{name}", f"RFM: {name}", {"field": "value.rfm_segment", "op": "eq", "value": name})
        for name in RFM_SEGMENTS
    ),
    ("birthdays_this_month", "Birthdays this month", {"field": "birthday", "op": "in_current_month"}),
    ("new_this_month", "New this month", {"field": "created_at", "op": "in_current_month"}),
    (
        "no_contact_90_days",
        "No contact in 90 days",
        {
            "or": [
                {"field": "activity.last_interaction_at", "op": "is_null"},
                {"field": "activity.last_interaction_at", "op": "more_than_days_ago", "value": 90},
            ]
        },
    ),
    (
        "at_risk",
        "At risk",
        {
            "or": [
                {"field": "value.rfm_segment", "op": "in", "value": ["At risk", "Can't lose them"]},
                {"field": "lifecycle.stage", "op": "eq", "value": "at_risk"},
            ]
        },
    ),
)


def customers_matching(ctx: Caller, compiled: Compiled, *, for_caller: bool) -> Select[Any]:
    """Live customers of the workspace that match; `for_caller` also applies the caller's visibility."""
    source: Any = Customer.__table__
    if "value" in compiled.sources:
        source = source.outerjoin(
            CustomerValue,
            and_(CustomerValue.workspace_id == Customer.workspace_id, CustomerValue.customer_id == Customer.id),
        )
    if "stage" in compiled.sources:
        source = source.outerjoin(
            CustomerStage,
            and_(CustomerStage.workspace_id == Customer.workspace_id, CustomerStage.customer_id == Customer.id),
        )
    scope = (
        visible_customer_clauses(ctx)
        if for_caller
        else [Customer.workspace_id == ctx.workspace_id, Customer.deleted_at.is_(None)]
    )
    return select(Customer.id).select_from(source).where(*scope, compiled.where)


async def create(
    session: AsyncSession, ctx: Caller, *, name: str, description: str | None, kind: str, filter_: Any
) -> Segment:
    if kind == "dynamic":
        if filter_ is None:
            raise ValidationFailed("A dynamic segment needs a filter.", loc=["body", "filter"])
        await compile_filter(session, ctx, filter_)
    elif filter_ is not None:
        raise ValidationFailed("Only dynamic segments have a filter.", loc=["body", "filter"])
    now = clock.now()
    segment = Segment(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=name,
        description=description,
        kind=kind,
        filter=filter_,
        member_count=0,
        refresh_requested_at=now if kind == "dynamic" else None,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(segment)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="segment",
        entity_id=segment.id,
        action="created",
        changes={"name": {"before": None, "after": name}, "kind": {"before": None, "after": kind}},
    )
    return segment


async def get(session: AsyncSession, ctx: Caller, segment_id: uuid.UUID, *, lock: bool = False) -> Segment:
    return await scoped.get(session, ctx, Segment, segment_id, missing="No segment with that id.", lock=lock)


async def list_all(session: AsyncSession, ctx: Caller) -> list[Segment]:
    await ensure_builtins(session, ctx)
    return await scoped.all_of(session, ctx, Segment, order_by=Segment.created_at)


async def update(
    session: AsyncSession, ctx: Caller, segment_id: uuid.UUID, changes: dict[str, Any], *, expected_version: int
) -> Segment:
    segment = await get(session, ctx, segment_id, lock=True)
    check_version(segment.version, expected_version, what="segment")
    if segment.builtin:
        raise Conflict("Built-in segments cannot be changed.")
    if "filter" in changes:
        if segment.kind != "dynamic":
            raise ValidationFailed("Only dynamic segments have a filter.", loc=["body", "filter"])
        await compile_filter(session, ctx, changes["filter"])
        segment.filter = changes["filter"]
        segment.refresh_requested_at = clock.now()
    for name in ("name", "description"):
        if name in changes:
            setattr(segment, name, changes[name])
    segment.version += 1
    segment.updated_at = clock.now()
    audit.record(
        session,
        ctx,
        entity_type="segment",
        entity_id=segment.id,
        action="updated",
        changes={k: {"before": None, "after": v} for k, v in changes.items()},
    )
    return segment


async def delete_segment(session: AsyncSession, ctx: Caller, segment_id: uuid.UUID, *, expected_version: int) -> None:
    segment = await get(session, ctx, segment_id, lock=True)
    check_version(segment.version, expected_version, what="segment")
    if segment.builtin:
        raise Conflict("Built-in segments cannot be deleted.")
    await session.delete(segment)


# `segment.member_added` and `segment.member_removed`, over a segment_members row.
MEMBERSHIP: Payload[SegmentMember] = Payload(
    (column("segment_id"), column("customer_id")), model=data_model("segment.member_added")
)


async def refresh(session: AsyncSession, segment: Segment, *, now: datetime | None = None) -> tuple[int, int]:
    """Materialise a dynamic segment's members; returns (joined, left)."""
    now = now or clock.now()
    ctx = system_caller(segment.workspace_id)
    compiled = await compile_filter(session, ctx, segment.filter, loc=["filter"])
    target = customers_matching(ctx, compiled, for_caller=False).cte("target")
    ws, seg = segment.workspace_id, segment.id
    added = (
        pg_insert(SegmentMember)
        .from_select(
            ["workspace_id", "segment_id", "customer_id", "added_at"],
            select(literal(ws), literal(seg), target.c.id, literal(now)),
        )
        .on_conflict_do_nothing()
        .returning(SegmentMember.segment_id, SegmentMember.customer_id)
        .cte("added")
    )
    removed = (
        delete(SegmentMember)
        .where(
            SegmentMember.workspace_id == ws,
            SegmentMember.segment_id == seg,
            ~exists(select(target.c.id).where(target.c.id == SegmentMember.customer_id)),
        )
        .returning(SegmentMember.segment_id, SegmentMember.customer_id)
        .cte("removed")
    )

    def events(source: str, event_type: str, name: str) -> Any:
        statement = outbox.emit_rows_sql(
            f"(SELECT guanxi_uuid7() AS id, {MEMBERSHIP.sql('m')} AS data FROM {source} m)",
            workspace_id="CAST(:refresh_ws AS uuid)",
            event_type=f"'{event_type}'",
            at="CAST(:refresh_at AS timestamptz)",
            actor=outbox.SYSTEM_ACTOR_SQL,
            returning="id",
        )
        return text(statement).bindparams(refresh_ws=ws, refresh_at=now).columns(id=Uuid()).cte(name)

    # Written after `added` and `removed` in the statement's WITH list: they are its first CTEs.
    added_events = events("added", "segment.member_added", "added_events")
    removed_events = events("removed", "segment.member_removed", "removed_events")
    counts = select(
        select(func.count()).select_from(added).scalar_subquery(),
        select(func.count()).select_from(removed).scalar_subquery(),
        select(func.count()).select_from(added_events).scalar_subquery(),
        select(func.count()).select_from(removed_events).scalar_subquery(),
    )
    joined, left, _, _ = (await session.execute(counts)).one()
    members = await session.scalar(
        select(func.count()).where(SegmentMember.workspace_id == ws, SegmentMember.segment_id == seg)
    )
    segment.member_count = int(members or 0)
    segment.refreshed_at = now
    segment.refresh_requested_at = None
    session.add(
        SegmentSize(
            workspace_id=ws,
            id=new_id(),
            segment_id=seg,
            measured_at=now,
            members=segment.member_count,
            joined=joined,
            left=left,
        )
    )
    await session.flush()
    return int(joined), int(left)


async def request_refresh(session: AsyncSession, ctx: Caller, segment_id: uuid.UUID) -> Segment:
    segment = await get(session, ctx, segment_id, lock=True)
    if segment.kind != "dynamic":
        raise Conflict("Only dynamic segments are refreshed; static lists change by their members.")
    segment.refresh_requested_at = clock.now()
    await outbox.wake_workers(session)
    return segment


async def due_refreshes(
    session: AsyncSession, *, now: datetime, every_hours: float = 6.0
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(workspace, segment) of dynamic segments asked to refresh, never refreshed, or stale."""
    stale = now.timestamp() - every_hours * 3600
    rows = await session.execute(
        select(Segment.workspace_id, Segment.id).where(
            Segment.kind == "dynamic",
            (Segment.refresh_requested_at.is_not(None))
            | (Segment.refreshed_at.is_(None))
            | (func.extract("epoch", Segment.refreshed_at) < stale),
        )
    )
    return [(row[0], row[1]) for row in rows]


async def change_members(
    session: AsyncSession, ctx: Caller, segment_id: uuid.UUID, *, add: list[uuid.UUID], remove: list[uuid.UUID]
) -> Segment:
    """Add to and remove from a static list; unknown or invisible customers are a 422 naming them."""
    segment = await get(session, ctx, segment_id, lock=True)
    if segment.kind != "static":
        raise Conflict("Only static lists take members by hand.")
    if len(add) + len(remove) > MAX_LIST_CHANGE:
        raise ValidationFailed(f"At most {MAX_LIST_CHANGE} changes per call.", loc=["body"])
    # Removing names a customer as much as adding does: one the caller cannot see is unknown to it.
    for field, ids in (("add", add), ("remove", remove)):
        if ids:
            found = set(
                (
                    await session.scalars(
                        select(Customer.id).where(Customer.id.in_(ids), *visible_customer_clauses(ctx))
                    )
                ).all()
            )
            missing = [str(i) for i in ids if i not in found]
            if missing:
                raise ValidationFailed(f"Unknown customers: {', '.join(missing[:10])}", loc=["body", field])
    if add:
        now = clock.now()
        await session.execute(
            pg_insert(SegmentMember)
            .values(
                [
                    {"workspace_id": ctx.workspace_id, "segment_id": segment.id, "customer_id": i, "added_at": now}
                    for i in add
                ]
            )
            .on_conflict_do_nothing()
        )
    if remove:
        await session.execute(
            delete(SegmentMember).where(
                SegmentMember.workspace_id == ctx.workspace_id,
                SegmentMember.segment_id == segment.id,
                SegmentMember.customer_id.in_(remove),
            )
        )
    segment.member_count = int(
        await session.scalar(
            select(func.count()).where(
                SegmentMember.workspace_id == ctx.workspace_id, SegmentMember.segment_id == segment.id
            )
        )
        or 0
    )
    segment.version += 1
    segment.updated_at = clock.now()
    return segment


async def snapshot(session: AsyncSession, ctx: Caller, segment_id: uuid.UUID, *, name: str | None) -> Segment:
    """A frozen copy of a segment's current members."""
    source = await get(session, ctx, segment_id)
    now = clock.now()
    frozen = Segment(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        name=name or f"{source.name} ({now:%Y-%m-%d %H:%M})",
        description=f"Snapshot of {source.name}",
        kind="snapshot",
        filter=source.filter,
        member_count=source.member_count,
        refreshed_at=now,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(frozen)
    await session.flush()
    await session.execute(
        pg_insert(SegmentMember).from_select(
            ["workspace_id", "segment_id", "customer_id", "added_at"],
            select(literal(ctx.workspace_id), literal(frozen.id), SegmentMember.customer_id, literal(now)).where(
                SegmentMember.workspace_id == ctx.workspace_id, SegmentMember.segment_id == source.id
            ),
        )
    )
    return frozen


async def preview(session: AsyncSession, ctx: Caller, filter_: Any, *, limit: int) -> tuple[int, list[Any]]:
    """Count and first page for an unsaved filter, over the customers the caller may see."""
    compiled = await compile_filter(session, ctx, filter_)
    # One statement: the CTE is read twice (count and page), so PostgreSQL evaluates the filter once.
    matching = customers_matching(ctx, compiled, for_caller=True).add_columns(Customer.created_at).cte("matching")
    page = (
        select(matching.c.id, matching.c.created_at)
        .order_by(matching.c.created_at.desc(), matching.c.id.desc())
        .limit(limit)
        .subquery("page")
    )
    total = select(func.count()).select_from(matching).scalar_subquery().label("total")
    rows = (
        await session.execute(
            select(*CUSTOMER_COLUMNS, total)
            .join_from(Customer, page, and_(Customer.workspace_id == ctx.workspace_id, Customer.id == page.c.id))
            .order_by(page.c.created_at.desc(), page.c.id.desc())
        )
    ).all()
    # No row means nothing matched: the page is the top of the matches.
    return (int(rows[0].total) if rows else 0), [row._mapping for row in rows]


async def search(
    session: AsyncSession, ctx: Caller, node: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """The customers the caller may see that match the filter `node`, newest first."""
    compiled = await compile_filter(session, ctx, node)
    matching = customers_matching(ctx, compiled, for_caller=True).subquery()
    stmt = select(*CUSTOMER_COLUMNS).where(
        Customer.id.in_(matching.select()), Customer.workspace_id == ctx.workspace_id
    )
    keys = [SortKey(Customer.created_at, descending=True), SortKey(Customer.id, descending=True)]
    rows, next_cursor = await keyset_page(
        session, stmt, keys, list_name="customer-filter-search", limit=limit, cursor=cursor, cursor_loc="body"
    )
    return [row._mapping for row in rows], next_cursor


async def members(
    session: AsyncSession, ctx: Caller, segment_id: uuid.UUID, *, limit: int | None, cursor: str | None
) -> tuple[list[Any], str | None]:
    """Members the caller may see, in id order; `limit=None` for all (CSV export)."""
    await get(session, ctx, segment_id)
    stmt = (
        select(*CUSTOMER_COLUMNS)
        .join(
            SegmentMember,
            and_(SegmentMember.workspace_id == Customer.workspace_id, SegmentMember.customer_id == Customer.id),
        )
        .where(SegmentMember.segment_id == segment_id, *visible_customer_clauses(ctx))
    )
    rows, next_cursor = await keyset_page(
        session, stmt, [SortKey(Customer.id)], list_name=f"segment-members:{segment_id}", limit=limit, cursor=cursor
    )
    return [row._mapping for row in rows], next_cursor


async def sizes(session: AsyncSession, ctx: Caller, segment_id: uuid.UUID) -> list[SegmentSize]:
    await get(session, ctx, segment_id)
    rows = await session.scalars(
        select(SegmentSize)
        .where(SegmentSize.workspace_id == ctx.workspace_id, SegmentSize.segment_id == segment_id)
        .order_by(SegmentSize.measured_at.desc())
        .limit(365)
    )
    return list(rows.all())


async def ensure_builtins(session: AsyncSession, ctx: Caller) -> None:
    """Every workspace has the built-in segments; created on first use, refreshed by the worker."""
    now = clock.now()
    await session.execute(
        pg_insert(Segment)
        .values(
            [
                {
                    "workspace_id": ctx.workspace_id,
                    "id": new_id(),
                    "name": name,
                    "kind": "dynamic",
                    "filter": rule,
                    "builtin": key,
                    "member_count": 0,
                    "refresh_requested_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                for key, name, rule in BUILTINS
            ]
        )
        .on_conflict_do_nothing()
    )


def present(segment: Segment) -> dict[str, Any]:
    return SegmentOut.model_validate(segment, from_attributes=True).model_dump(mode="json")
