"""Interaction imports: one contact per row, for a customer named by code, email, phone or id,
idempotent by (source, external_id) as POST /interactions/import is.

Rows are checked with the API's own schema and the workspace's outcomes, copied into a staging
table and merged set-based: new contacts are inserted with their `interaction.created` events; in
upsert mode a stored contact is updated where a value differs, with the audit entry and the
`interaction.updated` event a PATCH writes. A visit's columns (`latitude`, `longitude`,
`location_accuracy_m`, `location_address`, `checked_in_at`, `checked_out_at`) follow the API's rules;
an upsert that would leave a stored visit breaking them (a checked-in visit made a call) is refused
for its row."""

import uuid
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.wire import utc_text_sql
from app.models import ImportJob, User, Workspace
from app.schemas.interaction import InteractionIn
from app.services.bulk import record_imports
from app.services.bulk.imports import Progress
from app.services.bulk.record_imports import Loc, Problem, as_is, changes_sql
from app.services.engagement import interactions
from app.services.events import audit, outbox
from app.services.identity.users import email_key

BATCH = 5000
ROW_FIELDS = (*interactions.FIELDS, "source", "external_id", "checked_in_at", "checked_out_at")
LOCATION_FIELDS = {
    "latitude": "latitude",
    "longitude": "longitude",
    "location_accuracy_m": "accuracy_m",
    "location_address": "address",
}
FIELDS = (*record_imports.CUSTOMER_KEYS, *ROW_FIELDS, *LOCATION_FIELDS, "user_email")
REQUIRED = tuple(
    name for name, field in InteractionIn.model_fields.items() if field.is_required() and name != "customer_id"
)

STAGE_COLUMNS = (
    ("row_number", "int"),
    ("customer_id", "uuid"),
    ("user_id", "uuid"),
    ("channel", "text"),
    ("direction", "text"),
    ("occurred_at", "timestamptz"),
    ("duration_seconds", "int"),
    ("subject", "text"),
    ("content", "text"),
    ("outcome", "text"),
    ("next_step", "text"),
    ("source", "text"),
    ("external_id", "text"),
    ("location", "jsonb"),
    ("checked_in_at", "timestamptz"),
    ("checked_out_at", "timestamptz"),
)
# What an upsert writes: the required fields always, the others only where the file has a value.
_NEW_VALUES = {
    name: f"m.{name}" if name in REQUIRED else f"coalesce(m.{name}, i.{name})"
    for name in (*interactions.FIELDS, *interactions.VISIT_FIELDS)
}
# The rules of `interactions.check_visit`, over the contact as the upsert would leave it.
_VISIT_HOLDS = (
    f"(({_NEW_VALUES['checked_in_at']}) IS NULL AND ({_NEW_VALUES['checked_out_at']}) IS NULL "
    f"OR m.channel = 'visit') AND (({_NEW_VALUES['checked_out_at']}) IS NULL "
    f"OR ({_NEW_VALUES['checked_in_at']}) <= ({_NEW_VALUES['checked_out_at']}))"
)
_SET = ", ".join(f"{name} = {value}" for name, value in _NEW_VALUES.items())
_DIFFERS = f"({', '.join(f'i.{name}' for name in _NEW_VALUES)}) IS DISTINCT FROM ({', '.join(_NEW_VALUES.values())})"
_CHANGES = changes_sql(
    (name, f"i.{name}", value, utc_text_sql if name.endswith("_at") else as_is) for name, value in _NEW_VALUES.items()
)

_EVENTS = outbox.emit_rows_sql(
    f"(SELECT guanxi_uuid7() AS id, {interactions.EVENT.sql('c')} AS data FROM created c)",
    workspace_id=":ws",
    event_type="'interaction.created'",
    at="CAST(:now AS timestamptz)",
    actor="CAST(:actor AS jsonb)",
)
_UPDATED_EVENTS = outbox.emit_rows_sql(
    f"""(
    SELECT guanxi_uuid7() AS id,
           {interactions.EVENT.sql("u")}
           || jsonb_build_object('changed_fields', (SELECT jsonb_agg(k) FROM jsonb_object_keys({_CHANGES}) k)) AS data
    FROM updated u
    JOIN interactions i ON i.workspace_id = :ws AND i.id = u.id
    JOIN matched m ON m.existing_id = u.id
)""",
    workspace_id=":ws",
    event_type="'interaction.updated'",
    at="CAST(:now AS timestamptz)",
    actor="CAST(:actor AS jsonb)",
)
_AUDITED = audit.record_rows_sql(
    f"""(
    SELECT CAST(:ws AS uuid) AS workspace_id, 'interaction' AS entity_type, i.id AS entity_id, 'updated' AS action,
           CAST(:actor_type AS text) AS actor_type, CAST(:actor_id AS uuid) AS actor_id, {_CHANGES} AS changes,
           CAST(:now AS timestamptz) AS occurred_at
    FROM updated u
    JOIN interactions i ON i.workspace_id = :ws AND i.id = u.id
    JOIN matched m ON m.existing_id = u.id
)"""
)

MERGE_SQL = text(
    f"""
WITH matched AS (
    SELECT s.*, i.id AS existing_id, i.customer_id AS existing_customer_id, i.deleted_at IS NOT NULL AS deleted
    FROM interaction_import_stage s
    LEFT JOIN interactions i ON i.workspace_id = :ws AND i.source = s.source AND i.external_id = s.external_id
),
created AS (
    INSERT INTO interactions (workspace_id, id, customer_id, user_id, channel, direction, occurred_at,
                              duration_seconds, participants, subject, content, outcome, next_step, attachments,
                              source, external_id, location, checked_in_at, checked_out_at, created_at, updated_at,
                              version)
    SELECT :ws, guanxi_uuid7(), customer_id, user_id, channel, direction, occurred_at, duration_seconds,
           '{{"users": [], "contacts": []}}', subject, content, outcome, next_step, '{{"items": []}}', source,
           external_id, location, checked_in_at, checked_out_at, :now, :now, 1
    FROM matched WHERE existing_id IS NULL
    ON CONFLICT DO NOTHING
    RETURNING *
),
events AS (
    {_EVENTS}
),
updated AS (
    UPDATE interactions i SET {_SET}, version = i.version + 1, updated_at = :now
    FROM matched m
    WHERE CAST(:mode AS text) = 'upsert' AND i.workspace_id = :ws AND i.id = m.existing_id AND NOT m.deleted
      AND m.existing_customer_id = m.customer_id AND {_DIFFERS} AND {_VISIT_HOLDS}
    RETURNING i.*
),
audited AS (
    -- `i` is read from the statement's snapshot: the values before the update.
    {_AUDITED}
),
updated_events AS (
    {_UPDATED_EVENTS}
)
SELECT (SELECT count(*) FROM created), (SELECT count(*) FROM updated),
       coalesce((SELECT array_agg(row_number ORDER BY row_number) FROM matched
                 WHERE existing_id IS NOT NULL AND existing_customer_id <> customer_id), '{{}}'),
       coalesce((SELECT array_agg(m.row_number ORDER BY m.row_number) FROM matched m
                 JOIN interactions i ON i.workspace_id = :ws AND i.id = m.existing_id
                 WHERE CAST(:mode AS text) = 'upsert' AND NOT m.deleted AND m.existing_customer_id = m.customer_id
                   AND NOT ({_VISIT_HOLDS})), '{{}}')
"""
)


def check_mapping(mapping: dict[str, str], mode: str) -> None:
    """A customer key and the fields a contact needs; an upsert also needs the external id it matches on."""
    required = (*REQUIRED, "external_id") if mode == "upsert" else REQUIRED
    record_imports.check_mapping(mapping, FIELDS, required)


async def run(session: AsyncSession, job: ImportJob, on_progress: Progress | None = None) -> None:
    """Process a job to its end, a batch per transaction on `session`, which holds the job row: its
    counters are written with each batch's commit."""
    ctx = await record_imports.uploader(session, job)
    workspace = await session.get(Workspace, ctx.workspace_id)
    assert workspace is not None
    batch = _Batch(ctx, job, ZoneInfo(workspace.timezone), list(workspace.interaction_outcomes))
    rows: list[tuple[int, dict[str, str]]] = []
    for number, cells in record_imports.read_rows(job):
        job.rows_read += 1
        rows.append((number, cells))
        if len(rows) >= BATCH:
            await batch.load(session, rows)
            rows = []
            if on_progress:
                on_progress(job)
            if await record_imports.cancel_requested(session, job):
                job.status = "cancelled"
                return
    await batch.load(session, rows)
    if on_progress:
        on_progress(job)


class _Batch:
    """Checks and merges one batch of rows; remembers the keys seen so far in the file."""

    def __init__(self, ctx: Caller, job: ImportJob, zone: ZoneInfo, outcomes: list[str]) -> None:
        self.ctx, self.job, self.zone, self.outcomes = ctx, job, zone, outcomes
        self.columns = record_imports.columns_of(job.mapping)
        self.seen: dict[tuple[str, str], int] = {}

    async def load(self, session: AsyncSession, rows: list[tuple[int, dict[str, str]]]) -> None:
        """One transaction: find the customers and users the rows name, check the rows, stage the
        valid ones with COPY, merge them, keep the rejected ones."""
        parsed = []
        for number, cells in rows:
            values, problems = record_imports.field_values(cells, self.job.mapping, number)
            refs, ref_problems = record_imports.customer_refs(values, self.columns, number)
            parsed.append((number, values, refs, problems + ref_problems))
        found = await record_imports.find_customers(session, self.ctx, (refs for _, _, refs, _ in parsed))
        emails = {email_key(v["user_email"]) for _, v, _, _ in parsed if "user_email" in v}
        users = await _users(session, self.ctx, emails)
        staged: list[tuple[Any, ...]] = []
        rejected: list[Problem] = []
        for number, values, refs, problems in parsed:
            customer_id, customer_problems = record_imports.customer_of(refs, found, self.columns, number)
            problems = problems + customer_problems
            record, row_problems = self._check(number, values, customer_id, users)
            problems += row_problems
            if problems or record is None:
                rejected += problems
                continue
            staged.append(record)
        self.job.failed += len({number for number, _, _ in rejected})
        if staged:
            await record_imports.stage(session, "interaction_import_stage", STAGE_COLUMNS, staged)
            created, updated, elsewhere, unvisited = (
                await session.execute(
                    MERGE_SQL,
                    {
                        "ws": self.ctx.workspace_id,
                        "now": clock.now(),
                        "mode": self.job.mode,
                        "actor": orjson.dumps(self.ctx.actor).decode(),
                        "actor_type": self.ctx.actor_type,
                        "actor_id": self.ctx.actor_id,
                    },
                )
            ).one()
            rejected += [
                (number, self.columns["external_id"], "this external_id is logged for another customer")
                for number in elsewhere
            ]
            rejected += [
                (number, self.columns.get("channel", "channel"), "a visit with check-in times stays a visit")
                for number in unvisited
            ]
            self.job.created += created
            self.job.updated += updated
            self.job.skipped += len(staged) - created - updated - len(elsewhere) - len(unvisited)
            self.job.failed += len(elsewhere) + len(unvisited)
        await record_imports.record_problems(session, self.job, rejected)
        await session.commit()

    def _check(
        self, number: int, values: dict[str, str], customer_id: uuid.UUID | None, users: dict[str, uuid.UUID]
    ) -> tuple[tuple[Any, ...] | None, list[Problem]]:
        """The row as the API's InteractionIn would take it, or why not."""
        problems: list[Problem] = []
        data: dict[str, Any] = {name: values[name] for name in ROW_FIELDS if name in values}
        if customer_id is not None:
            data["customer_id"] = customer_id
        data["user_id"] = self.ctx.user_id
        for name in ("occurred_at", "checked_in_at", "checked_out_at"):
            if name in data:
                data[name] = record_imports.wall_clock(data[name], self.zone)
        location = {key: values[name] for name, key in LOCATION_FIELDS.items() if name in values}
        if location:
            data["location"] = location
        if "user_email" in values:
            data["user_id"] = users.get(email_key(values["user_email"]))
            if data["user_id"] is None:
                problems.append((number, self.columns["user_email"], "no user with this email in the workspace"))

        by_key = {key: name for name, key in LOCATION_FIELDS.items()}

        def where(loc: Loc) -> tuple[int, str]:
            field = str(loc[0]) if loc else ""
            if field == "location" and len(loc) > 1:
                field = by_key.get(str(loc[1]), field)
            return number, self.columns.get(field, field)

        try:
            interaction = InteractionIn.model_validate(data)
            if interaction.outcome is not None:
                interactions.check_outcome(interaction.outcome, self.outcomes, ["outcome"])
            interactions.check_visit(interaction.channel, interaction.checked_in_at, interaction.checked_out_at, [])
        except (ValidationError, ValidationFailed) as exc:
            return None, problems + record_imports.schema_problems(record_imports.validation_errors(exc), where)
        if interaction.external_id is None and self.job.mode == "upsert":
            problems.append((number, self.columns["external_id"], "an upsert needs the external_id"))
        elif interaction.external_id is not None:
            key = (interaction.source, interaction.external_id)
            if key in self.seen:
                problems.append(
                    (number, self.columns["external_id"], f"the same external_id is on row {self.seen[key]}")
                )
            elif not problems and customer_id is not None:
                self.seen[key] = number
        if problems or customer_id is None:
            return None, problems
        return (
            number,
            customer_id,
            interaction.user_id,
            interaction.channel,
            interaction.direction,
            interaction.occurred_at,
            interaction.duration_seconds,
            interaction.subject,
            interaction.content,
            interaction.outcome,
            interaction.next_step,
            interaction.source,
            interaction.external_id,
            None
            if interaction.location is None
            else orjson.dumps(interaction.location.model_dump(mode="json")).decode(),
            interaction.checked_in_at,
            interaction.checked_out_at,
        ), []


async def _users(session: AsyncSession, ctx: Caller, emails: set[str]) -> dict[str, uuid.UUID]:
    """Email key (`users.email_key`) → user of the workspace."""
    if not emails:
        return {}
    rows = await session.execute(
        select(User.email_key, User.id).where(User.workspace_id == ctx.workspace_id, User.email_key.in_(emails))
    )
    return dict(rows.all())
