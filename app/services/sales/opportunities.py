"""Opportunities: the one writer of the `opportunities` table and its stage history.

Every path that creates, changes, moves or deletes an opportunity goes through this module, which
writes the stage history, the audit entry and the event in the same transaction. An opportunity is
visible as its customer is (own, team, all: `through_customer`), whoever its owner is."""

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.core.wire import currency_places, money_text
from app.models import Customer, CustomerStage, Opportunity, OpportunityStageChange, PipelineStage, User
from app.schemas.sales import MoveIn, OpportunityFilters, OpportunityIn, OpportunityPatch
from app.services.customers.visibility import through_customer, visible_customer_clauses
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, given, money, timestamp
from app.services.identity import workspaces
from app.services.sales import pipelines
from app.services.segments import lifecycle

_MISSING = "No opportunity with that id."
# SQL for the workspace currency's decimals, for a set-based writer of these payloads.
_PLACES = ":money_places"

OPPORTUNITY: Payload[Opportunity] = Payload(
    (
        column("id"),
        column("customer_id"),
        column("title"),
        money("amount", places=_PLACES),
        column("currency"),
        column("expected_close_date"),
        column("pipeline_id"),
        column("stage"),
        column("status"),
        column("owner_id"),
        column("source"),
        timestamp("stage_entered_at"),
        timestamp("closed_at"),
        column("lost_reason"),
        timestamp("created_at"),
        column("created_by"),
        timestamp("updated_at"),
        column("version"),
    ),
    model=data_model("opportunity.created"),
)
OPPORTUNITY_CHANGED = OPPORTUNITY.extended(given("changed_fields"), model=data_model("opportunity.updated"))
OPPORTUNITY_DELETED: Payload[Opportunity] = Payload(
    (column("id"), column("customer_id")), model=data_model("opportunity.deleted")
)


class _Moved:
    """A history row with its opportunity, in the shape `OPPORTUNITY_MOVED` reads."""

    def __init__(self, change: OpportunityStageChange, opportunity: Opportunity) -> None:
        self.change, self.opportunity = change, opportunity
        self.amount, self.currency = opportunity.amount, opportunity.currency


def _of_change(name: str) -> Field[Any]:
    return Field(name, lambda row: getattr(row.change, name), None)


OPPORTUNITY_MOVED: Payload[_Moved] = Payload(
    (
        Field("opportunity_id", lambda row: row.change.opportunity_id, None),
        Field("customer_id", lambda row: row.opportunity.customer_id, None),
        _of_change("pipeline_id"),
        _of_change("from_stage"),
        _of_change("to_stage"),
        _of_change("to_kind"),
        _of_change("lost_reason"),
        _of_change("seconds_in_previous"),
        money("amount", places=_PLACES),
        column("currency"),
        _of_change("at"),
    ),
    model=data_model("opportunity.stage_changed"),
)


def present(opportunity: Opportunity) -> dict[str, Any]:
    """The API shape, the same as `opportunity.created`'s data."""
    return OPPORTUNITY.data(opportunity)


def present_change(change: OpportunityStageChange) -> dict[str, Any]:
    presented: dict[str, Any] = to_jsonable(
        {
            "id": change.id,
            "from_stage": change.from_stage,
            "to_stage": change.to_stage,
            "to_kind": change.to_kind,
            "lost_reason": change.lost_reason,
            "seconds_in_previous": change.seconds_in_previous,
            "actor": change.actor,
            "at": change.at,
        }
    )
    return presented


def visible(ctx: Caller) -> Select[Opportunity]:
    """The live opportunities of the customers the caller may see."""
    return through_customer(Opportunity, ctx).where(Opportunity.deleted_at.is_(None))


async def get(session: AsyncSession, ctx: Caller, opportunity_id: uuid.UUID, *, lock: bool = False) -> Opportunity:
    return await scoped.one(session, visible(ctx).where(Opportunity.id == opportunity_id), missing=_MISSING, lock=lock)


async def _check_money(session: AsyncSession, ctx: Caller, amount: Decimal | None, currency: str | None) -> None:
    """The workspace records money in one currency: another is a 422, as are more decimals than it has."""
    workspace_currency = await workspaces.currency(session, ctx.workspace_id)
    if currency is not None and currency != workspace_currency:
        raise ValidationFailed(
            f"This workspace records money in {workspace_currency}.", loc=["body", "currency"], error_type="currency"
        )
    if amount is not None:
        places = currency_places(workspace_currency)
        exponent = amount.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            raise ValidationFailed(
                f"{workspace_currency} amounts have at most {places} decimals.", loc=["body", "amount"]
            )


async def _check_owner(session: AsyncSession, ctx: Caller, owner_id: uuid.UUID) -> None:
    found = await session.scalar(
        select(User.id).where(User.workspace_id == ctx.workspace_id, User.id == owner_id, User.is_active.is_(True))
    )
    if found is None:
        raise ValidationFailed("owner_id is not an active user of this workspace.", loc=["body", "owner_id"])


async def _stages(session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID) -> dict[str, PipelineStage]:
    return {stage.code: stage for stage in (await pipelines.stages_of(session, ctx, [pipeline_id]))[pipeline_id]}


async def _promote_lead(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> None:
    """A lead with an open opportunity is a prospect: moved through the lifecycle's one writer."""
    stage = await session.scalar(
        select(CustomerStage.stage).where(
            CustomerStage.workspace_id == ctx.workspace_id, CustomerStage.customer_id == customer_id
        )
    )
    if stage == "lead":
        await lifecycle.move(session, ctx, customer_id, "prospect", "An open opportunity.")


def _history(
    ctx: Caller,
    opportunity: Opportunity,
    *,
    from_stage: str | None,
    to: PipelineStage,
    lost_reason: str | None,
    seconds_in_previous: int | None,
) -> OpportunityStageChange:
    return OpportunityStageChange(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        opportunity_id=opportunity.id,
        pipeline_id=opportunity.pipeline_id,
        from_stage=from_stage,
        to_stage=to.code,
        to_kind=to.kind,
        lost_reason=lost_reason,
        seconds_in_previous=seconds_in_previous,
        actor=ctx.actor,
        at=opportunity.stage_entered_at,
    )


async def create(session: AsyncSession, ctx: Caller, data: OpportunityIn) -> Opportunity:
    await _check_money(session, ctx, data.amount, data.currency)
    # FOR SHARE: a merge or delete of the customer waits for this create, or this create for it.
    customer = await session.scalar(
        select(Customer)
        .where(Customer.id == data.customer_id, *visible_customer_clauses(ctx))
        .with_for_update(read=True, of=Customer)
    )
    if customer is None:
        raise NotFound("No customer with that id.")
    await pipelines.locked(session, ctx, data.pipeline_id, missing="No pipeline with the id in `pipeline_id`.")
    stages = await _stages(session, ctx, data.pipeline_id)
    if data.stage is None:
        stage = next(s for s in stages.values() if s.kind == "open")
    elif data.stage not in stages:
        raise ValidationFailed("The pipeline has no stage with that code.", loc=["body", "stage"])
    else:
        stage = stages[data.stage]
    if stage.kind != "open":
        raise ValidationFailed("An opportunity starts in an open stage; move it to close it.", loc=["body", "stage"])
    owner_id = data.owner_id if data.owner_id is not None else customer.owner_id
    if data.owner_id is not None:
        await _check_owner(session, ctx, data.owner_id)
    now = clock.now()
    opportunity = Opportunity(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        customer_id=customer.id,
        pipeline_id=data.pipeline_id,
        stage=stage.code,
        status=stage.kind,
        title=data.title,
        amount=data.amount,
        currency=data.currency,
        expected_close_date=data.expected_close_date,
        owner_id=owner_id,
        source=data.source,
        stage_entered_at=now,
        closed_at=None,
        lost_reason=None,
        created_at=now,
        created_by=ctx.actor,
        updated_at=now,
        version=1,
    )
    session.add(opportunity)
    await session.flush()
    session.add(_history(ctx, opportunity, from_stage=None, to=stage, lost_reason=None, seconds_in_previous=None))
    audit.record(
        session,
        ctx,
        entity_type="opportunity",
        entity_id=opportunity.id,
        action="created",
        changes={key: {"before": None, "after": value} for key, value in _editable(opportunity).items()},
    )
    outbox.emit(session, ctx, "opportunity.created", OPPORTUNITY.data(opportunity))
    await _promote_lead(session, ctx, customer.id)
    await session.flush()
    return opportunity


_EDITABLE = ("title", "amount", "currency", "expected_close_date", "owner_id", "source")


def _editable(opportunity: Opportunity) -> dict[str, Any]:
    """The fields a PATCH sets, as compared and audited: the amount in its currency's decimals, so
    `"1000"` over a stored 1000.0000 is no change."""
    values = {name: to_jsonable(getattr(opportunity, name)) for name in _EDITABLE}
    return values | {"amount": money_text(opportunity.amount, opportunity.currency)}


async def update(
    session: AsyncSession, ctx: Caller, opportunity_id: uuid.UUID, patch: OpportunityPatch, *, expected_version: int
) -> Opportunity:
    opportunity = await get(session, ctx, opportunity_id, lock=True)
    check_version(opportunity.version, expected_version, what="opportunity")
    await _check_money(session, ctx, patch.amount, patch.currency)
    wanted = patch.model_dump(exclude_unset=True)
    if wanted.get("owner_id") is not None and wanted["owner_id"] != opportunity.owner_id:
        await _check_owner(session, ctx, wanted["owner_id"])
    before = _editable(opportunity)
    for name, value in wanted.items():
        setattr(opportunity, name, value)
    after = _editable(opportunity)
    changes = {
        name: {"before": before[name], "after": after[name]} for name in _EDITABLE if before[name] != after[name]
    }
    audit.record_update(session, ctx, opportunity, entity_type="opportunity", changes=changes)
    if changes:
        outbox.emit(
            session,
            ctx,
            "opportunity.updated",
            OPPORTUNITY_CHANGED.data(opportunity, changed_fields=sorted(changes)),
        )
    await session.flush()
    return opportunity


async def delete(session: AsyncSession, ctx: Caller, opportunity_id: uuid.UUID, *, expected_version: int) -> None:
    opportunity = await get(session, ctx, opportunity_id, lock=True)
    check_version(opportunity.version, expected_version, what="opportunity")
    now = clock.now()
    opportunity.deleted_at, opportunity.updated_at = now, now
    opportunity.version += 1
    audit.record(
        session,
        ctx,
        entity_type="opportunity",
        entity_id=opportunity.id,
        action="deleted",
        changes={"deleted_at": {"before": None, "after": to_jsonable(now)}},
    )
    outbox.emit(session, ctx, "opportunity.deleted", OPPORTUNITY_DELETED.data(opportunity))


async def move(
    session: AsyncSession, ctx: Caller, opportunity_id: uuid.UUID, data: MoveIn, *, expected_version: int
) -> Opportunity:
    """Into another stage of its pipeline. Out of a won or lost stage only with `reopen`. Under the
    row's lock and the version read: of two moves from the same version, one wins, the other is a 412."""
    opportunity = await get(session, ctx, opportunity_id, lock=True)
    check_version(opportunity.version, expected_version, what="opportunity")
    await pipelines.locked(session, ctx, opportunity.pipeline_id)
    stages = await _stages(session, ctx, opportunity.pipeline_id)
    target = stages.get(data.stage)
    if target is None:
        raise ValidationFailed("The opportunity's pipeline has no stage with that code.", loc=["body", "stage"])
    others = [code for code in stages if code != opportunity.stage]
    if target.code == opportunity.stage:
        raise Conflict("The opportunity is in that stage already.", current_stage=opportunity.stage, allowed=others)
    if opportunity.status != "open" and not data.reopen:
        raise Conflict(
            f"The opportunity is {opportunity.status}: send `reopen: true` to move it again.",
            current_stage=opportunity.stage,
            allowed=[],
            allowed_with_reopen=others,
        )
    if target.kind == "lost" and target.lost_reason_required and data.lost_reason is None:
        raise ValidationFailed("This stage needs a lost_reason.", loc=["body", "lost_reason"])
    if target.kind != "lost" and data.lost_reason is not None:
        raise ValidationFailed("lost_reason is for lost stages only.", loc=["body", "lost_reason"])
    now = clock.now()
    from_stage = opportunity.stage
    seconds = max(0, int((now - opportunity.stage_entered_at).total_seconds()))
    opportunity.stage, opportunity.status, opportunity.stage_entered_at = target.code, target.kind, now
    opportunity.closed_at = None if target.kind == "open" else now
    opportunity.lost_reason = data.lost_reason if target.kind == "lost" else None
    opportunity.version += 1
    opportunity.updated_at = now
    change = _history(
        ctx, opportunity, from_stage=from_stage, to=target, lost_reason=data.lost_reason, seconds_in_previous=seconds
    )
    session.add(change)
    audit.record(
        session,
        ctx,
        entity_type="opportunity",
        entity_id=opportunity.id,
        action="moved",
        changes={"stage": {"before": from_stage, "after": target.code}},
    )
    moved = OPPORTUNITY_MOVED.data(_Moved(change, opportunity))
    outbox.emit(session, ctx, "opportunity.stage_changed", moved)
    if target.kind != "open":
        outbox.emit(session, ctx, f"opportunity.{target.kind}", moved)
    else:
        await _promote_lead(session, ctx, opportunity.customer_id)
    await session.flush()
    return opportunity


async def history(
    session: AsyncSession, ctx: Caller, opportunity_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[OpportunityStageChange], str | None]:
    """Oldest first: the stage it was created in (`from_stage` null), then every move."""
    await get(session, ctx, opportunity_id)
    stmt = select(OpportunityStageChange).where(
        OpportunityStageChange.workspace_id == ctx.workspace_id,
        OpportunityStageChange.opportunity_id == opportunity_id,
    )
    keys = [SortKey(OpportunityStageChange.id)]
    return await keyset_page(
        session, stmt, keys, list_name=f"opportunity_history:{opportunity_id}", limit=limit, cursor=cursor
    )


async def list_opportunities(
    session: AsyncSession,
    ctx: Caller,
    filters: OpportunityFilters,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
    loc: str,
) -> tuple[list[Opportunity], str | None]:
    """The live opportunities of the customers the caller may see, narrowed by every filter given."""
    if filters.close_from and filters.close_to and filters.close_from > filters.close_to:
        raise ValidationFailed("close_to is before close_from.", loc=[loc, "close_to"])
    if filters.min_amount is not None and filters.max_amount is not None and filters.min_amount > filters.max_amount:
        raise ValidationFailed("max_amount is less than min_amount.", loc=[loc, "max_amount"])
    stmt = visible(ctx)
    any_of: dict[Any, list[Any]] = {
        Opportunity.pipeline_id: filters.pipeline_id,
        Opportunity.stage: filters.stage,
        Opportunity.status: filters.status,
        Opportunity.customer_id: filters.customer_id,
        Opportunity.owner_id: filters.owner_id,
        Opportunity.source: filters.source,
    }
    for column_, values in any_of.items():
        if values:
            stmt = stmt.where(column_.in_(values))
    if filters.q:
        stmt = stmt.where(Opportunity.title.icontains(filters.q, autoescape=True))
    if filters.close_from:
        stmt = stmt.where(Opportunity.expected_close_date >= filters.close_from)
    if filters.close_to:
        stmt = stmt.where(Opportunity.expected_close_date <= filters.close_to)
    if filters.min_amount is not None:
        stmt = stmt.where(Opportunity.amount >= filters.min_amount)
    if filters.max_amount is not None:
        stmt = stmt.where(Opportunity.amount <= filters.max_amount)
    descending = sort.startswith("-")
    # Ids are UUIDv7, so the id orders by creation.
    keys = [SortKey(Opportunity.id, descending=descending)]
    if sort.endswith("amount"):
        keys.insert(0, SortKey(Opportunity.amount, descending=descending))
    return await keyset_page(
        session, stmt, keys, list_name=f"opportunities:{sort}", limit=limit, cursor=cursor, cursor_loc=loc
    )
