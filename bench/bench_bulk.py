#!/usr/bin/env python3
"""Bulk data bench (issue #8 "Speed"): customer import, export and duplicate scan over 1M customers.

Uses its own database, `guanxi_bench_bulk` (embedded PostgreSQL, or DATABASE_URL's server), recreated
and migrated on every run, with one workspace and an API key with every scope. bench/bulk_data.py
writes a --rows customers CSV (UTF-8 with BOM; Chinese and pinyin names, unique emails and mobiles
in the formats people type, company, title, province, city, tags, source; --dup-rate of the rows are
second entries of an earlier customer). The service runs as in production: `guanxi serve --no-worker`
(one uvicorn worker) and one `guanxi worker` process. In one run:

  1. Import, end to end: POST /api/v1/imports (multipart upload of the file, create_only), then
     GET /imports/{id} every 0.25 s until it is done. Targets: < 90 s and ≥ 0.5 × the floor's rows/s.
     Floor: one raw `COPY bulk_copy_floor (...) FROM STDIN (FORMAT csv, HEADER)` of the same file through
     asyncpg, into a table shaped like `customers`: the same column names and types, the file's
     columns as they are, and the columns the service derives computed by PostgreSQL itself (ids
     uuidv7(), codes from a sequence, emails/phones/tags arrays and search_text as generated
     columns), with every index of `customers` recreated on it verbatim, plus unique indexes on the
     email and the phone standing in for `customer_identities`. No validation, no identity rows, no
     events. For scale, the bench also prints a bare COPY into a table of text columns with no index.
  2. Export: POST /api/v1/exports {"format": "csv"} for the whole workspace, then GET /exports/{id}
     until it is done (downloadable); the download is timed on its own. Target < 60 s. Floor: raw
     `COPY (SELECT the export's columns ...) TO STDOUT (FORMAT csv)` through asyncpg to a file.
  3. Duplicate scan: GET /api/v1/customers/duplicates (threshold 0.5, limit 100) over the imported
     customers. Target < 60 s. Floor: the service's duplicate SQL, raw through asyncpg.

Each figure is printed with its target and PASS/MISS, and with the load average and the machine's
busy/steal share over its run (the machine is shared). Results also go to bench/results/bulk-<UTC
timestamp>.json. Flags meant for other benches (bench/run_all.py passes its arguments to all) are
ignored.

    .venv/bin/python bench/bench_bulk.py                     # 1,000,000 rows
    .venv/bin/python bench/bench_bulk.py --rows 50000        # a quick run
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from bulk_data import MAPPING, BulkFile, write_customers_csv
from harness import (
    BENCH_DIR,
    BenchError,
    ServerProcess,
    busy_and_steal,
    free_port,
    machine_cpu,
    machine_facts,
    running,
)
from seed import BenchDatabase, prepare_database

BULK_DATABASE = "guanxi_bench_bulk"
RESULTS_DIR = BENCH_DIR / "results"
FULL_ROWS = 1_000_000
IMPORT_TARGET_S = 90.0
IMPORT_TARGET_RATIO = 0.5
EXPORT_TARGET_S = 60.0
DUPLICATES_TARGET_S = 60.0
POLL_SECONDS = 0.25
DUPLICATE_THRESHOLD = 0.5
DUPLICATE_LIMIT = 100

# The floor table: customers' columns by name and type. The file's columns land as they are
# (name, company, title, province, city, source) or in *_raw columns, and PostgreSQL computes the
# rest as the service would: arrays and search_text as generated columns, ids, codes and times as
# defaults. Every index of customers is then recreated on it (same column names, so verbatim).
# A generated column cannot read another: the search text's expression, for it and for its bigrams.
FLOOR_SEARCH_TEXT = """lower(
        name::text || coalesce(' ' || email_raw, '')
        || coalesce(' 86' || right(regexp_replace(phone_raw, '[^0-9]', '', 'g'), 11), '')
        || coalesce(' ' || company::text, '') || ' ' || code::text)"""
FLOOR_TABLE_SQL = """
CREATE SEQUENCE bulk_copy_floor_code;
CREATE FUNCTION bulk_copy_floor_code() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'KH-2026-' || lpad(n::text, greatest(6, length(n::text)), '0') FROM nextval('bulk_copy_floor_code') AS n
$$;
CREATE TABLE bulk_copy_floor (
    workspace_id uuid NOT NULL DEFAULT '{workspace_id}'::uuid,
    id uuid NOT NULL DEFAULT uuidv7(),
    code varchar(64) NOT NULL DEFAULT bulk_copy_floor_code(),
    kind varchar(16) NOT NULL DEFAULT 'individual',
    name varchar(200) NOT NULL,
    email_raw text,
    phone_raw text,
    tags_raw text,
    emails text[] NOT NULL GENERATED ALWAYS AS (
        CASE WHEN email_raw IS NULL THEN '{{}}'::text[] ELSE ARRAY[lower(email_raw)] END) STORED,
    phones text[] NOT NULL GENERATED ALWAYS AS (
        CASE WHEN phone_raw IS NULL THEN '{{}}'::text[]
             ELSE ARRAY['+86' || right(regexp_replace(phone_raw, '[^0-9]', '', 'g'), 11)] END) STORED,
    company varchar(200),
    title varchar(200),
    gender varchar(16),
    birthday date,
    country varchar(2),
    province varchar(100),
    city varchar(100),
    district varchar(100),
    street varchar(300),
    postcode varchar(20),
    source varchar(64),
    tags text[] NOT NULL GENERATED ALWAYS AS (coalesce(string_to_array(tags_raw, ';'), '{{}}'::text[])) STORED,
    owner_id uuid,
    preferences jsonb NOT NULL DEFAULT '{{}}',
    custom_fields jsonb NOT NULL DEFAULT '{{}}',
    consent jsonb NOT NULL DEFAULT '{{}}',
    notes text,
    search_text text NOT NULL GENERATED ALWAYS AS ({search_text}) STORED,
    search_bigrams text[] NOT NULL GENERATED ALWAYS AS (guanxi_bigrams({search_text})) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX bulk_copy_floor_email ON bulk_copy_floor (workspace_id, lower(email_raw));
CREATE UNIQUE INDEX bulk_copy_floor_phone ON bulk_copy_floor (workspace_id,
    ('+86' || right(regexp_replace(phone_raw, '[^0-9]', '', 'g'), 11)));
"""
FLOOR_COLUMNS = ["name", "email_raw", "phone_raw", "company", "title", "province", "city", "tags_raw", "source"]
CUSTOMER_INDEXES_SQL = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'customers' ORDER BY indexname"
BARE_TABLE_SQL = "CREATE TABLE bulk_copy_bare ({})".format(", ".join(f"c{i} text" for i in range(len(FLOOR_COLUMNS))))
# app/services/bulk/exports.py's columns, in its order, for the export floor (the workspace has no custom fields).
EXPORT_FLOOR_SQL = """
SELECT code, name, kind, array_to_string(emails, ';'), array_to_string(phones, ';'), company, title, gender, birthday,
       country, province, city, district, street, postcode, source, array_to_string(tags, ';'), notes, created_at
FROM customers WHERE workspace_id = '{workspace_id}' AND deleted_at IS NULL ORDER BY id
"""


@dataclass
class Interval:
    """Load average, machine busy/steal and wall time around one measurement."""

    seconds: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    busy_pct: float | None = None
    steal_pct: float | None = None


@contextmanager
def measured() -> Iterator[Interval]:
    interval = Interval(load_before=os.getloadavg())
    cpu = machine_cpu()
    started = time.perf_counter()
    try:
        yield interval
    finally:
        interval.seconds = time.perf_counter() - started
        interval.load_after = os.getloadavg()
        interval.busy_pct, interval.steal_pct = busy_and_steal(cpu, machine_cpu())


@dataclass
class Prepared:
    db: BenchDatabase
    postgres_version: str
    workspace_id: uuid.UUID
    key: str
    file: BulkFile
    generate_seconds: float
    results: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="customers in the file")
    parser.add_argument("--dup-rate", type=float, default=0.01, help="share of rows that re-enter an earlier one")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the file's generator")
    parser.add_argument(
        "--statement-timeout-ms",
        type=int,
        default=None,
        help="GUANXI_STATEMENT_TIMEOUT_MS for the service (default: the service's own, 5000)",
    )
    parser.add_argument("--skip-floor", action="store_true", help="skip the COPY floors")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args, _ = parser.parse_known_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    return args


async def prepare(db: BenchDatabase, args: argparse.Namespace, workdir: Path) -> Prepared:
    from app.core.access import ALL_SCOPES
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings
    from app.services.identity import api_keys, workspaces

    engine = create_engine(db.url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            workspace, _ = await workspaces.create(
                session,
                slug="bench-bulk",
                name="Bench (bulk)",
                admin_email="bulk@bench.example.com",
                admin_password=uuid.uuid4().hex,
            )
            _, key = await api_keys.issue(session, workspace.id, name="bench bulk", scopes=sorted(ALL_SCOPES))
            await session.commit()
            workspace_id = workspace.id
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(db.dsn)
    try:
        version = str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()
    started = time.perf_counter()
    file = await asyncio.to_thread(
        write_customers_csv, workdir / "customers.csv", args.rows, seed=args.seed, dup_rate=args.dup_rate
    )
    return Prepared(db, version, workspace_id, key, file, time.perf_counter() - started)


# --- floors ------------------------------------------------------------------------------------------


async def copy_floor(prepared: Prepared) -> dict[str, Any]:
    """The bare COPY (for scale) and the floor: COPY into the customers-shaped, fully indexed table."""
    conn = await asyncpg.connect(prepared.db.dsn)
    out: dict[str, Any] = {}
    try:
        await conn.execute(BARE_TABLE_SQL)
        await conn.execute("CHECKPOINT")
        with measured() as bare:
            await conn.copy_to_table(
                "bulk_copy_bare", source=str(prepared.file.path), format="csv", header=True, encoding="utf-8"
            )
        out["bare"] = _interval(bare, rows=prepared.file.rows)
        await conn.execute("DROP TABLE bulk_copy_bare")

        await conn.execute(FLOOR_TABLE_SQL.format(workspace_id=uuid.uuid4(), search_text=FLOOR_SEARCH_TEXT))
        indexes = await conn.fetch(CUSTOMER_INDEXES_SQL)
        for index in indexes:
            name, definition = index["indexname"], index["indexdef"]
            floor_name = "bulk_copy_floor_" + name.removeprefix("ix_").removeprefix("uq_").removeprefix("pk_")
            definition = definition.replace(f"INDEX {name} ON", f"INDEX {floor_name} ON", 1)
            definition = definition.replace(" ON public.customers ", " ON public.bulk_copy_floor ", 1)
            if " ON public.bulk_copy_floor " not in definition:
                raise BenchError(f"cannot recreate {name} on the floor table: {index['indexdef']}")
            await conn.execute(definition)
        await conn.execute("CHECKPOINT")
        with measured() as floor:
            await conn.copy_to_table(
                "bulk_copy_floor",
                source=str(prepared.file.path),
                columns=FLOOR_COLUMNS,
                format="csv",
                header=True,
                encoding="utf-8",
            )
        copied = int(await conn.fetchval("SELECT count(*) FROM bulk_copy_floor"))
        if copied != prepared.file.rows:
            raise BenchError(f"floor COPY loaded {copied:,} rows of {prepared.file.rows:,}")
        out["floor"] = _interval(floor, rows=copied)
        out["floor"]["indexes"] = len(indexes) + 2
        await conn.execute("DROP TABLE bulk_copy_floor")
        await conn.execute("DROP FUNCTION bulk_copy_floor_code()")
        await conn.execute("DROP SEQUENCE bulk_copy_floor_code")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return out


async def export_floor(prepared: Prepared, path: Path) -> dict[str, Any]:
    conn = await asyncpg.connect(prepared.db.dsn)
    try:
        with measured() as interval:
            await conn.copy_from_query(
                EXPORT_FLOOR_SQL.format(workspace_id=prepared.workspace_id), output=str(path), format="csv", header=True
            )
    finally:
        await conn.close()
    lines, size = await asyncio.to_thread(_count_lines, path)
    return {**_interval(interval, rows=lines), "bytes": size}


async def duplicates_floor(prepared: Prepared) -> dict[str, Any]:
    """The service's duplicate statements, raw: the same SQL texts, parameters, settings and order of
    steps as customer_merges.candidate_pairs, through asyncpg with no session, HTTP or grouping."""
    from app.core.access import system_caller
    from app.services.customers import customer_merges as cm
    from app.services.customers.visibility import visible_customer_ids_sql

    visible, scope = visible_customer_ids_sql(system_caller(prepared.workspace_id))
    people = cm.NAME_TRIGRAMS.format(visible=visible)
    params: dict[str, Any] = {"ws": prepared.workspace_id, "pairs": DUPLICATE_LIMIT * 5, **scope}
    conn = await asyncpg.connect(prepared.db.dsn)
    try:
        with measured() as interval:
            async with conn.transaction():
                for statement in cm.SCAN_SETTINGS.split("; "):
                    await conn.execute(statement)
                sql, names = _positional(cm.SAME_TRIGRAMS_SQL.format(people=people))
                rows = await conn.fetch(sql, *(params[n] for n in names))
                steps = 1
                for level in sorted({max(DUPLICATE_THRESHOLD, cm.HIGH_THRESHOLD), DUPLICATE_THRESHOLD}, reverse=True):
                    if len(rows) >= params["pairs"]:
                        break
                    sql, names = _positional(cm.SIMILAR_TRIGRAMS_SQL.format(people=people))
                    rows = await conn.fetch(sql, *({**params, "threshold": level}[n] for n in names))
                    steps += 1
    finally:
        await conn.close()
    return {**_interval(interval, rows=None), "pairs": len(rows), "steps": steps}


def _positional(sql: str) -> tuple[str, list[str]]:
    """`:name` binds → `$n` for asyncpg, with the names in order."""
    import re

    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):(\w+)", number, sql), names


# --- the service -------------------------------------------------------------------------------------


def run_import(client: httpx.Client, prepared: Prepared) -> dict[str, Any]:
    with measured() as interval:
        upload_started = time.perf_counter()
        with prepared.file.path.open("rb") as file:
            queued = client.post(
                "/api/v1/imports",
                files={"file": ("customers.csv", file, "text/csv")},
                data={"mapping": json.dumps(MAPPING, ensure_ascii=False), "mode": "create_only"},
            )
        if queued.status_code != 202:
            raise BenchError(f"POST /imports -> {queued.status_code} {queued.text[:500]}")
        uploaded = time.perf_counter() - upload_started
        job = _poll(client, f"/api/v1/imports/{queued.json()['id']}", ("done", "failed", "cancelled"))
    if job["status"] != "done":
        raise BenchError(f"import ended {job['status']}: {job.get('error')}")
    progress = job["progress"]
    worker_s = _seconds_between(job["started_at"], job["finished_at"])
    return {
        **_interval(interval, rows=int(progress["created"])),
        "upload_seconds": round(uploaded, 2),
        "worker_seconds": worker_s,
        "progress": progress,
        "job_id": job["id"],
    }


def run_export(client: httpx.Client, path: Path) -> dict[str, Any]:
    with measured() as interval:
        queued = client.post("/api/v1/exports", json={"format": "csv"})
        if queued.status_code != 202:
            raise BenchError(f"POST /exports -> {queued.status_code} {queued.text[:500]}")
        job = _poll(client, f"/api/v1/exports/{queued.json()['id']}", ("done", "failed"))
    if job["status"] != "done":
        raise BenchError(f"export ended {job['status']}")
    started = time.perf_counter()
    with client.stream("GET", job["download"]) as got, path.open("wb") as file:
        if got.status_code != 200:
            raise BenchError(f"GET {job['download']} -> {got.status_code}")
        for chunk in got.iter_bytes(1 << 20):
            file.write(chunk)
    download_s = time.perf_counter() - started
    lines, size = _count_lines(path)
    if lines != job["rows"]:
        raise BenchError(f"the export says {job['rows']} rows, the file has {lines}")
    return {
        **_interval(interval, rows=int(job["rows"])),
        "download_seconds": round(download_s, 2),
        "bytes": size,
        "job_id": job["id"],
    }


def run_duplicates(client: httpx.Client) -> dict[str, Any]:
    params = {"threshold": DUPLICATE_THRESHOLD, "limit": DUPLICATE_LIMIT}
    with measured() as interval:
        got = client.get("/api/v1/customers/duplicates", params=params, timeout=900)
    out: dict[str, Any] = {**_interval(interval, rows=None), "status": got.status_code}
    if got.status_code != 200:
        out["error"] = got.text[:300]
        return out
    groups = got.json()["items"]
    out["groups"] = len(groups)
    out["customers_in_groups"] = sum(len(g["customer_ids"]) for g in groups)
    out["top_scores"] = [g["score"] for g in groups[:5]]
    return out


def _count_lines(path: Path) -> tuple[int, int]:
    """Data lines (after the header) and bytes of a CSV file whose cells hold no line breaks."""
    with path.open("rb") as file:
        return sum(1 for _ in file) - 1, path.stat().st_size


def _poll(client: httpx.Client, path: str, final: tuple[str, ...], timeout_s: float = 3600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = client.get(path)
        if got.status_code != 200:
            raise BenchError(f"GET {path} -> {got.status_code} {got.text[:300]}")
        body: dict[str, Any] = got.json()
        if body["status"] in final:
            return body
        time.sleep(POLL_SECONDS)
    raise BenchError(f"{path} not finished after {timeout_s:.0f} s")


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 2)


def _interval(interval: Interval, *, rows: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seconds": round(interval.seconds, 2),
        "load_avg_before": [round(x, 2) for x in interval.load_before],
        "load_avg_after": [round(x, 2) for x in interval.load_after],
        "machine_busy_pct": interval.busy_pct,
        "machine_steal_pct": interval.steal_pct,
    }
    if rows is not None:
        out["rows"] = rows
        out["rows_per_s"] = round(rows / interval.seconds) if interval.seconds else None
    return out


def service_argv(port: int) -> list[str]:
    return [*_guanxi(), "serve", "--no-demo", "--no-worker", "--port", str(port)]


def worker_argv() -> list[str]:
    return [*_guanxi(), "worker"]


def _guanxi() -> list[str]:
    script = Path(sys.executable).parent / "guanxi"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from app.cli import main; main()"]


async def settle(dsn: str, timeout_s: float = 900.0) -> dict[str, float]:
    """Wait until the worker has fanned out every event of the import (a million `customer.created`
    events to publish) and no autovacuum worker runs, so the next timed step does not share the
    cores with them; returns the seconds each wait took."""
    conn = await asyncpg.connect(dsn)
    started = time.monotonic()
    waited: dict[str, float] = {}
    try:
        while await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL"):
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"events still unpublished after {timeout_s:.0f} s")
            await asyncio.sleep(1)
        waited["events_published_s"] = round(time.monotonic() - started, 1)
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"):
            if time.monotonic() - started > timeout_s:
                break
            await asyncio.sleep(1)
        waited["settled_s"] = round(time.monotonic() - started, 1)
    finally:
        await conn.close()
    return waited


def remove_job_files(prepared: Prepared) -> None:
    """The service keeps the upload and the export under its data folder (hundreds of MB at full size)."""
    from app.core.settings import get_settings

    data_dir = get_settings().data_dir
    for folder, step in (("imports", "import"), ("exports", "export")):
        job_id = prepared.results.get(step, {}).get("job_id")
        if job_id:
            (data_dir / folder / f"{job_id}.csv").unlink(missing_ok=True)


# --- report ------------------------------------------------------------------------------------------


def _show(step: str, part: dict[str, Any]) -> None:
    """One measured step as soon as it is done (the table at the end repeats it with its target)."""
    rate = f", {part['rows_per_s']:,} rows/s" if part.get("rows_per_s") else ""
    print(f"  {step}: {part['seconds']:.1f} s{rate}; load avg {part['load_avg_before']}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(prepared: Prepared) -> list[str]:
    r = prepared.results
    verdicts: list[str] = []
    rows = prepared.file.rows
    print()
    print(f"Bulk data over {rows:,} customers ({prepared.file.bytes / 2**20:.1f} MB CSV)")
    if rows != FULL_ROWS:
        print(f"  (the targets are set for {FULL_ROWS:,} rows; at {rows:,} their verdicts say little)")
    imp, floor, bare = r["import"], r.get("copy", {}).get("floor"), r.get("copy", {}).get("bare")
    if bare:
        _line("bare COPY (text columns, no index)", bare)
    if floor:
        _line(f"floor: COPY into customers-shaped table ({floor['indexes']} indexes)", floor)
    _line("service import, end to end", imp)
    print(f"      upload {imp['upload_seconds']} s, worker {imp['worker_seconds']} s; progress {imp['progress']}")
    after = r.get("after_import", {})
    print(f"      the import's events all fanned out {after.get('events_published_s')} s after it finished")
    ok = imp["seconds"] < IMPORT_TARGET_S and imp["progress"]["created"] == rows
    print(f"      target < {IMPORT_TARGET_S:g} s: {verdict(ok)}")
    verdicts.append(verdict(ok))
    if floor:
        ratio = imp["rows_per_s"] / floor["rows_per_s"]
        imp["ratio"] = round(ratio, 3)
        ok = ratio >= IMPORT_TARGET_RATIO
        print(f"      ratio service/floor rows/s = {ratio:.2f}, target ≥ {IMPORT_TARGET_RATIO}: {verdict(ok)}")
        verdicts.append(verdict(ok))
    exp, exp_floor = r["export"], r.get("export_floor")
    if exp_floor:
        _line("floor: COPY (SELECT the export's columns) TO STDOUT", exp_floor)
    _line("service export, until downloadable", exp)
    extra = f"; service/floor time {exp['seconds'] / exp_floor['seconds']:.1f}×" if exp_floor else ""
    print(f"      download {exp['download_seconds']} s, {exp['bytes'] / 2**20:.1f} MB{extra}")
    ok = exp["seconds"] < EXPORT_TARGET_S
    print(f"      target < {EXPORT_TARGET_S:g} s: {verdict(ok)}")
    verdicts.append(verdict(ok))
    dup, dup_floor = r["duplicates"], r.get("duplicates_floor")
    if dup_floor:
        _line(f"floor: the duplicate SQL raw ({dup_floor['pairs']} pairs)", dup_floor)
    _line(f"service GET /customers/duplicates (HTTP {dup['status']})", dup)
    if dup["status"] == 200:
        print(f"      {dup['groups']} groups, {dup['customers_in_groups']} customers; top scores {dup['top_scores']}")
    else:
        print(f"      {dup.get('error')}")
    if dup_floor:
        print(f"      service/floor time {dup['seconds'] / dup_floor['seconds']:.2f}×")
    ok = dup["status"] == 200 and dup["seconds"] < DUPLICATES_TARGET_S
    print(f"      target < {DUPLICATES_TARGET_S:g} s: {verdict(ok)}")
    verdicts.append(verdict(ok))
    return verdicts


def _line(label: str, part: dict[str, Any]) -> None:
    rate = f"{part['rows_per_s']:>9,} rows/s" if part.get("rows_per_s") else " " * 16
    load = "/".join(f"{x:.2f}" for x in part["load_avg_before"])
    print(f"  {label:<58} {part['seconds']:>7.1f} s {rate}  load {load}, busy {part['machine_busy_pct']}%")


# --- main --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> int:
    started = datetime.now(UTC)
    facts = machine_facts()
    print(f"guanxi bulk bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    print(f"machine: {facts['nproc']} CPUs, {facts['cpu_model']}, {facts['memory_total']}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    db = prepare_database(recreate=True, database=BULK_DATABASE)
    print(f"database {db.server}: {BULK_DATABASE} (recreated)")
    prepared = asyncio.run(prepare(db, args, workdir))
    print(
        f"file: {prepared.file.rows:,} rows, {prepared.file.bytes / 2**20:.1f} MB, "
        f"{len(prepared.file.duplicate_pairs):,} second entries; written in {prepared.generate_seconds:.1f} s"
    )
    print(f"PostgreSQL: {prepared.postgres_version.split(' on ')[0]}")

    if not args.skip_floor:
        print("floor: COPY ...", flush=True)
        prepared.results["copy"] = asyncio.run(copy_floor(prepared))
        for name, part in prepared.results["copy"].items():
            _show(f"{name} COPY", part)

    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env["DATABASE_URL"] = db.url
    if args.statement_timeout_ms is not None:
        env["GUANXI_STATEMENT_TIMEOUT_MS"] = str(args.statement_timeout_ms)
    port = free_port()
    worker = ServerProcess("worker", worker_argv(), env, workdir / "worker.log", port=0)
    try:
        with running("service", service_argv(port), env, workdir / "service.log", port, "/readyz") as service:
            headers = {"X-API-Key": prepared.key}
            with httpx.Client(base_url=service.base_url, headers=headers, timeout=600) as client:
                print("service import ...", flush=True)
                prepared.results["import"] = run_import(client, prepared)
                _show("import", prepared.results["import"])
                waited = asyncio.run(settle(db.dsn))
                prepared.results["after_import"] = waited
                print(
                    f"  after the import: its events were all fanned out {waited['events_published_s']} s later, "
                    f"autovacuum idle at {waited['settled_s']} s",
                    flush=True,
                )
                if not args.skip_floor:
                    print("floor: export COPY ...", flush=True)
                    prepared.results["export_floor"] = asyncio.run(export_floor(prepared, workdir / "floor-export.csv"))
                    _show("export floor", prepared.results["export_floor"])
                print("service export ...", flush=True)
                prepared.results["export"] = run_export(client, workdir / "export.csv")
                _show("export", prepared.results["export"])
                if not args.skip_floor:
                    print("floor: duplicate SQL ...", flush=True)
                    prepared.results["duplicates_floor"] = asyncio.run(duplicates_floor(prepared))
                    _show("duplicates floor", prepared.results["duplicates_floor"])
                print("service duplicates ...", flush=True)
                prepared.results["duplicates"] = run_duplicates(client)
    finally:
        worker.stop()
        remove_job_files(prepared)
    verdicts = report(prepared)
    out = {
        "bench": "bulk",
        "date": started.isoformat(),
        "machine": facts,
        "postgresql": prepared.postgres_version,
        "database": db.server,
        "settings": {
            "rows": args.rows,
            "dup_rate": args.dup_rate,
            "seed": args.seed,
            "statement_timeout_ms": args.statement_timeout_ms,
            "file_bytes": prepared.file.bytes,
            "second_entries": len(prepared.file.duplicate_pairs),
        },
        "results": prepared.results,
        "verdicts": verdicts,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"bulk-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"\nresults in {path.relative_to(BENCH_DIR.parent)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="guanxi-bench-bulk-"))
    try:
        code = run(args, workdir)
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        print(f"logs kept in {workdir}", file=sys.stderr)
        return 2
    shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
