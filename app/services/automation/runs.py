"""Running a rule for a set of customers, exactly once per (rule, trigger, customer).

One batch is one transaction: its run records are inserted with ON CONFLICT DO NOTHING on the
unique key, and the rule's actions then run for the rows that statement inserted (by the ids it
returned), so an internal effect commits with its run record or not at all, and a second
runner of the same trigger (a re-run, a concurrent worker) inserts nothing and does nothing.
Tasks, segment members, webhook requests and messages (through `messages.enqueue_many`) are
written set-based; tags, lifecycle moves and tickets go through their writers for each customer
(their versions, audit entries and events), each in a savepoint so that one customer's failure is
recorded on that run alone."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Date, Select, String, any_, func, literal, null, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import scoped
from app.core.access import Caller, automation_caller
from app.core.errors import DomainError
from app.core.ids import new_id
from app.core.pagination import SortKey, keyset_page
from app.models import AutomationRule, AutomationRun, Customer, CustomerStage, Segment, WebhookEndpoint
from app.schemas.ticket import TicketIn
from app.services.customers import customers
from app.services.customers.visibility import through_customer
from app.services.engagement import assignees
from app.services.events import outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, given
from app.services.outreach import messages
from app.services.segments import lifecycle
from app.services.service_desk import tickets

# The customers a trigger fires for: the columns customer_id, trigger_key and occasion.
Candidates = Select[*tuple[Any, ...]]

# A run caused by a person's change is at depth 1; each automation run its actions' events cause is
# one deeper. Past this the run is recorded as skipped and nothing runs.
MAX_CHAIN_DEPTH = 3
CHAIN_TOO_DEEP = "chain_depth_exceeded"

_RUN_ID: Field[Any] = Field("run_id", lambda row: row.id, lambda alias: f"{alias}.id")
RUN_FAILED: Payload[AutomationRun] = Payload(
    (_RUN_ID, column("rule_id"), column("customer_id"), column("trigger_key"), column("outcome"), column("reason"),
     column("depth")),
    model=data_model("automation.run_failed"),
)  # fmt: skip
WEBHOOK_REQUESTED: Payload[AutomationRun] = Payload(
    (_RUN_ID, column("rule_id"), column("customer_id"), column("trigger_key"), given("action_index"),
     given("endpoint_id")),
    model=data_model("automation.webhook_requested"),
)  # fmt: skip


@dataclass
class Batch:
    """The runs one statement recorded, and what their actions did."""

    rule: AutomationRule
    ctx: Caller
    now: datetime
    timezone: str
    # The runs the batch's statement inserted, and their customers (with each one's trigger key).
    run_ids: list[uuid.UUID] = field(default_factory=list)
    customer_ids: list[uuid.UUID] = field(default_factory=list)
    trigger_keys: dict[uuid.UUID, str] = field(default_factory=dict)
    # Failures of a whole action (its segment or endpoint gone) and of one customer's.
    failed_actions: dict[int, str] = field(default_factory=dict)
    failed_for: dict[uuid.UUID, dict[int, str]] = field(default_factory=dict)
    # An action the customer's own settings refused (a message without consent): not a failure.
    skipped_for: dict[uuid.UUID, dict[int, str]] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        return {"ws": self.rule.workspace_id, "runs": self.run_ids, "now": self.now}


# Actions whose effect leaves after the run commits: a webhook's delivery, a message's send.
_QUEUED = frozenset({"call_webhook", "send_message"})


def planned(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each run records before its actions run; failures are written over it."""
    return [
        {"index": i, "type": a["type"], "outcome": "queued" if a["type"] in _QUEUED else "ok"}
        for i, a in enumerate(actions)
    ]


async def execute(
    session: AsyncSession,
    rule: AutomationRule,
    candidates: Candidates,
    *,
    depth: int,
    timezone: str,
    now: datetime,
    event_id: uuid.UUID | None = None,
) -> int:
    """Runs `rule` for each row of `candidates` (columns customer_id, trigger_key, occasion) that
    has no run yet for its trigger key. Returns how many runs were recorded."""
    skipped = depth > MAX_CHAIN_DEPTH
    batch = Batch(rule, automation_caller(rule.workspace_id, rule.id, depth), now, timezone)
    found = candidates.subquery("candidates")
    values = select(
        literal(rule.workspace_id),
        func.guanxi_uuid7(),
        literal(rule.id),
        found.c.trigger_key,
        found.c.customer_id,
        literal(event_id, type_=AutomationRun.event_id.type),
        found.c.occasion,
        literal(depth),
        literal("skipped" if skipped else "ok"),
        literal(CHAIN_TOO_DEEP if skipped else None, type_=String),
        literal([] if skipped else planned(rule.actions), type_=JSONB),
        literal(now),
    )
    names = ["workspace_id", "id", "rule_id", "trigger_key", "customer_id", "event_id", "occasion",
             "depth", "outcome", "reason", "actions", "ran_at"]  # fmt: skip
    inserted = (
        await session.execute(
            pg_insert(AutomationRun)
            .from_select(names, values)
            .on_conflict_do_nothing(index_elements=["workspace_id", "rule_id", "trigger_key", "customer_id"])
            .returning(AutomationRun.id, AutomationRun.customer_id, AutomationRun.trigger_key)
        )
    ).all()
    if not inserted:
        return 0
    batch.run_ids = [row.id for row in inserted]
    batch.customer_ids = sorted(row.customer_id for row in inserted)
    batch.trigger_keys = {row.customer_id: row.trigger_key for row in inserted}
    if not skipped:
        for index, action in enumerate(rule.actions):
            await ACTIONS[action["type"]](session, batch, index, action)
        await _record_failures(session, batch)
    # Only runs skipped or failed have an `automation.run_failed` event: when every action went
    # through, there is nothing to look for.
    if skipped or batch.failed_actions or batch.failed_for:
        await session.execute(text(_RUN_FAILED_SQL), {**batch.params, "actor": _json(batch.ctx.actor)})
    rule.last_run_at = now
    return len(inserted)


async def record_failure(
    session: AsyncSession,
    rule: AutomationRule,
    customer_id: uuid.UUID,
    trigger_key: str,
    *,
    depth: int,
    now: datetime,
    reason: str,
    event_id: uuid.UUID | None = None,
) -> int:
    """A run that could not start (its audience no longer compiles, a record it needs is gone):
    recorded as failed, once, with its `automation.run_failed` event."""
    ctx = automation_caller(rule.workspace_id, rule.id, depth)
    run_id = new_id()
    inserted = await session.execute(
        pg_insert(AutomationRun)
        .values(
            workspace_id=rule.workspace_id,
            id=run_id,
            rule_id=rule.id,
            trigger_key=trigger_key,
            customer_id=customer_id,
            event_id=event_id,
            depth=depth,
            outcome="failed",
            reason=reason[:500],
            actions=[],
            ran_at=now,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "rule_id", "trigger_key", "customer_id"])
    )
    if not inserted.rowcount:  # type: ignore[attr-defined]
        return 0
    params = {"ws": rule.workspace_id, "runs": [run_id], "now": now, "actor": _json(ctx.actor)}
    await session.execute(text(_RUN_FAILED_SQL), params)
    return 1


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


_RUN_FAILED_SQL = outbox.emit_rows_sql(
    f"(SELECT guanxi_uuid7() AS id, {RUN_FAILED.sql('r')} AS data FROM automation_runs r "
    "WHERE r.workspace_id = :ws AND r.id = ANY(CAST(:runs AS uuid[])) AND r.outcome <> 'ok')",
    workspace_id="CAST(:ws AS uuid)",
    event_type="'automation.run_failed'",
    at="CAST(:now AS timestamptz)",
    actor="CAST(:actor AS jsonb)",
)


async def _record_failures(session: AsyncSession, batch: Batch) -> None:
    def marked(
        results: list[dict[str, Any]], failures: dict[int, str], skips: dict[int, str] | None = None
    ) -> list[dict[str, Any]]:
        skips = skips or {}
        return [
            r | {"outcome": "failed", "detail": failures[r["index"]]}
            if r["index"] in failures
            else r | {"outcome": "skipped", "detail": skips[r["index"]]}
            if r["index"] in skips
            else r
            for r in results
        ]

    base = planned(batch.rule.actions)
    runs = update(AutomationRun).where(
        AutomationRun.workspace_id == batch.rule.workspace_id, AutomationRun.id == any_(scoped.ids(batch.run_ids))
    )
    if batch.failed_actions:
        await session.execute(
            runs.values(
                outcome="failed", reason=_reason(batch.failed_actions), actions=marked(base, batch.failed_actions)
            )
        )
    # Runs with the same outcome (the same refusal, say) are written by one statement.
    alike: dict[bytes, tuple[dict[str, Any], list[uuid.UUID]]] = {}
    for customer_id in sorted(batch.failed_for.keys() | batch.skipped_for.keys()):
        every = batch.failed_actions | batch.failed_for.get(customer_id, {})
        skips = batch.skipped_for.get(customer_id, {})
        values: dict[str, Any] = {"actions": marked(base, every, skips)}
        if every:
            values |= {"outcome": "failed", "reason": _reason(every)}
        alike.setdefault(orjson.dumps(values, option=orjson.OPT_SORT_KEYS), (values, []))[1].append(customer_id)
    for values, customer_ids in alike.values():
        await session.execute(runs.where(AutomationRun.customer_id == any_(scoped.ids(customer_ids))).values(**values))


def _reason(failures: dict[int, str]) -> str:
    return "; ".join(f"action {i}: {detail}" for i, detail in sorted(failures.items()))[:500]


# Actions, set-based over the batch.

_TASKS_SQL = f"""
INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, origin,
                   dedupe_key, created_at, updated_at, version)
SELECT r.workspace_id, guanxi_uuid7(), r.customer_id, CAST(:title AS text), CAST(:kind AS text),
       coalesce(CAST(:assignee AS uuid), c.owner_id, {assignees.fallback_sql("CAST(:ws AS uuid)")}),
       coalesce(r.occasion::timestamp AT TIME ZONE CAST(:tz AS text), CAST(:now AS timestamptz))
       + make_interval(days => :due_days),
       CAST(:priority AS text), 'open', CAST(:origin AS text),
       CASE WHEN CAST(:origin AS text) = 'care'
            THEN 'care:' || r.rule_id || ':' || r.customer_id || ':' || r.trigger_key END,
       CAST(:now AS timestamptz), CAST(:now AS timestamptz), 1
FROM automation_runs r JOIN customers c ON c.workspace_id = r.workspace_id AND c.id = r.customer_id
WHERE r.workspace_id = :ws AND r.id = ANY(CAST(:runs AS uuid[]))
  -- The batch's customers lie between its first and last: the join reads that range of customers,
  -- not the whole table, whatever the planner guesses of the array.
  AND c.id BETWEEN CAST(:first AS uuid) AND CAST(:last AS uuid)
ON CONFLICT DO NOTHING
"""


async def _create_task(session: AsyncSession, batch: Batch, _index: int, action: dict[str, Any]) -> None:
    """Due on the occasion (date rules) or at the run, plus `due_in_days`. The run record is what
    keeps a task from being made twice; a rule kept through /care-rules also keys its `care` tasks
    `care:<rule>:<customer>:<year>` as care rules always did (tasks made before the move keep
    theirs, so the two cannot differ)."""
    origin = "care" if batch.rule.managed_by == "care_rules" else "automation"
    await session.execute(
        text(_TASKS_SQL),
        {
            **batch.params,
            "title": action["title"],
            "kind": action["kind"],
            "priority": action["priority"],
            "assignee": action.get("assignee_id"),
            "due_days": action["due_in_days"],
            "tz": batch.timezone,
            "origin": origin,
            "first": batch.customer_ids[0],
            "last": batch.customer_ids[-1],
        },
    )


_MEMBERS_SQL = """
INSERT INTO segment_members (workspace_id, segment_id, customer_id, added_at)
SELECT r.workspace_id, CAST(:segment AS uuid), r.customer_id, CAST(:now AS timestamptz)
FROM automation_runs r WHERE r.workspace_id = :ws AND r.id = ANY(CAST(:runs AS uuid[]))
ON CONFLICT DO NOTHING
"""


async def _add_to_segment(session: AsyncSession, batch: Batch, index: int, action: dict[str, Any]) -> None:
    segment = await session.scalar(
        select(Segment)
        .where(Segment.workspace_id == batch.rule.workspace_id, Segment.id == uuid.UUID(action["segment_id"]))
        .with_for_update()
    )
    if segment is None or segment.kind != "static":
        batch.failed_actions[index] = "the segment is gone or no longer a static list"
        return
    added = await session.execute(text(_MEMBERS_SQL), {**batch.params, "segment": segment.id})
    if added.rowcount:  # type: ignore[attr-defined]
        segment.member_count += int(added.rowcount)  # type: ignore[attr-defined]
        segment.version += 1
        segment.updated_at = batch.now


_WEBHOOK_SQL = f"""
WITH runs AS MATERIALIZED (
    SELECT guanxi_uuid7() AS event_id,
           {WEBHOOK_REQUESTED.sql("r", action_index="CAST(:index AS int)", endpoint_id="CAST(:endpoint AS text)")}
           AS data
    FROM automation_runs r WHERE r.workspace_id = :ws AND r.id = ANY(CAST(:runs AS uuid[]))
),
events AS (
    INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data)
    SELECT CAST(:ws AS uuid), runs.event_id, 'automation.webhook_requested', CAST(:now AS timestamptz),
           CAST(:actor AS jsonb), runs.data
    FROM runs
)
INSERT INTO webhook_deliveries (workspace_id, id, endpoint_id, event_id, state, attempts, next_attempt_at,
                                created_at, updated_at)
SELECT CAST(:ws AS uuid), guanxi_uuid7(), CAST(:endpoint AS uuid), runs.event_id, CAST(:state AS text), 0,
       CAST(:now AS timestamptz), CAST(:now AS timestamptz), CAST(:now AS timestamptz)
FROM runs
"""


async def _call_webhook(session: AsyncSession, batch: Batch, index: int, action: dict[str, Any]) -> None:
    """An event for the endpoint and its delivery, in the run's transaction: the webhook sweep sends
    it after commit, signed, at least once, retried with backoff, SSRF-checked at each attempt; its
    `webhook-id` is the idempotency key. Subscribers of the type get it through the fan-out too."""
    endpoint = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.workspace_id == batch.rule.workspace_id,
            WebhookEndpoint.id == uuid.UUID(action["endpoint_id"]),
        )
    )
    if endpoint is None:
        batch.failed_actions[index] = "the webhook endpoint is gone"
        return
    await session.execute(
        text(_WEBHOOK_SQL),
        {
            **batch.params,
            "index": index,
            "endpoint": str(endpoint.id),
            "actor": _json(batch.ctx.actor),
            "state": "pending" if endpoint.enabled else "held",
        },
    )


# Actions for each customer, through the aggregate's writer.


async def _each(
    session: AsyncSession,
    batch: Batch,
    index: int,
    work: Callable[[uuid.UUID], Awaitable[None]],
    *,
    skip: tuple[type[DomainError], ...] = (),
) -> None:
    for customer_id in batch.customer_ids:
        try:
            async with session.begin_nested():
                await work(customer_id)
        except skip as exc:
            batch.skipped_for.setdefault(customer_id, {})[index] = f"{exc.slug}: {exc.detail}"[:200]
        except DomainError as exc:
            batch.failed_for.setdefault(customer_id, {})[index] = exc.detail[:200]


async def _tag(session: AsyncSession, batch: Batch, _index: int, action: dict[str, Any]) -> None:
    tag, adding = action["tag"], action["type"] == "add_tag"
    rows = await session.scalars(
        select(Customer)
        .where(
            Customer.workspace_id == batch.rule.workspace_id,
            Customer.id == any_(scoped.ids(batch.customer_ids)),
            Customer.deleted_at.is_(None),
        )
        .order_by(Customer.id)
        .with_for_update()
    )
    for customer in rows.all():
        tags = list(customer.tags or [])
        if (tag in tags) == adding:
            continue
        wanted = [*tags, tag] if adding else [t for t in tags if t != tag]
        customers.record_change(session, batch.ctx, customer, customers.assign(customer, {"tags": wanted}))
    await session.flush()


async def _set_stage(session: AsyncSession, batch: Batch, index: int, action: dict[str, Any]) -> None:
    stage = action["stage"]
    current = dict(
        (
            await session.execute(
                select(CustomerStage.customer_id, CustomerStage.stage).where(
                    CustomerStage.workspace_id == batch.rule.workspace_id,
                    CustomerStage.customer_id == any_(scoped.ids(batch.customer_ids)),
                )
            )
        ).all()
    )

    async def move(customer_id: uuid.UUID) -> None:
        if current.get(customer_id) != stage:
            await lifecycle.move(session, batch.ctx, customer_id, stage, f"automation: {batch.rule.name}")

    await _each(session, batch, index, move)


async def _open_ticket(session: AsyncSession, batch: Batch, index: int, action: dict[str, Any]) -> None:
    async def open_one(customer_id: uuid.UUID) -> None:
        data = TicketIn(
            customer_id=customer_id,
            type=action["ticket_type"],
            channel="automation",
            subject=action["subject"],
            priority=action["priority"],
        )
        await tickets.open_ticket(session, batch.ctx, data)

    await _each(session, batch, index, open_one)


# A refusal for the customer's own reasons skips the action; anything else fails it.
_CUSTOMERS_REFUSALS = (messages.ConsentRequired, messages.Suppressed, messages.FrequencyCapped)


async def _send_message(session: AsyncSession, batch: Batch, index: int, action: dict[str, Any]) -> None:
    """Through the one writer of messages, which enforces consent, suppression, caps and quiet
    hours, for the whole batch at once. Each dedupe key is the run's (rule, trigger, customer) and
    the action's place: a re-run, or a second runner, finds the message queued and queues none. A
    refusal for the customer's own reasons (no consent, suppressed, capped) skips the action for
    that customer; anything else fails it, for the customer or (the channel or template gone) for
    the whole batch."""
    keys = {
        customer_id: f"automation:{batch.rule.id}:{batch.trigger_keys[customer_id]}:{customer_id}:{index}"
        for customer_id in batch.customer_ids
    }
    try:
        async with session.begin_nested():
            done = await messages.enqueue_many(
                session,
                batch.ctx,
                recipients=keys,
                channel_id=uuid.UUID(action["channel_id"]),
                purpose=action["purpose"],
                content=messages.FromTemplate(uuid.UUID(action["template_id"]), action.get("variables") or {}),
                source=f"automation:{batch.rule.id}",
            )
    except DomainError as exc:
        batch.failed_actions[index] = exc.detail[:200]
        return
    for customer_id, refusal in done.refused.items():
        if isinstance(refusal, _CUSTOMERS_REFUSALS):
            batch.skipped_for.setdefault(customer_id, {})[index] = f"{refusal.slug}: {refusal.detail}"[:200]
        else:
            batch.failed_for.setdefault(customer_id, {})[index] = refusal.detail[:200]


ACTIONS: dict[str, Callable[[AsyncSession, Batch, int, dict[str, Any]], Awaitable[None]]] = {
    "create_task": _create_task,
    "open_ticket": _open_ticket,
    "add_tag": _tag,
    "remove_tag": _tag,
    "add_to_segment": _add_to_segment,
    "set_lifecycle_stage": _set_stage,
    "call_webhook": _call_webhook,
    "send_message": _send_message,
}

# The event types each action emits: a rule whose trigger listens to one of them would trigger itself.
EMITS: dict[str, frozenset[str]] = {
    "create_task": frozenset(),
    "open_ticket": frozenset({"ticket.created", "ticket.assigned"}),
    "add_tag": frozenset({"customer.updated"}),
    "remove_tag": frozenset({"customer.updated"}),
    "add_to_segment": frozenset(),
    "set_lifecycle_stage": frozenset({"lifecycle.stage_changed"}),
    "call_webhook": frozenset({"automation.webhook_requested"}),
    # The message is an interaction on the timeline, and its send, delivery or failure an event.
    "send_message": frozenset({"interaction.created", "message.sent", "message.delivered", "message.failed"}),
}


def one_customer(customer_id: uuid.UUID, trigger_key: str, workspace_id: uuid.UUID) -> Candidates:
    """The candidates of an event: its customer, while live."""
    return select(
        Customer.id.label("customer_id"),
        literal(trigger_key, type_=String).label("trigger_key"),
        null().cast(Date).label("occasion"),
    ).where(Customer.workspace_id == workspace_id, Customer.id == customer_id, Customer.deleted_at.is_(None))


# The runs list.


async def list_runs(
    session: AsyncSession,
    ctx: Caller,
    rule_id: uuid.UUID,
    *,
    customer_id: uuid.UUID | None,
    outcome: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[AutomationRun], str | None]:
    """Newest first, of customers the caller may see."""
    stmt = through_customer(AutomationRun, ctx).where(AutomationRun.rule_id == rule_id)
    if customer_id is not None:
        stmt = stmt.where(AutomationRun.customer_id == customer_id)
    if outcome is not None:
        stmt = stmt.where(AutomationRun.outcome == outcome)
    keys = [SortKey(AutomationRun.id, descending=True)]
    return await keyset_page(session, stmt, keys, list_name="automation-runs", limit=limit, cursor=cursor)


def present_run(run: AutomationRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "rule_id": run.rule_id,
        "customer_id": run.customer_id,
        "trigger_key": run.trigger_key,
        "event_id": run.event_id,
        "occasion": run.occasion,
        "depth": run.depth,
        "outcome": run.outcome,
        "reason": run.reason,
        "actions": [{"detail": None, **action} for action in run.actions],
        "ran_at": run.ran_at,
    }
