#!/usr/bin/env python3
"""Timeline and follow-up plans bench (issue "Interactions, tasks and the customer timeline").

Seeds `guanxi_bench_timeline` (embedded PostgreSQL, or DATABASE_URL's server): --timeline-customers
customers (100k; seed.py's generator) with 0-8 interactions, 0-3 orders and a `created` audit row
each, and one "heavy" customer with --heavy-events events (5,000: 60% interactions, 20% orders,
20% audit rows). Reused while the sizes match; --reseed rebuilds. Measures:

  1. `timeline.timeline(session, ctx, heavy customer, types=[], limit=20, cursor=None)` (the first
     page, as GET /customers/{id}/timeline serves it: a session, the visibility check, one UNION ALL),
     --samples times sequentially: target p95 < 30 ms. Floor: the same UNION ALL text raw through
     asyncpg on one connection.
  2. `follow_ups.run_plans` with one active every-30-days plan whose audience is every customer
     (one task per live customer) + COMMIT: target < 30 s. Floor: the plan's own INSERT ... SELECT
     text with literal parameters, raw through psql, for a second (inactive) plan. Both start with no
     task of their plan; a re-run (nothing to create) is timed too.

Results also go to bench/results/timeline-<UTC timestamp>.json. Flags meant for other benches are ignored.

    .venv/bin/python bench/bench_timeline.py
    .venv/bin/python bench/bench_timeline.py --small
"""

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from harness import ROOT, BenchError, machine_facts
from seed import WorkspacePlan, ensure_workspace, prepare_database
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from value_seed import (
    RESULTS_DIR,
    configure_environment,
    inline_params,
    now_utc,
    run_psql,
    settle,
    summary,
    vacuum_analyze,
    verdict,
    wait_for_quiet_machine,
)

TIMELINE_DATABASE = "guanxi_bench_timeline"
SLUG = "bench-timeline"
SEED_VERSION = 2
TIMELINE_P95_TARGET_MS = 30.0
PLANS_TARGET_S = 30.0
PLAN_PREFIX = "bench:"
CHANNELS = ["phone", "email", "sms", "wechat", "meeting", "visit", "chat", "other"]
OUTCOMES = ["reached", "no_answer", "interested", "not_interested", "issue_raised", "order_placed"]

INTERACTIONS_SQL = """
INSERT INTO interactions (workspace_id, id, customer_id, user_id, channel, direction, occurred_at, duration_seconds,
                          participants, subject, content, outcome, next_step, attachments, source, external_id,
                          created_at, updated_at, deleted_at, version)
SELECT $1, {id_expr}, t.customer_id, NULL, ($3::text[])[1 + t.h % 8],
       CASE WHEN t.h % 3 = 0 THEN 'inbound' ELSE 'outbound' END, t.at,
       CASE WHEN ($3::text[])[1 + t.h % 8] IN ('phone', 'meeting', 'visit') THEN 60 + t.h % 1800 END,
       '{{}}'::jsonb, '第' || t.j || '次联系', '客户询问了价格和交货期，约定下周再跟进。',
       ($4::text[])[1 + (t.h / 8) % 6], NULL, '{{}}'::jsonb, 'api', NULL, t.at, t.at,
       CASE WHEN t.h % 100 = 0 AND t.customer_id <> $2 THEN t.at END, 1
FROM (
    SELECT c.id AS customer_id, j,
           now() - make_interval(secs => 63072000 * ((hashint8extended(c.ci * 8192 + j, 31) & 2147483647)::float8
                                                     / 2147483648::float8)) AS at,
           hashint8extended(c.ci * 8192 + j, 32) & 2147483647 AS h
    FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS ci FROM customers WHERE workspace_id = $1) c,
         generate_series(1, CASE WHEN c.id = $2 THEN $5
                                 ELSE (hashint8extended(c.ci, 30) & 2147483647) % 9 END::int) AS j
) t
ORDER BY t.at
"""
ORDERS_SQL = """
INSERT INTO orders (workspace_id, id, customer_id, source, external_id, ordered_at, status, currency,
                    total_amount, refunded_amount, channel, store, created_at, updated_at, version)
SELECT $1, {id_expr}, t.customer_id, 'bench', t.ci || '-' || t.j, t.at,
       CASE WHEN t.h % 20 = 0 THEN 'refunded' ELSE 'paid' END, 'CNY', 10 + t.h % 3000,
       CASE WHEN t.h % 20 = 0 THEN 10 + t.h % 3000 ELSE 0 END, 'online', NULL, t.at, t.at, 1
FROM (
    SELECT c.id AS customer_id, c.ci, j,
           now() - make_interval(secs => 63072000 * ((hashint8extended(c.ci * 8192 + j, 41) & 2147483647)::float8
                                                     / 2147483648::float8)) AS at,
           hashint8extended(c.ci * 8192 + j, 42) & 2147483647 AS h
    FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS ci FROM customers WHERE workspace_id = $1) c,
         generate_series(1, CASE WHEN c.id = $2 THEN $3
                                 ELSE (hashint8extended(c.ci, 40) & 2147483647) % 4 END::int) AS j
) t
ORDER BY t.at
"""
AUDIT_SQL = """
INSERT INTO audit_log (workspace_id, id, entity_type, entity_id, action, actor_type, actor_id, changes, occurred_at)
SELECT $1, {id_expr}, 'customer', t.customer_id, t.action, 'user', NULL, t.changes, t.at
FROM (
    SELECT c.id AS customer_id, 'created' AS action, '{{}}'::jsonb AS changes, c.created_at AS at
    FROM customers c WHERE c.workspace_id = $1
    UNION ALL
    SELECT $2, 'updated',
           jsonb_build_object('notes', jsonb_build_object('before', '备注 ' || (j - 1), 'after', '备注 ' || j)),
           now() - make_interval(secs => 63072000 * ((hashint8extended(j, 51) & 2147483647)::float8
                                                     / 2147483648::float8))
    FROM generate_series(1, $3) AS j
) t
ORDER BY t.at
"""
SECONDARY_INDEXES_SQL = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename IN ('interactions', 'orders', 'audit_log')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
ORDER BY i.indexname
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeline-customers", type=int, default=None, help="customers (default 100,000)")
    parser.add_argument("--heavy-events", type=int, default=5_000, help="events of the heavy customer")
    parser.add_argument("--small", action="store_true", help="quick run: 20,000 customers")
    parser.add_argument("--samples", type=int, default=200, help="measured timeline pages (service and floor each)")
    parser.add_argument("--reseed", action="store_true", help=f"drop {TIMELINE_DATABASE} and seed it again")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for other benches before timing")
    parser.add_argument("--statement-timeout-ms", type=int, default=600_000, help="GUANXI_STATEMENT_TIMEOUT_MS")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args, _unknown = parser.parse_known_args(argv)
    args.timeline_customers = args.timeline_customers or (20_000 if args.small else 100_000)
    if args.timeline_customers < 1_000 or args.heavy_events < 10:
        parser.error("--timeline-customers must be at least 1,000 and --heavy-events at least 10")
    return args


def marker(args: argparse.Namespace) -> str:
    return f"Bench timeline v{SEED_VERSION}: {args.timeline_customers} customers, heavy {args.heavy_events} events"


async def find(dsn: str, args: argparse.Namespace) -> tuple[uuid.UUID, uuid.UUID] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT id, name FROM workspaces WHERE slug = $1", SLUG)
        if row is None or row["name"] != marker(args):
            return None
        heavy = await conn.fetchval(
            "SELECT customer_id FROM interactions WHERE workspace_id = $1 GROUP BY customer_id "
            "ORDER BY count(*) DESC LIMIT 1",
            row["id"],
        )
        return (row["id"], heavy) if heavy else None
    finally:
        await conn.close()


async def seed(dsn: str, args: argparse.Namespace) -> tuple[uuid.UUID, uuid.UUID, dict[str, float]]:
    steps: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        ws = await ensure_workspace(conn, WorkspacePlan(SLUG, "Bench timeline (seeding)", args.timeline_customers, 0))
        steps["customers"] = round(time.perf_counter() - started, 1)
        uuid7 = int(await conn.fetchval("SELECT current_setting('server_version_num')::int")) >= 180000
        id_expr = "uuidv7(t.at - now())" if uuid7 else "gen_random_uuid()"
        heavy = await conn.fetchval(
            "SELECT id FROM customers WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY created_at LIMIT 1 "
            "OFFSET $2",
            ws.workspace_id,
            args.timeline_customers // 2,
        )
        interactions = round(args.heavy_events * 0.6)
        orders = round(args.heavy_events * 0.2)
        audits = args.heavy_events - interactions - orders - 1  # plus its `created` row
        async with conn.transaction():
            indexes = list(await conn.fetch(SECONDARY_INDEXES_SQL))
            for index in indexes:
                await conn.execute(f'DROP INDEX "{index["indexname"]}"')
            for name, sql, params in (
                ("interactions", INTERACTIONS_SQL, (heavy, CHANNELS, OUTCOMES, interactions)),
                ("orders", ORDERS_SQL, (heavy, orders)),
                ("audit rows", AUDIT_SQL, (heavy, audits)),
            ):
                started = time.perf_counter()
                status = await conn.execute(sql.format(id_expr=id_expr), ws.workspace_id, *params)
                steps[name] = round(time.perf_counter() - started, 1)
                print(f"  {name}: {int(status.split()[-1]):,} in {steps[name]:.1f} s")
            started = time.perf_counter()
            for index in indexes:
                await conn.execute(index["indexdef"])
            steps["indexes"] = round(time.perf_counter() - started, 1)
            await conn.execute("UPDATE workspaces SET name = $2 WHERE id = $1", ws.workspace_id, marker(args))
        started = time.perf_counter()
        await vacuum_analyze(conn, ("customers", "customer_identities", "interactions", "orders", "audit_log", "tasks"))
        steps["vacuum analyze"] = round(time.perf_counter() - started, 1)
        return ws.workspace_id, heavy, steps
    finally:
        await conn.close()


def timeline_sql() -> tuple[str, list[str]]:
    """The statement timeline.timeline() builds for the first page of every type, compiled for asyncpg."""
    from app.services.customers import timeline

    branches = []
    for name in timeline.TYPES:
        alias, _column = timeline._ALIASES[name]
        branches.append("(" + timeline.SOURCES[name].format(**{f"after_{alias}": ""}) + ")")
    sql = (
        "SELECT at, id, type, data FROM ("
        + " UNION ALL ".join(branches)
        + ") stream ORDER BY at DESC, id DESC LIMIT :limit"
    )
    compiled = text(sql).compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    return compiled.string, list(compiled.positiontup or [])


async def run_timeline(
    args: argparse.Namespace, sessions: Any, conn: asyncpg.Connection, ws: uuid.UUID, heavy: uuid.UUID
) -> dict[str, Any]:
    from app.core.access import system_caller
    from app.services.customers import timeline

    ctx = system_caller(ws)
    sql, names = timeline_sql()
    values = {"ws": ws, "customer_id": heavy, "limit": 21}
    floor_times: list[float] = []
    service_times: list[float] = []
    warmup = 10
    for n in range(args.samples + warmup):
        started = time.perf_counter()
        rows = await conn.fetch(sql, *[values[k] for k in names])
        if n >= warmup:
            floor_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with sessions() as session:
            items, _cursor = await timeline.timeline(session, ctx, heavy, types=[], limit=20, cursor=None)
        if n >= warmup:
            service_times.append(time.perf_counter() - started)
        if [i["id"] for i in items] != [r["id"] for r in rows[:20]]:
            raise BenchError("service and floor timelines differ")
    events = await conn.fetchval(
        "SELECT (SELECT count(*) FROM interactions WHERE workspace_id = $1 AND customer_id = $2 AND deleted_at IS NULL)"
        " + (SELECT count(*) FROM orders WHERE workspace_id = $1 AND customer_id = $2)"
        " + (SELECT count(*) FROM audit_log WHERE workspace_id = $1 AND entity_type = 'customer' AND entity_id = $2)",
        ws,
        heavy,
    )
    service, floor = summary(service_times), summary(floor_times)
    return {
        "heavy_customer_events": events,
        "service": service,
        "floor": floor,
        "ratio_p95": round(service["p95_ms"] / floor["p95_ms"], 3) if floor["p95_ms"] else None,
        "verdict": verdict(service["p95_ms"] < TIMELINE_P95_TARGET_MS),
    }


async def run_plans(db: Any, sessions: Any, conn: asyncpg.Connection, ws: uuid.UUID) -> dict[str, Any]:
    """Plans S1 (active), S2 (activated later) and F (the floor's, never active). In order:
    empty tasks table: F raw, then (emptied again) run_plans creating S1's tasks; re-run (none due);
    populated table (S1's tasks): F raw again, then run_plans with S2 active too; F re-run."""
    from app.core import clock
    from app.core.access import system_caller
    from app.schemas.interaction import PlanIn
    from app.services.engagement import follow_ups

    ctx = system_caller(ws)

    async def reset(*, analyze: bool = True) -> None:
        await conn.execute("DELETE FROM tasks WHERE workspace_id = $1 AND origin = 'plan'", ws)
        await vacuum_analyze(conn, ("tasks", "follow_up_plans") if analyze else ())
        await settle(conn)

    await reset()
    await conn.execute("DELETE FROM follow_up_plans WHERE workspace_id = $1", ws)
    plans = {}
    async with sessions() as session:
        for key, active in (("S1", True), ("S2", False), ("F", False)):
            plans[key] = await follow_ups.create_plan(
                session,
                ctx,
                PlanIn(
                    name=f"{PLAN_PREFIX} monthly ({key})",
                    rule="every_n_days",
                    days=30,
                    task_title="月度回访",
                    active=active,
                ),
            )
        await session.commit()
    floor_plan = plans["F"]
    floor_sql = follow_ups._plan_sql(floor_plan)

    def floor_run() -> dict[str, Any]:
        params = {
            "ws": ws,
            "now": clock.now(),
            "plan_id": floor_plan.id,
            "days": floor_plan.days,
            "title": floor_plan.task_title,
            "kind": floor_plan.task_kind,
            "priority": floor_plan.task_priority,
            **floor_plan.audience,
        }
        run = run_psql(db, [inline_params(floor_sql, params)])
        created = int(run.statuses[0].split()[-1]) if run.statuses else -1
        return {"total_s": round(run.seconds, 3), "created": created}

    async def service_run() -> dict[str, Any]:
        async with sessions() as session:
            started = time.perf_counter()
            created = await follow_ups.run_plans(session, ctx)
            await session.commit()
            return {"total_s": round(time.perf_counter() - started, 3), "created": created}

    def show(title: str, result: dict[str, Any]) -> dict[str, Any]:
        print(f"  run_plans {title}: {result['total_s']:.2f} s ({result['created']:,} tasks)", flush=True)
        return result

    out: dict[str, Any] = {"empty_table": {}, "re_run": {}, "populated_table": {}}
    out["empty_table"]["floor"] = show("empty tasks table, floor (psql)", await asyncio.to_thread(floor_run))
    await reset()
    out["empty_table"]["service"] = show("empty tasks table, service", await service_run())
    await settle(conn)
    out["re_run"]["service"] = show("re-run, service", await service_run())
    out["populated_table"]["floor"] = show("populated table, floor (psql)", await asyncio.to_thread(floor_run))
    await conn.execute(
        "UPDATE follow_up_plans SET active = true WHERE workspace_id = $1 AND id = $2", ws, plans["S2"].id
    )
    out["populated_table"]["service"] = show("populated table, service (S2 new, S1 re-run)", await service_run())
    out["re_run"]["floor"] = show("re-run, floor (psql)", await asyncio.to_thread(floor_run))
    worst = max(r["service"]["total_s"] for r in out.values())
    out["verdict"] = verdict(worst < PLANS_TARGET_S)
    return out


async def run(args: argparse.Namespace, db: Any, ws: uuid.UUID, heavy: uuid.UUID) -> dict[str, Any]:
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings

    engine = create_engine(db.url, get_settings())
    sessions = create_sessionmaker(engine)
    conn = await asyncpg.connect(db.dsn)
    try:
        waited = await asyncio.to_thread(wait_for_quiet_machine, args)
        await settle(conn)
        timeline_out = await run_timeline(args, sessions, conn, ws, heavy)
        plans_out = await run_plans(db, sessions, conn, ws)
    finally:
        await conn.close()
        await engine.dispose()
    return {"waited_for_other_benches_s": round(waited, 1), "timeline": timeline_out, "plans": plans_out}


def print_tables(out: dict[str, Any], customers: int) -> list[str]:
    t = out["timeline"]
    print()
    print(f"Timeline first page (limit 20, all types) of a customer with {t['heavy_customer_events']:,} events")
    print(f"  {'':<8} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in ("floor", "service"):
        s = t[name]
        print(
            f"  {name:<8} {s['n']:>4} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}"
        )
    print(
        f"  service p95 {t['service']['p95_ms']:.2f} ms   target < {TIMELINE_P95_TARGET_MS:g} ms   {t['verdict']}"
        f"   (service/floor p95 = {t['ratio_p95']:.2f})"
    )
    p = out["plans"]
    print()
    print(f"Follow-up plan over {customers:,} customers (every 30 days, audience: everyone): run_plans + COMMIT")
    print(f"  {'':<22} {'service s':>10} {'floor s':>9} {'ratio':>6} {'tasks':>9}")
    for key, title in (
        ("empty_table", "first, empty table"),
        ("populated_table", "first, table populated"),
        ("re_run", "re-run (none due)"),
    ):
        s, f = p[key]["service"], p[key]["floor"]
        ratio = s["total_s"] / f["total_s"] if f["total_s"] else float("nan")
        print(f"  {title:<22} {s['total_s']:>10.2f} {f['total_s']:>9.2f} {ratio:>6.2f} {s['created']:>9,}")
    print(f"  target < {PLANS_TARGET_S:g} s (worst case)   {p['verdict']}")
    return [t["verdict"], p["verdict"]]


def main(argv: list[str] | None = None) -> int:
    os.chdir(ROOT)  # the embedded server lives in ./.data
    args = parse_args(argv)
    configure_environment(args)
    started = now_utc()
    print(f"guanxi timeline bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    try:
        db = prepare_database(recreate=args.reseed, database=TIMELINE_DATABASE)
        seed_started = time.perf_counter()
        found = asyncio.run(find(db.dsn, args))
        steps: dict[str, float] = {}
        if found is None:
            if not args.reseed:
                db = prepare_database(recreate=True, database=TIMELINE_DATABASE)
            ws, heavy, steps = asyncio.run(seed(db.dsn, args))
        else:
            ws, heavy = found
        seed_seconds = time.perf_counter() - seed_started
        print(
            f"data: {args.timeline_customers:,} customers ({'reused' if found else 'seeded'} in {seed_seconds:.1f} s)"
        )
        facts = machine_facts()
        print(f"machine: {facts['uname']}; nproc {facts['nproc']}")
        print(f"GUANXI_STATEMENT_TIMEOUT_MS={args.statement_timeout_ms} (API default 5000)")
        out = asyncio.run(run(args, db, ws, heavy))
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 2
    verdicts = print_tables(out, args.timeline_customers)
    version = asyncio.run(_version(db.dsn))
    result = {
        "bench": "timeline",
        "date": started.isoformat(),
        "machine": facts,
        "postgresql": version,
        "database": f"{db.server}: {TIMELINE_DATABASE}",
        "environment": {"GUANXI_STATEMENT_TIMEOUT_MS": os.environ.get("GUANXI_STATEMENT_TIMEOUT_MS")},
        "data": {
            "customers": args.timeline_customers,
            "heavy_events": args.heavy_events,
            "reused": found is not None,
            "seconds": round(seed_seconds, 1),
            "steps": steps,
        },
        "targets": {"timeline_p95_ms": TIMELINE_P95_TARGET_MS, "plans_s": PLANS_TARGET_S},
        **out,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"timeline-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"\nfinished {datetime.now(UTC):%H:%M:%S} UTC; results in {path.relative_to(ROOT)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


async def _version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
