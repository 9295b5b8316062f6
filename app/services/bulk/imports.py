"""Customer imports from CSV (UTF-8, with or without BOM, or GB18030) and XLSX.

Rows are checked in Python with the API's own rules (phone and email normalisation, lengths, NUL,
custom field types), copied into a staging table with COPY, and merged set-based: matched
customers are updated only where a value differs (so a re-run changes nothing), the rest are
created with a block of codes (run() says when a block can be left unused). Rejected rows are
kept with their row, column and reason."""

import asyncio
import codecs
import csv
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
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.models import CustomFieldDefinition, ImportJob, Workspace
from app.schemas.customer import normalise_email, normalise_phone
from app.services.customers import custom_fields, customer_codes
from app.services.events import outbox

FIELDS = (
    "name",
    "kind",
    "email",
    "phone",
    "company",
    "title",
    "gender",
    "birthday",
    "country",
    "province",
    "city",
    "district",
    "street",
    "postcode",
    "source",
    "tags",
    "notes",
    "code",
)
LIMITS = {
    "name": 200,
    "company": 200,
    "title": 200,
    "province": 100,
    "city": 100,
    "district": 100,
    "street": 300,
    "postcode": 20,
    "source": 64,
    "notes": 10_000,
    "code": 64,
}
BATCH = 5000
SNIFF_BYTES = 1 << 16
Progress = Callable[[ImportJob], None]


def check_mapping(mapping: dict[str, str], definitions: dict[str, CustomFieldDefinition]) -> None:
    """File column → field; every field known, and a name column present."""
    for column, target in mapping.items():
        known = target in FIELDS or (target.startswith("custom.") and target[7:] in definitions)
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
    """The staged values of one row, or the (column, reason) pairs that reject it."""
    values: dict[str, Any] = {"emails": [], "phones": [], "tags": [], "custom": {}}
    problems: list[tuple[str, str]] = []
    for column, target in mapping.items():
        raw = (cells.get(column) or "").strip()
        if "\x00" in raw:
            problems.append((column, "contains a NUL character"))
            continue
        if not raw:
            continue
        try:
            if target == "email":
                values["emails"] += [normalise_email(part) for part in raw.replace(";", ",").split(",") if part.strip()]
            elif target == "phone":
                values["phones"] += [normalise_phone(part) for part in raw.replace(";", ",").split(",") if part.strip()]
            elif target == "tags":
                values["tags"] = [t.strip() for t in raw.replace(";", ",").split(",") if t.strip()][:50]
            elif target == "kind":
                if raw not in ("individual", "company"):
                    raise ValueError("must be individual or company")
                values["kind"] = raw
            elif target == "gender":
                if raw not in ("male", "female", "other", "unknown"):
                    raise ValueError("must be male, female, other or unknown")
                values["gender"] = raw
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
                    typed = [part.strip() for part in raw.split(",") if part.strip()]
                values["custom"][key] = custom_fields.coerce_value(definitions[key], typed, [column])
            else:
                if len(raw) > LIMITS[target]:
                    raise ValueError(f"longer than {LIMITS[target]} characters")
                values[target] = raw
        except (ValueError, ValidationError, ValidationFailed) as exc:
            problems.append((column, getattr(exc, "detail", None) or str(exc)))
    if not problems and not values.get("name"):
        problems.append((_column_of(mapping, "name"), "name is required"))
    values["emails"] = list(dict.fromkeys(values["emails"]))[:10]
    values["phones"] = list(dict.fromkeys(values["phones"]))[:10]
    return values, problems


def _column_of(mapping: dict[str, str], field: str) -> str:
    return next((column for column, target in mapping.items() if target == field), field)


STAGE_COLUMNS = (
    "row_number",
    "name",
    "kind",
    "emails",
    "phones",
    "company",
    "title",
    "gender",
    "birthday",
    "country",
    "province",
    "city",
    "district",
    "street",
    "postcode",
    "source",
    "tags",
    "notes",
    "code",
    "custom",
    "search_text",
    "customer_id",
    "event_id",
)

MERGE_SQL = """
WITH staged AS (
    SELECT s.*, coalesce(
        (SELECT c.id FROM customers c WHERE c.workspace_id = $1 AND c.deleted_at IS NULL AND c.code = s.code
           AND $3 = 'code'),
        (SELECT i.customer_id FROM customer_identities i WHERE i.workspace_id = $1 AND i.kind = 'email'
           AND i.value = s.emails[1] AND $3 = 'email'),
        (SELECT i.customer_id FROM customer_identities i WHERE i.workspace_id = $1 AND i.kind = 'phone'
           AND i.value = s.phones[1] AND $3 = 'phone')
    ) AS match_id
    FROM import_stage s
),
updated AS (
    UPDATE customers c SET
        name = st.name, kind = coalesce(st.kind, c.kind), company = coalesce(st.company, c.company),
        title = coalesce(st.title, c.title), gender = coalesce(st.gender, c.gender),
        birthday = coalesce(st.birthday, c.birthday), country = coalesce(st.country, c.country),
        province = coalesce(st.province, c.province), city = coalesce(st.city, c.city),
        district = coalesce(st.district, c.district), street = coalesce(st.street, c.street),
        postcode = coalesce(st.postcode, c.postcode), source = coalesce(st.source, c.source),
        tags = CASE WHEN cardinality(st.tags) > 0 THEN st.tags ELSE c.tags END,
        notes = coalesce(st.notes, c.notes), custom_fields = c.custom_fields || st.custom::jsonb,
        version = c.version + 1, updated_at = $2
    FROM staged st
    WHERE $4 = 'upsert' AND c.workspace_id = $1 AND c.id = st.match_id
      AND (c.name, c.kind, c.company, c.title, c.gender, c.birthday, c.country, c.province, c.city, c.district,
           c.street, c.postcode, c.source, c.tags, c.notes, c.custom_fields)
          IS DISTINCT FROM
          (st.name, coalesce(st.kind, c.kind), coalesce(st.company, c.company), coalesce(st.title, c.title),
           coalesce(st.gender, c.gender), coalesce(st.birthday, c.birthday), coalesce(st.country, c.country),
           coalesce(st.province, c.province), coalesce(st.city, c.city), coalesce(st.district, c.district),
           coalesce(st.street, c.street), coalesce(st.postcode, c.postcode), coalesce(st.source, c.source),
           CASE WHEN cardinality(st.tags) > 0 THEN st.tags ELSE c.tags END, coalesce(st.notes, c.notes),
           c.custom_fields || st.custom::jsonb)
    RETURNING c.id
)
SELECT (SELECT count(*) FROM updated),
       (SELECT count(*) FROM staged WHERE match_id IS NOT NULL),
       coalesce((SELECT array_agg(row_number ORDER BY row_number) FROM staged WHERE match_id IS NULL), '{}')
"""

INSERT_SQL = """
WITH fresh AS (
    SELECT s.*, s.customer_id AS new_id,
           replace($3, '{seq}', lpad(n::text, greatest($6, length(n::text)), '0')) AS new_code
    FROM (SELECT *, $4 + row_number() OVER (ORDER BY row_number) AS n FROM import_stage
          WHERE $5::int[] IS NULL OR row_number = ANY($5::int[])) s
),
created AS (
    INSERT INTO customers (workspace_id, id, code, kind, name, emails, phones, company, title, gender, birthday,
                           country, province, city, district, street, postcode, source, tags, owner_id,
                           preferences, custom_fields, consent, notes, search_text, created_at, updated_at, version)
    SELECT $1, f.new_id, f.new_code, coalesce(f.kind, 'individual'), f.name,
           f.emails, f.phones, f.company, f.title, f.gender, f.birthday, f.country, f.province, f.city, f.district,
           f.street, f.postcode, f.source, f.tags, NULL, '{}', f.custom::jsonb, '{}', f.notes,
           f.search_text || ' ' || lower(f.new_code), $2, $2, 1
    FROM fresh f
    RETURNING id, emails, phones, code, name
),
identities AS (
    INSERT INTO customer_identities (workspace_id, kind, value, customer_id)
    SELECT $1, 'email', e, c.id FROM created c, unnest(c.emails) e
    UNION ALL
    SELECT $1, 'phone', p, c.id FROM created c, unnest(c.phones) p
    ON CONFLICT DO NOTHING
    RETURNING 1
),
events AS (
    INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data, published_at)
    SELECT $1, f.event_id, 'customer.created', $2, $7::jsonb,
           jsonb_build_object('id', c.id, 'code', c.code, 'name', c.name, 'source', 'import'),
           {published_at}
    FROM created c JOIN fresh f ON f.new_id = c.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM created), (SELECT count(*) FROM identities), (SELECT count(*) FROM events)
""".replace("{published_at}", outbox.published_unless_heard("$1", "'customer.created'", "$2"))


STAGE_TABLE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS import_stage (row_number int, name text, kind text, emails text[], "
    "phones text[], company text, title text, gender text, birthday date, country text, province text, "
    "city text, district text, street text, postcode text, source text, tags text[], notes text, code text, "
    "custom text, search_text text, customer_id uuid, event_id uuid) ON COMMIT DELETE ROWS"
)
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
    rows: list[tuple[Any, ...]]
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
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[Any, ...]] = []
    rows_read = failed = 0
    for number, cells in read_rows(Path(job.path), job.file_format, job.encoding):
        rows_read += 1
        values, problems = clean_row(cells, job.mapping, definitions)
        keys = [("email", e) for e in values["emails"]] + [("phone", p) for p in values["phones"]]
        if not problems and any(key in seen for key in keys):
            problems = [(_column_of(job.mapping, "email"), "the same email or phone is on an earlier row of the file")]
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


def _staged(number: int, v: dict[str, Any]) -> tuple[Any, ...]:
    search = " ".join([v["name"], *v["emails"], *(p.lstrip("+") for p in v["phones"]), v.get("company") or ""])
    return (
        number,
        v["name"],
        v.get("kind"),
        v["emails"],
        v["phones"],
        v.get("company"),
        v.get("title"),
        v.get("gender"),
        v.get("birthday"),
        v.get("country"),
        v.get("province"),
        v.get("city"),
        v.get("district"),
        v.get("street"),
        v.get("postcode"),
        v.get("source"),
        v["tags"],
        v.get("notes"),
        v.get("code"),
        orjson.dumps(v["custom"]).decode(),
        search.strip().lower(),
        # Ids made here, in the reading thread, rather than by PostgreSQL in the merge.
        new_id(),
        new_id(),
    )


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
    if job.match_on is None:
        # Nothing to match on (a create_only import without a key): every row is new.
        updated, matched, unmatched = 0, 0, None
        new_rows = staged_rows
    else:
        updated, matched, unmatched = await conn.fetchrow(MERGE_SQL, ctx.workspace_id, now, job.match_on, job.mode)
        new_rows = len(unmatched)
    created = 0
    if new_rows:
        scope, start = codes or await _reserve_codes(conn, ctx, pattern, now, new_rows)
        created, _, _ = await conn.fetchrow(
            INSERT_SQL,
            ctx.workspace_id,
            now,
            scope,
            start,
            unmatched,
            int(customer_codes.sequence_width(pattern)),
            orjson.dumps(ctx.actor).decode(),
        )
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
