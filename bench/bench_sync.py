#!/usr/bin/env python3
"""Sync bench (issue "Sales", field sales): "a sync page p95 < 100 ms" for a salesperson's phone
reading the change feed (`GET /api/v1/changes`).

Seeds `guanxi_bench_sync` (embedded PostgreSQL, or DATABASE_URL's server) set-based: --customers
customers (seed.py's generator) spread over --salespeople sales users, and for each customer its
`customer.created` event and --visits `interaction.created` events of visits with a location and
check-in/check-out times, in commit order (the events' transaction ids are seeded, as committed long
ago). Seeded data is reused while the sizes match; --reseed forces it. Then, in one run:

  one salesperson syncs from scratch on `guanxi serve --no-demo --no-worker` with a bearer token:
  every page of `GET /api/v1/changes?limit=100` to the empty one, following `next_cursor` (--rounds times);
  p50/p95/p99 per page. Floor: the feed's statement written raw (the same visibility rule and keyset)
  through asyncpg on one connection, walking the same pages; and the service/floor ratio.

Results also go to bench/results/sync-<UTC timestamp>.json, with EXPLAIN (ANALYZE, BUFFERS) of a page.

    .venv/bin/python bench/bench_sync.py            # 100k customers, 500k events, 20 salespeople
    .venv/bin/python bench/bench_sync.py --customers 1000000
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from harness import ROOT, free_port, machine_facts, percentile, running
from seed import WorkspacePlan, ensure_workspace, prepare_database

from app.core.access import Role
from app.core.settings import get_settings
from app.services.identity import tokens

DATABASE = "guanxi_bench_sync"
SLUG = "bench-sync"
TARGET_P95_MS = 100.0
PATH = "/api/v1/changes"
PAGE = 100
# Seeded transaction ids: far below any running transaction's, so every seeded event is committed
# for the feed's horizon; EVENTS_PER_TRANSACTION events share one.
FIRST_TXID = 1000
EVENTS_PER_TRANSACTION = 50

SEED_SQL = [
    "DELETE FROM outbox_events WHERE workspace_id = $1",
    "UPDATE customers SET owner_id = NULL WHERE workspace_id = $1",
    "DELETE FROM users WHERE workspace_id = $1",
    """INSERT INTO users (workspace_id, id, email, email_key, name, role, password_hash, created_at, updated_at)
       SELECT $1, gen_random_uuid(), 'sales' || n || '@bench.test', 'sales' || n || '@bench.test', '销售' || n,
              'sales', '!', now(), now()
       FROM generate_series(1, $2) n""",
    """UPDATE customers c SET owner_id = u.id
       FROM (SELECT id, row_number() OVER (ORDER BY email) - 1 AS n FROM users WHERE workspace_id = $1) u
       WHERE c.workspace_id = $1 AND u.n = abs(hashtext(c.id::text)) % $2""",
    """INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data, published_at, txid)
       SELECT $1, gen_random_uuid(), e.type, e.at, '{"type": "system", "id": null}'::jsonb, e.data, e.at,
              $3 + (row_number() OVER (ORDER BY e.at, e.n, e.customer_id) - 1) / $4
       FROM (
           SELECT c.id AS customer_id, n, c.created_at + make_interval(days => n) AS at,
                  CASE WHEN n = 0 THEN 'customer.created' ELSE 'interaction.created' END AS type,
                  CASE WHEN n = 0 THEN jsonb_build_object('id', c.id, 'code', c.code, 'name', c.name,
                                                          'phones', c.phones, 'owner_id', c.owner_id)
                  ELSE jsonb_build_object(
                      'id', gen_random_uuid(), 'customer_id', c.id, 'user_id', c.owner_id, 'channel', 'visit',
                      'direction', 'outbound', 'subject', '上门拜访',
                      'location', jsonb_build_object('latitude', 31.2 + (hashtext(c.id::text || n) & 255) / 1000.0,
                                                     'longitude', 121.4, 'accuracy_m', 10, 'address', NULL),
                      'checked_in_at', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      'checked_out_at', NULL, 'version', 1)
                  END AS data
           FROM customers c, generate_series(0, $2) n
           WHERE c.workspace_id = $1
       ) e""",
]

# The feed's statement (app/services/events/events.py, list_changes) for a caller who sees its own
# customers, written raw: the customer an event is about, seen by the caller, after the cursor.
FLOOR_SQL = """
SELECT e.workspace_id, e.id, e.type, e.occurred_at, e.actor, e.data, e.txid
FROM outbox_events e
WHERE e.workspace_id = $1
  AND e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
  AND (e.txid, e.id) > ($2, $3)
  AND EXISTS (
      SELECT 1 FROM customers c
      WHERE c.workspace_id = $1 AND c.owner_id = $4
        AND c.id = (CASE WHEN e.type = 'customer.merged' THEN e.data ->> 'survivor_id'
                         WHEN e.type LIKE 'customer.relation_%' THEN e.data ->> 'from_customer_id'
                         WHEN e.type LIKE 'customer.%' THEN e.data ->> 'id'
                         ELSE e.data ->> 'customer_id' END)::uuid)
ORDER BY e.txid, e.id
LIMIT $5"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--visits", type=int, default=4, help="visit events per customer")
    parser.add_argument("--salespeople", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="full syncs measured, after one unmeasured")
    parser.add_argument("--reseed", action="store_true")
    args, _ = parser.parse_known_args(argv)
    return args


async def seed(dsn: str, args: argparse.Namespace) -> tuple[uuid.UUID, uuid.UUID, dict[str, Any]]:
    """The workspace and the salesperson who syncs."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET statement_timeout = 0")
        workspace = await ensure_workspace(conn, WorkspacePlan(SLUG, "外勤同步", args.customers, 11))
        ws = workspace.workspace_id
        events = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE workspace_id = $1", ws)
        people = await conn.fetchval("SELECT count(*) FROM users WHERE workspace_id = $1", ws)
        started = time.perf_counter()
        if (
            args.reseed
            or not workspace.reused
            or events != args.customers * (1 + args.visits)
            or (people != args.salespeople)
        ):
            print(f"seeding {args.customers * (1 + args.visits):,} events", flush=True)
            async with conn.transaction():
                for statement in SEED_SQL:
                    if "$4" in statement:
                        await conn.execute(statement, ws, args.visits, FIRST_TXID, EVENTS_PER_TRANSACTION)
                    elif "$2" in statement:
                        await conn.execute(statement, ws, args.salespeople)
                    else:
                        await conn.execute(statement, ws)
            for table in ("customers", "users", "outbox_events"):
                await conn.execute(f"VACUUM (ANALYZE) {table}")
        user = await conn.fetchval("SELECT id FROM users WHERE workspace_id = $1 ORDER BY email LIMIT 1", ws)
        figures = {
            "customers": args.customers,
            "events": await conn.fetchval("SELECT count(*) FROM outbox_events WHERE workspace_id = $1", ws),
            "salespeople": args.salespeople,
            "the_salespersons_customers": await conn.fetchval(
                "SELECT count(*) FROM customers WHERE workspace_id = $1 AND owner_id = $2", ws, user
            ),
            "seed_seconds": round(time.perf_counter() - started, 1),
        }
        return ws, user, figures
    finally:
        await conn.close()


def run_http(base_url: str, token: str, args: argparse.Namespace) -> tuple[list[float], int]:
    """Per page timings of the measured full syncs; the events one sync reads."""
    timings: list[float] = []
    read = 0
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for round_ in range(args.rounds + 1):
            cursor: str | None = None
            read = 0
            while True:
                params: dict[str, str | int] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
                started = time.perf_counter()
                response = client.get(PATH, params=params)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{PATH}: {response.status_code} {response.text[:300]}")
                if round_ > 0:
                    timings.append(elapsed)
                body = response.json()
                read += len(body["items"])
                # The feed's last page carries a cursor too: an empty page is the end, as for the floor.
                if not body["items"]:
                    break
                cursor = body["next_cursor"]
    return timings, read


async def run_floor(dsn: str, ws: uuid.UUID, user: uuid.UUID, args: argparse.Namespace) -> tuple[list[float], int, str]:
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(FLOOR_SQL)
        timings: list[float] = []
        read = 0
        start = (0, uuid.UUID(int=0))
        for round_ in range(args.rounds + 1):
            after = start
            read = 0
            while True:
                started = time.perf_counter()
                rows = await statement.fetch(ws, after[0], after[1], user, PAGE + 1)
                if round_ > 0:
                    timings.append((time.perf_counter() - started) * 1000)
                page = rows[:PAGE]
                read += len(page)
                if not page:
                    break
                after = (page[-1]["txid"], page[-1]["id"])
        middle = await conn.fetchval(
            "SELECT txid FROM outbox_events WHERE workspace_id = $1 ORDER BY txid OFFSET "
            "(SELECT count(*) / 2 FROM outbox_events WHERE workspace_id = $1) LIMIT 1",
            ws,
        )
        plan_rows = await conn.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS) {FLOOR_SQL}", ws, middle, uuid.UUID(int=0), user, PAGE + 1
        )
        return timings, read, "\n".join(row[0] for row in plan_rows)
    finally:
        await conn.close()


def summary(timings: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(timings, p), 1) for p in (50, 95, 99)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    db = prepare_database(recreate=False, database=DATABASE)
    ws, user, figures = asyncio.run(seed(db.dsn, args))
    print(f"data: {figures}", flush=True)
    token, _ = tokens.issue(
        get_settings(), token_type="access", user_id=user, workspace_id=ws, role=Role.SALES, team_id=None
    )
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db.url, "GUANXI_LOG_LEVEL": "WARNING"}
    script = Path(sys.executable).parent / "guanxi"
    argv_serve = [str(script), "serve", "--no-demo", "--no-worker", "--port", str(port)]
    with tempfile.TemporaryDirectory() as workdir:
        with running("service", argv_serve, env, Path(workdir) / "service.log", port, "/healthz") as service:
            http, http_read = run_http(service.base_url, token, args)
    floor, floor_read, plan = asyncio.run(run_floor(db.dsn, ws, user, args))
    if http_read != floor_read:
        raise SystemExit(f"the service read {http_read} events, the floor {floor_read}")
    service_figures, floor_figures = summary(http), summary(floor)
    ratio = round(service_figures["p95"] / floor_figures["p95"], 2)
    verdict = "PASS" if service_figures["p95"] < TARGET_P95_MS else "MISS"
    print(f"one sync: {http_read:,} events in {len(http) // args.rounds} pages of {PAGE}")
    print(f"floor   (asyncpg, prepared) p50/p95/p99 ms per page: {floor_figures}")
    print(f"service (GET {PATH})       p50/p95/p99 ms per page: {service_figures}")
    print(f"service/floor p95 ratio: {ratio}; target p95 < {TARGET_P95_MS:.0f} ms: {verdict}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = {
        "machine": machine_facts(),
        "data": figures,
        "events_per_sync": http_read,
        "service_ms": service_figures,
        "floor_ms": floor_figures,
        "ratio_p95": ratio,
        "verdict": verdict,
        "plan": plan,
    }
    (results / f"sync-{stamp}.json").write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
