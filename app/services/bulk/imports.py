"""Customer imports from CSV (UTF-8, with or without BOM, or GB18030) and XLSX.

Rows are checked in Python with the API's own rules (phone and email normalisation, lengths, NUL,
custom field types), copied into a staging table with COPY, and merged set-based: matched
customers are updated only where a value differs (so a re-run changes nothing), with the audit
entry, `customer.updated` event and search text a PATCH writes; the rest are created with a block
of codes and the API's `customer.created` (run() says when a block can be left unused). Rejected
rows are kept with their row, column and reason."""

import asyncio
import codecs
import csv
import functools
import io
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import asyncpg
import openpyxl
import orjson
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ARRAY, String, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import jsonable_sql
from app.models import Customer, CustomFieldDefinition, ImportJob, Workspace
from app.schemas.common import LongText
from app.schemas.customer import MAX_CONTACT_POINTS, MAX_TAGS, CustomerCreate, normalise_email, normalise_phone
from app.services.bulk import scratch
from app.services.bulk.csv_export import read_cell, split_list
from app.services.customers import custom_fields, customer_codes
from app.services.customers.customer_output import customer_json_sql
from app.services.events import audit, outbox
from app.services.loyalty import referrals

# The customer columns a file sets. No file column maps to the owner, preferences or consent, and
# `code` is a match key only: a new customer takes the workspace's next code.
_NOT_IMPORTED = (
    "workspace_id",
    "id",
    "code",
    "owner_id",
    "preferences",
    "consent",
    "search_text",
    "search_bigrams",
    "created_at",
    "updated_at",
    "deleted_at",
    "version",
)
IMPORTED = tuple(column.key for column in Customer.__table__.columns if column.key not in _NOT_IMPORTED)
# A file's email and phone columns hold one address or number, or a list cell of them.
_SINGULAR = {"emails": "email", "phones": "phone"}
# The fields a file column maps to (besides `custom.<key>`), each with the customer column it sets: the
# match key, the name, then the other imported columns. An export writes its columns in this order.
FIELD_COLUMNS = {
    _SINGULAR.get(name, name): name
    for name in ("code", "name", *(name for name in IMPORTED if name not in ("name", "custom_fields")))
}
FIELDS = tuple(FIELD_COLUMNS)
# Not a customer column (an export never writes it): another customer's code, for the referral.
REFERRAL_FIELD = "referral_code"
LIMITS: dict[str, int] = {
    column.key: column.type.length
    for column in Customer.__table__.columns
    if isinstance(column.type, String) and column.type.length
} | {"notes": TypeAdapter(LongText).json_schema()["maxLength"]}
_DEFAULT_KIND = CustomerCreate.model_fields["kind"].default
BATCH = 5000
SNIFF_BYTES = 1 << 16
Progress = Callable[[ImportJob], None]


def check_mapping(mapping: dict[str, str], definitions: dict[str, CustomFieldDefinition]) -> None:
    """File column → field; every field known, and a name column present."""
    for column, target in mapping.items():
        known = target in (*FIELDS, REFERRAL_FIELD) or (target.startswith("custom.") and target[7:] in definitions)
        if not known:
            raise ValidationFailed(
                f"Column '{column}' maps to unknown field '{target}'.", loc=["body", "mapping", column]
            )
    if "name" not in mapping.values():
        raise ValidationFailed("Map a column to name.", loc=["body", "mapping"])


def detect_encoding(path: Path) -> str:
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
        whole = not file.read(1)
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            # Incremental, so a character cut at the end of the sample is no proof against the encoding.
            codecs.getincrementaldecoder(encoding)().decode(head, final=whole)
            return encoding
        except UnicodeDecodeError:
            continue
    raise ValueError("the file is neither UTF-8 nor GB18030 text")


def read_rows(path: Path, file_format: str, encoding: str | None) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number as the user sees it, header → cell) for every data row."""
    if file_format == "xlsx":
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header = [str(c).strip() if c is not None else "" for c in next(rows, [])]
        for number, row in enumerate(rows, start=2):
            yield number, {h: _cell(v) for h, v in zip(header, row, strict=False) if h}
        book.close()
        return
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding=encoding or "utf-8-sig", newline="") as text:
        reader = csv.DictReader(text)
        for number, row in enumerate(reader, start=2):
            yield number, {k.strip(): v or "" for k, v in row.items() if k is not None}


def _cell(value: object) -> str:
    if value is None:
        return ""
    # A date-and-time cell (when an order or a contact happened) keeps its time; a date cell stays a date.
    if isinstance(value, datetime) and value.time() != time():
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()[:10]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def clean_row(
    cells: dict[str, str], mapping: dict[str, str], definitions: dict[str, CustomFieldDefinition]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The row's values by customer column, or the (column, reason) pairs that reject it. A cell
    an export escaped as a formula is read as the value the export wrote."""
    values: dict[str, Any] = {"emails": [], "phones": [], "tags": [], "custom_fields": {}}
    problems: list[tuple[str, str]] = []
    for column, target in mapping.items():
        cell = cells.get(column) or ""
        raw = (read_cell(cell) if cell[:1] == "'" else cell).strip()
        if "\x00" in raw:
            problems.append((column, "contains a NUL character"))
            continue
        if not raw:
            continue
        try:
            if target == "email":
                values["emails"] += [normalise_email(part) for part in split_list(raw)]
            elif target == "phone":
                values["phones"] += [normalise_phone(part) for part in split_list(raw)]
            elif target == "tags":
                values["tags"] = list(dict.fromkeys(split_list(raw)))[:MAX_TAGS]
            elif target == "kind":
                if raw not in ("individual", "company"):
                    raise ValueError("must be individual or company")
                values["kind"] = raw
            elif target == "gender":
                if raw not in ("male", "female", "other", "unknown"):
                    raise ValueError("must be male, female, other or unknown")
                values["gender"] = raw
            elif target == REFERRAL_FIELD:
                code = referrals.normalised(raw)
                if code is None:
                    raise ValueError("not a referral code (16 letters and digits, 0-9 and A-F)")
                values[REFERRAL_FIELD] = code
            elif target == "birthday":
                values["birthday"] = date.fromisoformat(raw)
            elif target == "country":
                if len(raw) != 2 or not raw.isalpha():
                    raise ValueError("must be an ISO 3166 alpha-2 code")
                values["country"] = raw.upper()
            elif target.startswith("custom."):
                key = target[7:]
                typed: Any = raw
                if definitions[key].type in ("integer", "number"):
                    typed = float(raw) if definitions[key].type == "number" else int(raw)
                elif definitions[key].type == "boolean":
                    typed = raw.lower() in ("true", "1", "yes", "是")
                elif definitions[key].type == "multiselect":
                    typed = split_list(raw)
                values["custom_fields"][key] = custom_fields.coerce_value(definitions[key], typed, [column])
            else:
                if len(raw) > LIMITS[target]:
                    raise ValueError(f"longer than {LIMITS[target]} characters")
                values[target] = raw
        except (ValueError, ValidationError, ValidationFailed) as exc:
            problems.append((column, getattr(exc, "detail", None) or str(exc)))
    if not problems and not values.get("name"):
        problems.append((_column_of(mapping, "name"), "name is required"))
    values["emails"] = list(dict.fromkeys(values["emails"]))[:MAX_CONTACT_POINTS]
    values["phones"] = list(dict.fromkeys(values["phones"]))[:MAX_CONTACT_POINTS]
    return values, problems


def _column_of(mapping: dict[str, str], field: str) -> str:
    return next((column for column, target in mapping.items() if target == field), field)


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
# JSON columns are staged as their text: the driver's COPY has no binary form for jsonb.
_JSON = tuple(name for name in IMPORTED if isinstance(Customer.__table__.c[name].type, JSONB))
STAGE_COLUMNS = ("row_number", *IMPORTED, REFERRAL_FIELD, "code", "customer_id", "event_id")
STAGE_TABLE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS import_stage (row_number int, "
    + "".join(
        f"{name} {'text' if name in _JSON else Customer.__table__.c[name].type.compile(dialect=_PG)}, "
        for name in IMPORTED
    )
    + f"{REFERRAL_FIELD} text, code text, customer_id uuid, event_id uuid) ON COMMIT DELETE ROWS"
)
_CUSTOM_AT = STAGE_COLUMNS.index("custom_fields")


def _imported_value(name: str) -> str:
    """SQL for a matched customer's column after the import (`l` the customer, `st` the staged
    row): a blank cell keeps the stored value, custom fields merge into the stored ones."""
    column_type = Customer.__table__.c[name].type
    if isinstance(column_type, ARRAY):
        return f"CASE WHEN cardinality(st.{name}) > 0 THEN st.{name} ELSE l.{name} END"
    if isinstance(column_type, JSONB):
        return f"l.{name} || CAST(st.{name} AS jsonb)"
    return f"coalesce(st.{name}, l.{name})"


# An upsert leaves a customer's emails and phones as they are: they are what rows are matched on.
UPDATED = tuple(name for name in IMPORTED if name not in ("emails", "phones"))
_CHANGES = audit.changes_sql(
    (name, f"p.{name}", f"p.new_{name}", functools.partial(jsonable_sql, column_type=Customer.__table__.c[name].type))
    for name in UPDATED
)
_SEARCH_TEXT = "guanxi_customer_search_text({name}, {code}, {emails}, {phones}, {company})"
_AUDIT_ROWS = """(
    SELECT CAST($1 AS uuid) AS workspace_id, 'customer' AS entity_type, u.id AS entity_id, 'updated' AS action,
           CAST($5 AS text) AS actor_type, CAST($6 AS uuid) AS actor_id, ch.changes,
           CAST($2 AS timestamptz) AS occurred_at
    FROM updated u JOIN changed ch ON ch.id = u.id
)"""
_UPDATED_EVENTS = f"""(
    SELECT guanxi_uuid7() AS id, {customer_json_sql("u")} || jsonb_build_object('changed_fields',
           (SELECT jsonb_agg(k ORDER BY k COLLATE "C") FROM jsonb_object_keys(ch.changes) k)) AS data
    FROM updated u JOIN changed ch ON ch.id = u.id
)"""
# Matches are updated where a value differs, with the audit entry, `customer.updated` event and
# search text the API's PATCH writes; a customer two rows match takes the later row.
# The customer a staged row `s` matches (`$1` the workspace, `$3` the match key).
MATCH_SQL = """coalesce(
        (SELECT c.id FROM customers c WHERE c.workspace_id = $1 AND c.deleted_at IS NULL AND c.code = s.code
           AND $3 = 'code'),
        (SELECT i.customer_id FROM customer_identities i WHERE i.workspace_id = $1 AND i.kind = 'email'
           AND i.value = s.emails[1] AND $3 = 'email'),
        (SELECT i.customer_id FROM customer_identities i WHERE i.workspace_id = $1 AND i.kind = 'phone'
           AND i.value = s.phones[1] AND $3 = 'phone')
    )"""
MERGE_SQL = f"""
WITH staged AS (
    SELECT s.*, {MATCH_SQL} AS match_id
    FROM import_stage s
),
chosen AS (
    SELECT DISTINCT ON (match_id) * FROM staged WHERE match_id IS NOT NULL AND $4 = 'upsert'
    ORDER BY match_id, row_number DESC
),
locked AS (
    SELECT c.* FROM customers c WHERE c.workspace_id = $1 AND c.id IN (SELECT match_id FROM chosen) FOR UPDATE
),
proposed AS (
    SELECT l.*, {", ".join(f"{_imported_value(name)} AS new_{name}" for name in UPDATED)}
    FROM locked l JOIN chosen st ON st.match_id = l.id
),
changed AS (
    SELECT p.*, {_CHANGES} AS changes FROM proposed p
),
updated AS (
    UPDATE customers c SET {", ".join(f"{name} = ch.new_{name}" for name in UPDATED)},
        search_text = {
    _SEARCH_TEXT.format(
        name="ch.new_name", code="ch.code", emails="ch.emails", phones="ch.phones", company="ch.new_company"
    )
},
        version = c.version + 1, updated_at = $2
    FROM changed ch
    WHERE c.workspace_id = $1 AND c.id = ch.id AND ch.changes <> '{{}}'::jsonb
    RETURNING c.*
),
audited AS ({audit.record_rows_sql(_AUDIT_ROWS)}),
emitted AS (
    {
    outbox.emit_rows_sql(
        _UPDATED_EVENTS, workspace_id="$1", event_type="'customer.updated'", at="$2", actor="$7::jsonb"
    )
}
)
SELECT (SELECT count(*) FROM updated),
       (SELECT count(*) FROM staged WHERE match_id IS NOT NULL),
       coalesce((SELECT array_agg(row_number ORDER BY row_number) FROM staged WHERE match_id IS NULL), '{{}}')
"""

_CREATED_EVENTS = (
    f"(SELECT f.event_id AS id, {customer_json_sql('c')} AS data FROM created c JOIN fresh f ON f.new_id = c.id)"
)
# The audit entry a create through the API writes: every field set, from the event's payload.
_CREATED_AUDIT_ROWS = f"""(
    SELECT c.workspace_id, 'customer' AS entity_type, c.id AS entity_id, 'created' AS action,
           $7::jsonb->>'type' AS actor_type, CAST($7::jsonb->>'id' AS uuid) AS actor_id,
           (SELECT coalesce(jsonb_object_agg(f.key, jsonb_build_object('before', NULL, 'after', f.value)), '{{}}')
            FROM jsonb_each({customer_json_sql("c")}) f
            WHERE f.value NOT IN ('null', '[]', '{{}}') AND f.key <> 'pii_masked') AS changes,
           $2 AS occurred_at
    FROM created c
)"""
_NEW_SEARCH_TEXT = _SEARCH_TEXT.format(
    name="f.name", code="f.new_code", emails="f.emails", phones="f.phones", company="f.company"
)
_NEW_VALUES = (
    {name: f"f.{name}" for name in IMPORTED}
    | {name: f"CAST(f.{name} AS jsonb)" for name in _JSON}
    | {"kind": f"coalesce(f.kind, '{_DEFAULT_KIND}')"}
)
INSERT_SQL = f"""
WITH fresh AS (
    SELECT s.*, s.customer_id AS new_id,
           replace($3, '{{seq}}', lpad(n::text, greatest($6, length(n::text)), '0')) AS new_code
    FROM (SELECT *, $4 + row_number() OVER (ORDER BY row_number) AS n FROM import_stage
          WHERE $5::int[] IS NULL OR row_number = ANY($5::int[])) s
),
created AS (
    INSERT INTO customers (workspace_id, id, code, {", ".join(IMPORTED)}, search_text, created_at, updated_at,
                           version)
    SELECT $1, f.new_id, f.new_code, {", ".join(_NEW_VALUES.values())},
           {_NEW_SEARCH_TEXT},
           $2, $2, 1
    FROM fresh f
    RETURNING *
),
identities AS (
    INSERT INTO customer_identities (workspace_id, kind, value, customer_id)
    SELECT $1, 'email', e, c.id FROM created c, unnest(c.emails) e
    UNION ALL
    SELECT $1, 'phone', p, c.id FROM created c, unnest(c.phones) p
    ON CONFLICT DO NOTHING
),
audited AS ({audit.record_rows_sql(_CREATED_AUDIT_ROWS)}),
emitted AS (
    {
    outbox.emit_rows_sql(
        _CREATED_EVENTS, workspace_id="$1", event_type="'customer.created'", at="$2", actor="$7::jsonb"
    )
}
)
SELECT count(*) FROM created
"""


REFERRALS_SQL = referrals.import_sql(MATCH_SQL)
RESERVE_CODES_SQL = (
    "INSERT INTO customer_code_counters (workspace_id, scope, last_value) VALUES ($1, $2, $3) "
    "ON CONFLICT (workspace_id, scope) DO UPDATE SET last_value = customer_code_counters.last_value + $3 "
    "RETURNING last_value - $3"
)


async def run(
    writers: Sequence[asyncpg.Connection],
    session: AsyncSession,
    ctx: Caller,
    job: ImportJob,
    on_progress: Progress | None = None,
) -> None:
    """Process a job to its end (the caller commits the job row). A create_only import without a
    match key writes its batches on every writer connection at once, each batch its own
    transaction, with the batch's codes taken just before it: two backends share PostgreSQL's
    work, and a batch that fails leaves its codes unused. Any other import writes on the first
    connection, one batch after another, taking its codes inside the batch's transaction (only
    the merge knows how many rows are new), so its codes have no gaps."""
    definitions = await custom_fields.definitions(session, ctx)
    pattern = await session.scalar(select(Workspace.customer_code_pattern).where(Workspace.id == ctx.workspace_id))
    assert pattern is not None
    # Nothing to match on: every row is new, and batches cannot touch the same customer.
    side_by_side = job.match_on is None
    free = list(writers if side_by_side else writers[:1])
    for conn in free:
        await conn.execute(STAGE_TABLE_SQL)
    writing: dict[asyncio.Task[_Written], asyncpg.Connection] = {}
    reader = _Reader(_batches(job, definitions, ctx.workspace_id))

    def settle(done: set[asyncio.Task[_Written]]) -> BaseException | None:
        """Counts what the finished batches wrote; returns the first failure among them."""
        failure: BaseException | None = None
        for task in done:
            free.append(writing.pop(task))
            if task.exception() is not None:
                failure = failure or task.exception()
                continue
            written = task.result()
            job.created += written.created
            job.updated += written.updated
            job.skipped += written.skipped
        return failure

    async def wait_for(tasks: set[asyncio.Task[_Written]], when: str = asyncio.ALL_COMPLETED) -> None:
        done, _ = await asyncio.wait(tasks, return_when=when)
        if (failure := settle(done)) is not None:
            raise failure

    try:
        while (ready := await reader.take()) is not None:
            if not free:
                await wait_for(set(writing), asyncio.FIRST_COMPLETED)
            conn = free.pop()
            if await _cancelled(conn, job):
                free.append(conn)
                job.status = "cancelled"
                return
            job.rows_read, job.failed = ready.rows_read, ready.failed
            now = clock.now()
            codes = (
                await _reserve_codes(conn, ctx, pattern, now, len(ready.rows)) if side_by_side and ready.rows else None
            )
            task = asyncio.create_task(
                _flush(conn, ctx, job, pattern, ready, now=now, codes=codes, staged=reader.start)
            )
            writing[task] = conn
            if not side_by_side:
                await wait_for({task})
            if on_progress:
                on_progress(job)
        if writing:
            await wait_for(set(writing))
    finally:
        # A batch still being written (the import was cancelled, or another batch failed) ends,
        # committed or rolled back, and is counted before the job is recorded.
        if writing:
            settle((await asyncio.wait(writing))[0])
        await reader.close()


@dataclass
class _Written:
    created: int
    updated: int
    skipped: int


@dataclass
class _Batch:
    rows: list[list[Any]]
    errors: list[tuple[Any, ...]]
    rows_read: int
    failed: int


class _Reader:
    """Reads and checks the file's batches in a thread, one batch ahead of the writer: Python and
    PostgreSQL work at the same time, and the event loop stays free. The writer starts the next
    read once its batch is staged, not before: the reading thread holds the GIL nearly all the
    time, and the staging COPY, which encodes its rows in this thread, ran several times slower
    beside it."""

    def __init__(self, batches: Generator[_Batch]) -> None:
        self._batches = batches
        self._pending: asyncio.Future[_Batch | None] | None = None

    def start(self) -> None:
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(next, self._batches, None))

    async def take(self) -> _Batch | None:
        self.start()
        assert self._pending is not None
        # Shielded: when the import is cancelled meanwhile, the read goes on in its thread, and
        # close() waits for it.
        batch = await asyncio.shield(self._pending)
        self._pending = None
        return batch

    async def close(self) -> None:
        # A batch still being read finishes first: a generator cannot be closed while it runs.
        if self._pending is not None:
            await asyncio.wait([self._pending])
        self._batches.close()


def _batches(
    job: ImportJob, definitions: dict[str, CustomFieldDefinition], workspace_id: uuid.UUID
) -> Generator[_Batch]:
    """The file's rows, checked, in batches of BATCH valid rows (the rejected ones ride along)."""
    seen: set[tuple[str, str]] = set()
    rows: list[list[Any]] = []
    errors: list[tuple[Any, ...]] = []
    rows_read = failed = 0
    for number, cells in read_rows(scratch.local_copy(job), job.file_format, job.encoding):
        rows_read += 1
        values, problems = clean_row(cells, job.mapping, definitions)
        keys = [("email", e) for e in values["emails"]] + [("phone", p) for p in values["phones"]]
        repeated = next((key for key in keys if key in seen), None) if not problems else None
        if repeated is not None:
            kind, value = repeated
            problems = [(_column_of(job.mapping, kind), f"the {kind} {value} is on an earlier row of the file")]
        if problems:
            failed += 1
            errors += [
                (workspace_id, uuid.uuid4(), job.id, number, column, reason[:500]) for column, reason in problems
            ]
            continue
        seen.update(keys)
        rows.append(_staged(number, values))
        if len(rows) >= BATCH:
            yield _Batch(rows, errors, rows_read, failed)
            rows, errors = [], []
    yield _Batch(rows, errors, rows_read, failed)


def _staged(number: int, values: dict[str, Any]) -> list[Any]:
    row = [number, *(values.get(name) for name in STAGE_COLUMNS[1:-2]), new_id(), new_id()]
    row[_CUSTOM_AT] = orjson.dumps(row[_CUSTOM_AT]).decode()
    return row


async def _flush(
    conn: asyncpg.Connection,
    ctx: Caller,
    job: ImportJob,
    pattern: str,
    batch: _Batch,
    *,
    now: datetime,
    codes: tuple[str, int] | None,
    staged: Callable[[], None],
) -> _Written:
    """One transaction: stage the batch with COPY, update matches, create the rest with the codes
    after `codes` (taken here when not given), keep the errors, add to the job's progress.
    `staged` is called once the rows are copied in."""
    written = _Written(0, 0, 0)
    async with conn.transaction():
        if batch.errors:
            await conn.copy_records_to_table(
                "import_row_errors",
                records=batch.errors,
                columns=["workspace_id", "id", "job_id", "row_number", "column", "reason"],
            )
        if batch.rows:
            await conn.copy_records_to_table("import_stage", records=batch.rows, columns=list(STAGE_COLUMNS))
        staged()
        if batch.rows:
            written = await _merge(conn, ctx, job, pattern, len(batch.rows), now=now, codes=codes)
        await _save_progress(conn, job, batch, written)
    return written


async def _merge(
    conn: asyncpg.Connection,
    ctx: Caller,
    job: ImportJob,
    pattern: str,
    staged_rows: int,
    *,
    now: datetime,
    codes: tuple[str, int] | None,
) -> _Written:
    # The writers' connections encode JSON themselves (db.create_asyncpg_pool): the actor goes as is.
    actor = ctx.actor
    if job.match_on is None:
        # Nothing to match on (a create_only import without a key): every row is new.
        updated, matched, unmatched = 0, 0, None
        new_rows = staged_rows
    else:
        updated, matched, unmatched = await conn.fetchrow(
            MERGE_SQL, ctx.workspace_id, now, job.match_on, job.mode, ctx.actor_type, ctx.actor_id, actor
        )
        new_rows = len(unmatched)
    created = 0
    if new_rows:
        scope, start = codes or await _reserve_codes(conn, ctx, pattern, now, new_rows)
        created = await conn.fetchval(
            INSERT_SQL,
            ctx.workspace_id,
            now,
            scope,
            start,
            unmatched,
            int(customer_codes.sequence_width(pattern)),
            actor,
        )
    # After the creates: a row's referral needs its referee written.
    await conn.execute(REFERRALS_SQL, ctx.workspace_id, now, job.match_on, job.mode, actor)
    return _Written(created=created, updated=updated, skipped=matched - updated)


async def _reserve_codes(
    conn: asyncpg.Connection, ctx: Caller, pattern: str, now: datetime, count: int
) -> tuple[str, int]:
    """The code scope at `now`, and the counter's value before the `count` numbers taken."""
    scope = customer_codes.render(pattern, now)
    return scope, await conn.fetchval(RESERVE_CODES_SQL, ctx.workspace_id, scope, count)


async def _save_progress(conn: asyncpg.Connection, job: ImportJob, batch: _Batch, written: _Written) -> None:
    # Added to, not set: batches written side by side commit in either order.
    await conn.execute(
        "UPDATE import_jobs SET rows_read = greatest(rows_read, $3), failed = greatest(failed, $4), "
        "created = created + $5, updated = updated + $6, skipped = skipped + $7 "
        "WHERE workspace_id = $1 AND id = $2",
        job.workspace_id,
        job.id,
        batch.rows_read,
        batch.failed,
        written.created,
        written.updated,
        written.skipped,
    )


async def _cancelled(conn: asyncpg.Connection, job: ImportJob) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT cancel_requested FROM import_jobs WHERE workspace_id = $1 AND id = $2", job.workspace_id, job.id
        )
    )
