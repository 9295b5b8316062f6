"""Lead scoring: the workspace's rules (points per filter condition, decay by time since the last
contact) and the recompute that writes each customer's score, set-based over id ranges.

A rule's condition is a filter of the segments' language, compiled by its compiler; the score is the
sum of the points of the rules a customer matches, a decaying rule's points halved (toward zero)
once per `half_life_days` whole days since the customer's last contact, or since the customer was
created before any contact. Whole half-lives make a score a step function of time: a pass run again
the same day finds nothing to change."""

import asyncio
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, and_, case, cast, extract, func, literal, select, update
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock, scoped
from app.core.access import Caller, system_caller
from app.core.errors import ValidationFailed
from app.core.jsonable import to_jsonable
from app.core.versions import check_version
from app.models import Customer, CustomerLeadScore, CustomerStage, CustomerValue, Interaction, LeadScoringRules
from app.schemas.lead_scoring import LeadScoringIn
from app.services.events import audit, outbox
from app.services.filters.catalogue import LEAD_SCORE_FIELD
from app.services.filters.compiler import compile_filter
from app.services.segments.lifecycle import CHUNK_BOUNDS, IdRange

DEFAULT_DOCUMENT: dict[str, Any] = LeadScoringIn(rules=[]).model_dump(mode="json")
# A rule's points are at most 1,000: after 10 halvings nothing is left, and a shift by more than
# 30 would overflow an integer.
MAX_HALVINGS = 30
CHUNK_CUSTOMERS = 50_000
PARALLEL_CHUNKS = 2
# A workspace's scores are recomputed once a day at least, for the decay and for what changed in
# the customers' data since.
RESCORE_HOURS = 24


async def _stored(session: AsyncSession, ctx: Caller, *, lock: bool = False) -> LeadScoringRules:
    """The stored document, or the default (version 0, not stored) when the workspace never saved one."""
    row = await session.get(LeadScoringRules, ctx.workspace_id, with_for_update=lock)
    if row is not None:
        return row
    return LeadScoringRules(workspace_id=ctx.workspace_id, document=DEFAULT_DOCUMENT, version=0)


async def get_rules(session: AsyncSession, ctx: Caller) -> dict[str, Any]:
    return present(await _stored(session, ctx))


async def put_rules(
    session: AsyncSession, ctx: Caller, data: LeadScoringIn, *, expected_version: int
) -> dict[str, Any]:
    """Replace the rules (If-Match). Every condition is compiled first, so a bad one is a 422 whose
    `loc` points into it and nothing is stored. A change asks the workers for a recompute."""
    for index, rule in enumerate(data.rules):
        loc: list[str | int] = ["body", "rules", index, "filter"]
        _refuse_the_score_itself(rule.filter, loc)
        await compile_filter(session, ctx, rule.filter, loc=loc)
    # Two first saves at once would both insert the row: the second waits, then finds version 1.
    await scoped.one_at_a_time(session, ctx, "lead_scoring_rules")
    stored = await _stored(session, ctx, lock=True)
    check_version(stored.version, expected_version, what="lead scoring rules")
    new = data.model_dump(mode="json")
    if stored.version and stored.document == new:
        return present(stored)
    changes = {
        key: {"before": to_jsonable(stored.document.get(key)), "after": value}
        for key, value in new.items()
        if stored.document.get(key) != value
    }
    if stored.version == 0:
        session.add(stored)
    now = clock.now()
    stored.document = new
    stored.version += 1
    stored.updated_at = now
    stored.recompute_requested_at = now
    await session.flush()
    audit.record(
        session, ctx, entity_type="lead_scoring_rules", entity_id=ctx.workspace_id, action="updated", changes=changes
    )
    await outbox.wake_workers(session)
    return present(stored)


def _refuse_the_score_itself(node: Any, loc: list[str | int]) -> None:
    """A rule on the score would feed each pass's result into the next."""
    if isinstance(node, dict):
        if node.get("field") == LEAD_SCORE_FIELD:
            raise ValidationFailed(
                "A lead scoring rule cannot test the lead score.", loc=[*loc, "field"], error_type="invalid_filter"
            )
        for key, child in node.items():
            _refuse_the_score_itself(child, [*loc, key])
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _refuse_the_score_itself(child, [*loc, index])


def present(row: LeadScoringRules) -> dict[str, Any]:
    return {
        **row.document,
        "version": row.version,
        "updated_at": row.updated_at if row.version else None,
        "scored_at": row.scored_at,
        "recompute_pending": row.recompute_requested_at is not None,
    }


async def score_statement(
    session: AsyncSession, ctx: Caller, document: dict[str, Any], *, ids: IdRange, now: datetime
) -> Insert:
    """One statement for the live customers with ids in [lo, hi) (a null bound open): each one's
    score, and an upsert of those whose score differs from the stored one (no row is 0)."""
    lo, hi = ids
    ws = ctx.workspace_id

    def in_range(column: Any) -> list[ColumnElement[bool]]:
        # Repeated on each joined table, as the lifecycle pass does: PostgreSQL carries equalities
        # across a join but not ranges.
        return [*([column >= lo] if lo is not None else []), *([column < hi] if hi is not None else [])]

    rules, compiled = [], []
    for index, rule in enumerate(document["rules"]):
        try:
            compiled.append(await compile_filter(session, ctx, rule["filter"], loc=["rules", index, "filter"]))
        except ValidationFailed:
            continue  # compiled at the save; since then its custom field was deleted: it scores nothing
        rules.append(rule)
    sources = set().union(*(c.sources for c in compiled))
    source: Any = Customer.__table__
    if "value" in sources:
        source = source.outerjoin(
            CustomerValue,
            and_(
                CustomerValue.workspace_id == Customer.workspace_id,
                CustomerValue.customer_id == Customer.id,
                *in_range(CustomerValue.customer_id),
            ),
        )
    if "stage" in sources:
        source = source.outerjoin(
            CustomerStage,
            and_(
                CustomerStage.workspace_id == Customer.workspace_id,
                CustomerStage.customer_id == Customer.id,
                *in_range(CustomerStage.customer_id),
            ),
        )
    halvings: ColumnElement[Any] = literal(0)
    if any(rule["decays"] for rule in rules):
        last_contact = (
            select(Interaction.customer_id, func.max(Interaction.occurred_at).label("at"))
            .where(Interaction.workspace_id == ws, Interaction.deleted_at.is_(None), *in_range(Interaction.customer_id))
            .group_by(Interaction.customer_id)
            .subquery("last_contact")
        )
        source = source.outerjoin(last_contact, last_contact.c.customer_id == Customer.id)
        age_days = extract("epoch", literal(now) - func.coalesce(last_contact.c.at, Customer.created_at)) / 86400
        whole = cast(func.floor(age_days / int(document["half_life_days"])), Integer)
        halvings = func.least(func.greatest(whole, 0), MAX_HALVINGS)

    def points(rule: dict[str, Any]) -> ColumnElement[Any]:
        if not rule["decays"]:
            return literal(int(rule["points"]))
        # div() truncates toward zero: 25 points are 12 after one half-life, -25 are -12.
        return cast(func.div(int(rule["points"]), literal(1).op("<<")(halvings)), Integer)

    total: ColumnElement[Any] = literal(0)
    for rule, condition in zip(rules, compiled, strict=True):
        total = total + case((condition.where, points(rule)), else_=0)
    scored = (
        select(Customer.id.label("customer_id"), cast(total, Integer).label("score"))
        .select_from(source)
        .where(Customer.workspace_id == ws, Customer.deleted_at.is_(None), *in_range(Customer.id))
        .subquery("scored")
    )
    stored = CustomerLeadScore.__table__.alias("stored")
    changed: Select[Any] = (
        select(literal(ws), scored.c.customer_id, scored.c.score, literal(now))
        .select_from(
            scored.outerjoin(
                stored,
                and_(
                    stored.c.workspace_id == ws,
                    stored.c.customer_id == scored.c.customer_id,
                    *in_range(stored.c.customer_id),
                ),
            )
        )
        .where(func.coalesce(stored.c.score, 0) != scored.c.score)
    )
    upsert = pg_insert(CustomerLeadScore).from_select(["workspace_id", "customer_id", "score", "changed_at"], changed)
    return upsert.on_conflict_do_update(
        index_elements=[CustomerLeadScore.workspace_id, CustomerLeadScore.customer_id],
        set_={"score": upsert.excluded.score, "changed_at": upsert.excluded.changed_at},
    )


async def recompute(
    session: AsyncSession, ctx: Caller, document: dict[str, Any], *, ids: IdRange = (None, None), now: datetime
) -> int:
    """Score the customers with ids in [lo, hi) (all, by default) in one statement; returns how
    many scores changed."""
    statement = await score_statement(session, ctx, document, ids=ids, now=now)
    result = await session.execute(statement)
    return int(result.rowcount)  # type: ignore[attr-defined]


async def recompute_in_chunks(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Caller,
    document: dict[str, Any],
    *,
    now: datetime,
    chunk: int = CHUNK_CUSTOMERS,
    parallel: int = PARALLEL_CHUNKS,
) -> int:
    """A whole workspace: id ranges of `chunk` customers, each one statement committed on its own,
    `parallel` at a time (the lifecycle pass's shape). Every range is scored at the same `now`."""
    async with sessions() as session:
        bounds: list[uuid.UUID | None] = list(
            (await session.scalars(CHUNK_BOUNDS, {"ws": ctx.workspace_id, "chunk": chunk})).all()
        )
    pending = iter(zip([None, *bounds], [*bounds, None], strict=True))
    changed = 0

    async def drain() -> None:
        nonlocal changed
        for ids in pending:  # shared: each range goes to whichever runner asks first
            async with sessions() as session:
                in_range = await recompute(session, ctx, document, ids=ids, now=now)
                await session.commit()
            changed += in_range

    async with asyncio.TaskGroup() as runners:
        for _ in range(max(1, parallel)):
            runners.create_task(drain())
    return changed


async def claim_due(session: AsyncSession, *, now: datetime) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """Workspaces whose rules were saved since their last pass, or last scored a day ago, with the
    document to score by. The claim (one UPDATE) marks them scored, so two workers never take the
    same workspace; its caller commits it before scoring."""
    due = (
        update(LeadScoringRules)
        .where(
            (LeadScoringRules.recompute_requested_at.is_not(None))
            | (LeadScoringRules.scored_at.is_(None))
            | (LeadScoringRules.scored_at < now - func.make_interval(0, 0, 0, 0, RESCORE_HOURS))
        )
        .values(recompute_requested_at=None, scored_at=now)
        .returning(LeadScoringRules.workspace_id, LeadScoringRules.document)
    )
    return [(row[0], row[1]) for row in (await session.execute(due)).all()]


async def request_again(session: AsyncSession, workspace_id: uuid.UUID, *, now: datetime) -> None:
    """A pass that failed leaves its workspace due at the next run."""
    await session.execute(
        update(LeadScoringRules)
        .where(LeadScoringRules.workspace_id == workspace_id, LeadScoringRules.recompute_requested_at.is_(None))
        .values(recompute_requested_at=now)
    )


async def recompute_due(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime, parallel: int = PARALLEL_CHUNKS
) -> int:
    """Every due workspace's pass; returns how many scores changed."""
    async with sessions() as session:
        due = await claim_due(session, now=now)
        await session.commit()
    changed = 0
    for workspace_id, document in due:
        try:
            changed += await recompute_in_chunks(
                sessions, system_caller(workspace_id), document, now=now, parallel=parallel
            )
        except Exception:
            async with sessions() as session:
                await request_again(session, workspace_id, now=now)
                await session.commit()
            raise
    return changed
