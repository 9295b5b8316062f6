#!/usr/bin/env python3
"""Loyalty report bench (issue "Loyalty"): "the liability report p95 < 300 ms" over 1M members and
10M ledger rows.

Seeds `guanxi_bench_loyalty_report` (embedded PostgreSQL, or DATABASE_URL's server) set-based: --members
customers (seed.py's generator), each a member with a level (three levels, a quarter without),
--entries-per-member ledger entries over the last two years (earn, redeem, expire, adjust, referral),
three lots per member (some pending, some past expiry, most available), the balance the lots' sum,
a `loyalty.level_changed` event for one member in ten and a referral for one in twenty (every
status). Seeded data is reused while the sizes match; --reseed forces it. Then, in one run:

  GET /api/v1/reports/loyalty (the default 365-day window) on `guanxi serve --no-demo --no-worker`
  with a key holding `reports:read`, --requests sequential requests after --warmup unmeasured ones:
  p50/p95/p99. Floor: the report's statement raw through asyncpg on one connection, as many times;
  and the service/floor ratio. The key sees the whole workspace, so both read the points moved from
  the daily figures the ledger's triggers keep (folded after seeding, as the worker folds them).

Results also go to bench/results/loyalty-report-<UTC timestamp>.json, with EXPLAIN (ANALYZE, BUFFERS).

    .venv/bin/python bench/bench_loyalty_report.py           # 1M members, 10M entries (seeding takes minutes once)
    .venv/bin/python bench/bench_loyalty_report.py --small   # 100k members, 1M entries
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from harness import ROOT, free_port, machine_facts, percentile, running
from seed import WorkspacePlan, ensure_workspace, prepare_database
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

from app.core.access import Scope
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.services.identity import api_keys
from app.services.loyalty import reports

DATABASE = "guanxi_bench_loyalty_report"
SLUG = "bench-loyalty"
TARGET_P95_MS = 300.0
PATH = "/api/v1/reports/loyalty"
LEVELS = [
    {"code": "silver", "name": "银卡", "metric": "spend", "threshold": "1000"},
    {"code": "gold", "name": "金卡", "metric": "spend", "threshold": "5000"},
    {"code": "platinum", "name": "白金卡", "metric": "spend", "threshold": "20000"},
]
KINDS = ["earn", "earn", "earn", "earn", "earn", "redeem", "redeem", "expire", "adjust", "referral"]

SEED_SQL = [
    "DELETE FROM referrals WHERE workspace_id = $1",
    "DELETE FROM outbox_events WHERE workspace_id = $1 AND type = 'loyalty.level_changed'",
    "DELETE FROM loyalty_lots WHERE workspace_id = $1",
    "DELETE FROM loyalty_entries WHERE workspace_id = $1",
    "DELETE FROM loyalty_accounts WHERE workspace_id = $1",
    "DELETE FROM loyalty_documents WHERE workspace_id = $1",
    """INSERT INTO loyalty_documents (workspace_id, kind, document, version, updated_at)
       VALUES ($1, 'levels', $2::jsonb, 1, now())""",
    """INSERT INTO loyalty_accounts (workspace_id, customer_id, balance, level, level_since, enrolled_at, updated_at)
       SELECT $1, id, 0, (ARRAY[NULL, 'silver', 'gold', 'platinum'])[1 + (hashtext(id::text) & 3)],
              now() - interval '30 days', created_at, now()
       FROM customers WHERE workspace_id = $1""",
    """INSERT INTO loyalty_entries (workspace_id, id, customer_id, kind, points, reason, actor, created_at)
       SELECT $1, gen_random_uuid(), a.customer_id, k.kind,
              CASE WHEN k.kind IN ('redeem', 'expire') THEN -1 ELSE 1 END
                  * (10 + (hashtext(a.customer_id::text || n) & 255)),
              NULL, '{"type": "system", "id": null}'::jsonb,
              now() - make_interval(days => (hashtext(a.customer_id::text || n || 'd') & 1023) % 730)
       FROM loyalty_accounts a, generate_series(1, $2) n,
            LATERAL (SELECT (CAST($3 AS text[]))[1 + (n - 1) % cardinality(CAST($3 AS text[]))] AS kind) k
       WHERE a.workspace_id = $1""",
    """WITH lots AS (
           SELECT a.customer_id, n, 50 + (hashtext(a.customer_id::text || n) & 511) AS points,
                  CASE n WHEN 1 THEN now() + interval '7 days' ELSE now() - interval '60 days' END AS available_at,
                  CASE WHEN n = 3 AND hashtext(a.customer_id::text) & 7 = 0 THEN now() - interval '1 day'
                       ELSE now() + interval '200 days' END AS expires_at,
                  gen_random_uuid() AS entry_id
           FROM loyalty_accounts a, generate_series(1, 3) n WHERE a.workspace_id = $1
       ), entries AS (
           INSERT INTO loyalty_entries (workspace_id, id, customer_id, kind, points, actor, created_at)
           SELECT $1, entry_id, customer_id, 'adjust', points, '{"type": "system", "id": null}'::jsonb, now()
           FROM lots
       )
       INSERT INTO loyalty_lots (workspace_id, id, customer_id, entry_id, points, remaining, available_at, expires_at)
       SELECT $1, gen_random_uuid(), customer_id, entry_id, points, points / 2, available_at, expires_at FROM lots""",
    """UPDATE loyalty_accounts a SET balance = l.total
       FROM (SELECT customer_id, sum(remaining) AS total FROM loyalty_lots WHERE workspace_id = $1
             GROUP BY customer_id) l
       WHERE a.workspace_id = $1 AND a.customer_id = l.customer_id""",
    """INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data, published_at)
       SELECT $1, gen_random_uuid(), 'loyalty.level_changed',
              now() - make_interval(days => (hashtext(customer_id::text) & 511) % 400),
              '{"type": "system", "id": null}'::jsonb,
              jsonb_build_object('customer_id', customer_id, 'from_level', NULL, 'to_level', level, 'at', now()), now()
       FROM loyalty_accounts WHERE workspace_id = $1 AND hashtext(customer_id::text || 'e') % 10 = 0""",
    """INSERT INTO referrals (workspace_id, id, referrer_id, referee_id, code, status, reason, order_id,
                              referrer_points, referee_points, created_at, updated_at, version)
       SELECT $1, gen_random_uuid(), r.id, c.id, guanxi_referral_code(r.id),
              (ARRAY['created', 'qualified', 'rewarded', 'refused'])[1 + (hashtext(c.id::text) & 3)],
              CASE WHEN hashtext(c.id::text) & 3 = 3 THEN 'already_buying' END, NULL, 0, 0,
              now() - make_interval(days => (hashtext(c.id::text || 'r') & 511) % 400), now(), 1
       FROM (SELECT id, lag(id) OVER (ORDER BY id) AS prev FROM customers WHERE workspace_id = $1) c
       JOIN customers r ON r.workspace_id = $1 AND r.id = c.prev
       WHERE hashtext(c.id::text || 'f') % 20 = 0""",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="100k members, 1M entries")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--entries-per-member", type=int, default=7, help="plus the 3 entries of the lots")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--reseed", action="store_true")
    args, _ = parser.parse_known_args(argv)
    if args.members is None:
        args.members = 100_000 if args.small else 1_000_000
    return args


async def seed(dsn: str, args: argparse.Namespace) -> tuple[uuid.UUID, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        conn_timeout = "SET statement_timeout = 0"
        await conn.execute(conn_timeout)
        workspace = await ensure_workspace(conn, WorkspacePlan(SLUG, "积分报表", args.members, 7))
        ws = workspace.workspace_id
        entries = await conn.fetchval("SELECT count(*) FROM loyalty_entries WHERE workspace_id = $1", ws)
        wanted = args.members * (args.entries_per_member + 3)
        started = time.perf_counter()
        if args.reseed or not workspace.reused or entries != wanted:
            print(f"seeding loyalty for {args.members:,} members")
            async with conn.transaction():
                await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
                for statement in SEED_SQL:
                    if "$3" in statement:
                        await conn.execute(statement, ws, args.entries_per_member, KINDS)
                    elif "$2::jsonb" in statement:
                        await conn.execute(
                            statement,
                            ws,
                            orjson.dumps({"review": "rolling", "window_months": 12, "levels": LEVELS}).decode(),
                        )
                    else:
                        await conn.execute(statement, ws)
            await conn.execute("SELECT guanxi_compact_loyalty_figures()")
            for table in (
                "loyalty_accounts",
                "loyalty_entries",
                "loyalty_lots",
                "loyalty_day_figures",
                "outbox_events",
                "referrals",
            ):
                await conn.execute(f"VACUUM (ANALYZE) {table}")
        figures = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE workspace_id = $1", ws)
            for table in ("loyalty_accounts", "loyalty_entries", "loyalty_lots", "loyalty_day_figures", "referrals")
        }
        figures["seed_seconds"] = round(time.perf_counter() - started, 1)
        return ws, figures
    finally:
        await conn.close()


async def issue_key(url: str, workspace_id: uuid.UUID) -> str:
    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            _, key = await api_keys.issue(
                session, workspace_id, name="loyalty report bench", scopes=[Scope.REPORTS_READ]
            )
            await session.commit()
    finally:
        await engine.dispose()
    return key


def run_http(base_url: str, key: str, args: argparse.Namespace) -> list[float]:
    timings = []
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        for i in range(args.warmup + args.requests):
            started = time.perf_counter()
            response = client.get(PATH)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{PATH}: {response.status_code} {response.text[:300]}")
            if i >= args.warmup:
                timings.append(elapsed)
    return timings


def floor_statement() -> tuple[str, list[str]]:
    compiled = reports.REPORT_DAILY.compile(dialect=pg_asyncpg.dialect())  # type: ignore[no-untyped-call]
    return compiled.string, list(compiled.positiontup or [])


async def run_floor(dsn: str, ws: uuid.UUID, args: argparse.Namespace) -> tuple[list[float], str]:
    sql, names = floor_statement()
    now = datetime.now(UTC)
    values = {
        "ws": ws,
        "now": now,
        "since": now - timedelta(days=365),
        "until": now,
        "tz": "Asia/Shanghai",
        "levels": orjson.dumps(LEVELS).decode(),
        **reports.days_touched(now - timedelta(days=365), now, "Asia/Shanghai"),
    }
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(sql)
        timings = []
        for i in range(args.warmup + args.requests):
            started = time.perf_counter()
            await statement.fetchrow(*(values[name] for name in names))
            if i >= args.warmup:
                timings.append((time.perf_counter() - started) * 1000)
        plan = "\n".join(
            row[0] for row in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *(values[name] for name in names))
        )
        return timings, plan
    finally:
        await conn.close()


def summary(timings: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(timings, p), 1) for p in (50, 95, 99)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    database = DATABASE + ("_small" if args.small else "")
    db = prepare_database(recreate=False, database=database)
    ws, figures = asyncio.run(seed(db.dsn, args))
    print(f"data: {figures}")
    key = asyncio.run(issue_key(db.url, ws))
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db.url, "GUANXI_LOG_LEVEL": "WARNING"}
    script = Path(sys.executable).parent / "guanxi"
    argv_serve = [str(script), "serve", "--no-demo", "--no-worker", "--port", str(port)]
    with tempfile.TemporaryDirectory() as workdir:
        with running("service", argv_serve, env, Path(workdir) / "service.log", port, "/healthz") as service:
            http = run_http(service.base_url, key, args)
    floor, plan = asyncio.run(run_floor(db.dsn, ws, args))
    service_figures, floor_figures = summary(http), summary(floor)
    ratio = round(service_figures["p95"] / floor_figures["p95"], 2)
    verdict = "PASS" if service_figures["p95"] < TARGET_P95_MS else "MISS"
    print(f"floor   (asyncpg, prepared) p50/p95/p99 ms: {floor_figures}")
    print(f"service (GET {PATH})   p50/p95/p99 ms: {service_figures}")
    print(f"service/floor p95 ratio: {ratio}; target p95 < {TARGET_P95_MS:.0f} ms: {verdict}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = {
        "machine": machine_facts(),
        "data": figures,
        "service_ms": service_figures,
        "floor_ms": floor_figures,
        "ratio_p95": ratio,
        "verdict": verdict,
        "plan": plan,
    }
    (results / f"loyalty-report-{stamp}.json").write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
