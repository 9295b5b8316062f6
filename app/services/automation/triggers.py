"""What fires a rule, and for whom: committed events (read with the workspace's own cursor),
cron schedules over an audience, and dates (birthdays, date fields, fixed and lunar days).

Each trigger builds its candidates as one statement (customer_id, trigger_key, occasion) that
`runs.execute` records and acts on set-based, and that a preview counts."""

import logging
import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    Select,
    String,
    Text,
    and_,
    case,
    cast,
    column,
    extract,
    func,
    literal,
    null,
    select,
    text,
    tuple_,
    values,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller, system_caller
from app.core.errors import DomainError
from app.core.wire import utc_text
from app.models import AutomationEventCursor, AutomationRule, AutomationRun, Customer, OutboxEvent
from app.services.automation import conditions, runs
from app.services.automation.runs import Candidates
from app.services.customers.visibility import visible_customer_clauses
from app.services.engagement import lunar_dates
from app.services.filters.compiler import compile_filter
from app.services.identity import workspaces
from app.services.segments import lifecycle
from app.services.segments.segments import customers_matching

logger = logging.getLogger(__name__)

EVENT_BATCH = 200
NIL = uuid.UUID(int=0)

# A run over many customers goes in ranges of customer ids, each range one statement per action, so
# that no statement nears the statement timeout however large the workspace; the worker commits each
# range on its own (each customer's run and actions are still one transaction).
CHUNK_CUSTOMERS = 20_000
PARALLEL_CHUNKS = 2
IdRange = tuple[uuid.UUID | None, uuid.UUID | None]
EVERYONE: IdRange = (None, None)


def horizon() -> Any:
    """The oldest transaction still running: events below it are committed (or never will be)."""
    return func.pg_snapshot_xmin(func.pg_current_snapshot()).cast(Text).cast(BigInteger)


def customer_of(event_type: str, data: dict[str, Any]) -> uuid.UUID | None:
    """The customer an event is about, as the change feed reads it (app/services/events/events.py)."""
    if event_type == "customer.merged":
        found = data.get("survivor_id")
    elif event_type.startswith("customer.relation_"):
        found = data.get("from_customer_id")
    elif event_type.startswith("customer."):
        found = data.get("id")
    else:
        found = data.get("customer_id")
    try:
        return uuid.UUID(str(found)) if found else None
    except ValueError:
        return None


def has_customer(event_type: str, model_fields: set[str]) -> bool:
    """Whether events of the type name a customer where `customer_of` looks (their data's fields)."""
    if event_type == "customer.merged":
        return "survivor_id" in model_fields
    if event_type.startswith("customer.relation_"):
        return "from_customer_id" in model_fields
    if event_type.startswith("customer."):
        return "id" in model_fields
    return "customer_id" in model_fields


async def _audience(session: AsyncSession, ctx: Caller, audience: Any, *, for_caller: bool) -> Select[Any]:
    compiled = await compile_filter(session, ctx, audience, loc=["trigger", "audience"])
    return customers_matching(ctx, compiled, for_caller=for_caller)


def _live(ctx: Caller, for_caller: bool) -> list[Any]:
    if for_caller:
        return visible_customer_clauses(ctx)
    return [Customer.workspace_id == ctx.workspace_id, Customer.deleted_at.is_(None)]


# Schedules.


def next_firing(cron: str, after: datetime, timezone: str) -> datetime:
    """The first firing after `after`, the cron read in the workspace's time zone."""
    local = after.astimezone(ZoneInfo(timezone))
    found: datetime = croniter(cron, local).get_next(datetime)
    return found.astimezone(ZoneInfo("UTC"))


async def schedule_candidates(
    session: AsyncSession,
    ctx: Caller,
    rule: AutomationRule,
    fired_at: datetime,
    *,
    ids: IdRange = EVERYONE,
) -> Candidates:
    """The firing's audience (those in `ids`), keyed by the firing's time."""
    audience = await _audience(session, ctx, rule.trigger["audience"], for_caller=False)
    matching = audience.where(*_in_range(ids)).subquery("matching")
    return select(
        matching.c.id.label("customer_id"),
        literal(f"schedule:{utc_text(fired_at)}", type_=String).label("trigger_key"),
        null().cast(Date).label("occasion"),
    )


# Dates.


def _window(today: date, offset: int) -> tuple[date, date]:
    """The occasions a run today is for: `offset` days before (negative) — or any later day up to
    the occasion, so a missed day is caught up — or exactly `offset` days after."""
    return today - timedelta(days=max(offset, 0)), today - timedelta(days=offset)


def _date_of(trigger: dict[str, Any]) -> Any:
    if trigger["date"] == "birthday":
        return Customer.birthday
    if trigger["date"] == "custom_field":
        return cast(Customer.custom_fields[trigger["field_key"]].astext, Date)
    return func.make_date(2000, int(trigger["month"]), int(trigger["day"]))


# A customer who said no on every channel asked, and yes on none, is greeted on no occasion (as care
# reminders always skipped them).
_CONSENTS_SOMEWHERE = text(
    "NOT (EXISTS (SELECT 1 FROM jsonb_each(customers.consent) e WHERE e.value = 'false'::jsonb) "
    "AND NOT EXISTS (SELECT 1 FROM jsonb_each(customers.consent) e WHERE e.value = 'true'::jsonb))"
)


async def date_candidates(
    session: AsyncSession,
    ctx: Caller,
    rule: AutomationRule,
    today: date,
    *,
    for_caller: bool = False,
    ids: IdRange = EVERYONE,
) -> Candidates | None:
    """Customers (in `ids`) whose occasion falls in today's window (None when no lunar day does)."""
    trigger = rule.trigger
    occasion_source = _date_of(trigger)
    scope = [*_live(ctx, for_caller), *_in_range(ids), _CONSENTS_SOMEWHERE]
    if trigger.get("audience") is not None:
        # The audience of the range only: a range's run reads its own customers, not the whole
        # audience again.
        audience = await _audience(session, ctx, trigger["audience"], for_caller=False)
        scope.append(Customer.id.in_(audience.where(*_in_range(ids))))
    low, high = _window(today, int(trigger["offset_days"]))
    if trigger["calendar"] == "lunar":
        found = lunar_dates.occurrences(low, (high - low).days)
        if not found:
            return None
        window = values(
            column("month", Integer), column("day", Integer), column("on", Date), column("lunar_year", Integer),
            name="lunar_window",
        ).data([(o.month, o.day, o.on, o.lunar_year) for o in found])  # fmt: skip
        return (
            select(
                Customer.id.label("customer_id"),
                ("lunar:" + cast(window.c.lunar_year, Text)).label("trigger_key"),
                window.c.on.label("occasion"),
            )
            .select_from(Customer)
            .join(
                window,
                and_(
                    cast(extract("month", occasion_source), Integer) == window.c.month,
                    cast(extract("day", occasion_source), Integer) == window.c.day,
                ),
            )
            .where(*scope)
        )
    month_day = func.to_char(occasion_source, "MMDD")
    year = low.year + case((month_day < low.strftime("%m%d"), 1), else_=0)
    occasion = (
        func.make_date(year, cast(extract("month", occasion_source), Integer), 1)
        + (cast(extract("day", occasion_source), Integer) - 1)
    ).label("occasion")
    dated = select(Customer.id.label("customer_id"), occasion).where(*scope, occasion_source.is_not(None)).subquery()
    return select(
        dated.c.customer_id,
        cast(cast(extract("year", dated.c.occasion), Integer), Text).label("trigger_key"),
        cast(dated.c.occasion, Date).label("occasion"),
    ).where(cast(dated.c.occasion, Date) <= high)


async def local_today(session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> tuple[date, str]:
    timezone = await workspaces.timezone(session, workspace_id)
    return now.astimezone(ZoneInfo(timezone)).date(), timezone


# Events.


async def start_listening(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """The first transaction an event rule saved or switched on now hears: its own. Events of
    transactions that began writing before it are not the rule's business, even when they commit
    after it (the horizon would be no better: an old transaction anywhere on the server holds it
    back, and the rule would hear events committed long before it was saved). The workspace's
    cursor starts there if it has none yet."""
    since = int(await session.scalar(select(func.pg_current_xact_id().cast(Text).cast(BigInteger))) or 0)
    await session.execute(
        pg_insert(AutomationEventCursor)
        .values(workspace_id=workspace_id, txid=since - 1, event_id=NIL, updated_at=clock.now())
        .on_conflict_do_nothing()
    )
    return since


async def listening_workspaces(session: AsyncSession) -> list[uuid.UUID]:
    return list(
        (
            await session.scalars(
                select(AutomationRule.workspace_id)
                .where(
                    AutomationRule.trigger_kind == "event", AutomationRule.active, AutomationRule.deleted_at.is_(None)
                )
                .distinct()
            )
        ).all()
    )


async def take_events(session: AsyncSession, workspace_id: uuid.UUID, *, now: datetime) -> tuple[int, bool]:
    """The next committed events of the workspace after its cursor, run against its event rules,
    and the cursor moved past them, in the caller's one transaction: a crash before commit leaves
    the cursor where it was and the runs unrecorded, and a repeat records nothing twice. A worker
    that finds the cursor locked leaves the workspace to the one holding it. Returns the runs
    recorded, and whether a full batch was read (more may wait)."""
    cursor = await session.scalar(
        select(AutomationEventCursor)
        .where(AutomationEventCursor.workspace_id == workspace_id)
        .with_for_update(skip_locked=True)
    )
    if cursor is None:
        return 0, False
    events = (
        await session.execute(
            select(OutboxEvent.id, OutboxEvent.txid, OutboxEvent.type, OutboxEvent.actor, OutboxEvent.data)
            .where(
                OutboxEvent.workspace_id == workspace_id,
                tuple_(OutboxEvent.txid, OutboxEvent.id) > tuple_(literal(cursor.txid), literal(cursor.event_id)),
                OutboxEvent.txid < horizon(),
            )
            .order_by(OutboxEvent.txid, OutboxEvent.id)
            .limit(EVENT_BATCH)
        )
    ).all()
    if not events:
        return 0, False
    rules: dict[str, list[AutomationRule]] = {}
    for rule in await session.scalars(
        select(AutomationRule)
        .where(
            AutomationRule.workspace_id == workspace_id,
            AutomationRule.trigger_kind == "event",
            AutomationRule.active,
            AutomationRule.deleted_at.is_(None),
        )
        .order_by(AutomationRule.id)
    ):
        rules.setdefault(rule.event_type or "", []).append(rule)
    timezone = await workspaces.timezone(session, workspace_id)
    recorded = 0
    for event in events:
        for rule in rules.get(event.type, []):
            if event.txid >= (rule.listening_since_txid or 0):
                recorded += await _on_event(session, rule, event, timezone=timezone, now=now)
    cursor.txid, cursor.event_id, cursor.updated_at = events[-1].txid, events[-1].id, now
    return recorded, len(events) == EVENT_BATCH


async def _on_event(session: AsyncSession, rule: AutomationRule, event: Any, *, timezone: str, now: datetime) -> int:
    if rule.trigger.get("conditions") is not None and not conditions.holds(rule.trigger["conditions"], event.data):
        return 0
    customer_id = customer_of(event.type, event.data)
    if customer_id is None:
        return 0
    actor = event.actor or {}
    depth = int(actor.get("depth") or 0) + 1 if actor.get("type") == "automation" else 1
    candidates = runs.one_customer(customer_id, str(event.id), rule.workspace_id)
    try:
        async with session.begin_nested():
            if rule.trigger.get("audience") is not None:
                ctx = system_caller(rule.workspace_id)
                candidates = candidates.where(
                    Customer.id.in_(await _audience(session, ctx, rule.trigger["audience"], for_caller=False))
                )
            return await runs.execute(
                session, rule, candidates, depth=depth, timezone=timezone, now=now, event_id=event.id
            )
    except (DomainError, IntegrityError, DataError) as exc:
        # What a retry cannot mend (a filter naming a field since deleted, a record gone) is this
        # run's failure, not the stream's: the cursor moves on.
        try:
            async with session.begin_nested():
                return await runs.record_failure(
                    session, rule, customer_id, str(event.id), depth=depth, now=now, event_id=event.id, reason=_why(exc)
                )
        except IntegrityError:
            return 0  # the customer itself is gone (erased): nothing to record it against


def _why(exc: Exception) -> str:
    return exc.detail if isinstance(exc, DomainError) else type(exc).__name__


# Schedules and dates.


async def id_ranges(session: AsyncSession, workspace_id: uuid.UUID) -> list[IdRange]:
    """The workspace's live customers in ranges of CHUNK_CUSTOMERS ids."""
    bounds: list[uuid.UUID | None] = list(
        (await session.scalars(lifecycle.CHUNK_BOUNDS, {"ws": workspace_id, "chunk": CHUNK_CUSTOMERS})).all()
    )
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def _in_range(ids: IdRange) -> list[Any]:
    low, high = ids
    return [
        clause
        for clause in (Customer.id >= low if low else None, Customer.id < high if high else None)
        if clause is not None
    ]


async def due_schedules(session: AsyncSession, *, now: datetime) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
    """(workspace, rule, due firing) of the schedule rules that are due; firings missed while no
    worker ran fold into the one due."""
    rows = await session.execute(
        select(AutomationRule.workspace_id, AutomationRule.id, AutomationRule.next_run_at)
        .where(
            AutomationRule.trigger_kind == "schedule",
            AutomationRule.active,
            AutomationRule.deleted_at.is_(None),
            AutomationRule.next_run_at <= now,
        )
        .order_by(AutomationRule.next_run_at)
    )
    return [(ws, rule_id, due) for ws, rule_id, due in rows if due is not None]


async def advance_schedule(session: AsyncSession, rule: AutomationRule, *, fired_at: datetime, now: datetime) -> None:
    """The rule's next firing after `now`, once its firing `fired_at` has run (unless changed since)."""
    if rule.next_run_at == fired_at:
        timezone = await workspaces.timezone(session, rule.workspace_id)
        rule.next_run_at = next_firing(rule.trigger["cron"], now, timezone)


async def fire_schedule(
    session: AsyncSession, rule: AutomationRule, *, fired_at: datetime, now: datetime, ids: IdRange = EVERYONE
) -> int:
    """The firing `fired_at` for the rule's audience (those in `ids`)."""
    timezone = await workspaces.timezone(session, rule.workspace_id)
    try:
        async with session.begin_nested():
            ctx = system_caller(rule.workspace_id)
            candidates = await schedule_candidates(session, ctx, rule, fired_at, ids=ids)
            return await runs.execute(session, rule, candidates, depth=1, timezone=timezone, now=now)
    except (DomainError, DataError) as exc:
        # An audience naming a field since deleted: the rule waits for its next firing, and the
        # other rules run.
        logger.warning("schedule rule not run", extra={"rule": str(rule.id), "error": _why(exc)})
        return 0


async def run_date_rule(session: AsyncSession, rule: AutomationRule, *, now: datetime, ids: IdRange = EVERYONE) -> int:
    """The rule for today's occasions in the workspace's time zone (of the customers in `ids`); runs
    already recorded for an occasion's year are not repeated."""
    today, timezone = await local_today(session, rule.workspace_id, now)
    try:
        async with session.begin_nested():
            candidates = await date_candidates(session, system_caller(rule.workspace_id), rule, today, ids=ids)
            if candidates is None:
                return 0
            return await runs.execute(session, rule, candidates, depth=1, timezone=timezone, now=now)
    except (DomainError, DataError) as exc:
        # An audience naming a field since deleted, a date field holding no date: the other rules run.
        logger.warning("date rule not run", extra={"rule": str(rule.id), "error": _why(exc)})
        return 0


async def run_in_ranges(session: AsyncSession, rule: AutomationRule, *, now: datetime) -> int:
    """A schedule rule's firing now, or a date rule's run, range after range in the caller's one
    transaction (run now, and care rules run from the API)."""
    ran = 0
    for ids in await id_ranges(session, rule.workspace_id):
        if rule.trigger_kind == "schedule":
            ran += await fire_schedule(session, rule, fired_at=now, now=now, ids=ids)
        else:
            ran += await run_date_rule(session, rule, now=now, ids=ids)
    return ran


async def live_rule(session: AsyncSession, workspace_id: uuid.UUID, rule_id: uuid.UUID) -> AutomationRule | None:
    """The rule while active; None when paused or deleted since it was found due."""
    return await session.scalar(
        select(AutomationRule).where(
            AutomationRule.workspace_id == workspace_id,
            AutomationRule.id == rule_id,
            AutomationRule.active,
            AutomationRule.deleted_at.is_(None),
        )
    )


async def date_rules(
    session: AsyncSession, *, workspace_id: uuid.UUID | None = None, managed_by: str | None = None
) -> list[AutomationRule]:
    stmt = select(AutomationRule).where(
        AutomationRule.trigger_kind == "date", AutomationRule.active, AutomationRule.deleted_at.is_(None)
    )
    if workspace_id is not None:
        stmt = stmt.where(AutomationRule.workspace_id == workspace_id)
    if managed_by is not None:
        stmt = stmt.where(AutomationRule.managed_by == managed_by)
    return list((await session.scalars(stmt.order_by(AutomationRule.workspace_id, AutomationRule.id))).all())


# Preview.


async def preview(
    session: AsyncSession, ctx: Caller, rule: AutomationRule, *, limit: int, now: datetime
) -> tuple[int, list[Any]]:
    """Who a run now would act for, among the customers the caller may see: the count and the
    first `limit`, in one statement over the filter compiler's SQL. Event rules: the customers
    whose events would run it (the audience); date rules: today's occasions not yet run."""
    if rule.trigger_kind == "date":
        today, _ = await local_today(session, rule.workspace_id, now)
        found = await date_candidates(session, ctx, rule, today, for_caller=True)
        if found is None:
            return 0, []
        done = select(AutomationRun.customer_id).where(
            AutomationRun.workspace_id == rule.workspace_id,
            AutomationRun.rule_id == rule.id,
            AutomationRun.customer_id == found.selected_columns.customer_id,
            AutomationRun.trigger_key == found.selected_columns.trigger_key,
        )
        candidates = found.where(~done.exists())
    elif rule.trigger.get("audience") is not None:
        matching = (await _audience(session, ctx, rule.trigger["audience"], for_caller=True)).subquery("matching")
        candidates = select(matching.c.id.label("customer_id"), null().cast(Date).label("occasion"))
    else:
        candidates = select(Customer.id.label("customer_id"), null().cast(Date).label("occasion")).where(
            *visible_customer_clauses(ctx)
        )
    affected = candidates.cte("affected")
    page = select(affected.c.customer_id, affected.c.occasion).order_by(affected.c.customer_id).limit(limit).subquery()
    total = select(func.count()).select_from(affected).scalar_subquery().label("total")
    rows = (
        await session.execute(
            select(Customer.id, Customer.name, page.c.occasion, total)
            .join_from(
                page, Customer, and_(Customer.workspace_id == ctx.workspace_id, Customer.id == page.c.customer_id)
            )
            .order_by(page.c.customer_id)
        )
    ).all()
    return (int(rows[0].total) if rows else 0), [
        {"id": row.id, "name": row.name, "occasion": row.occasion} for row in rows
    ]
