#!/usr/bin/env python3
"""Customers bench: the service against a raw floor app, same data, same load, one run.

Seeds `guanxi_bench` (embedded PostgreSQL, or DATABASE_URL's server) with customers, then drives
the floor (bench/floor_app.py: Starlette + asyncpg, no auth) and the service (`guanxi serve`, one
uvicorn worker) one after the other with wrk, and prints requests/s, p50, p99 and service/floor:

  1. GET /api/v1/customers/{id}: X-API-Key auth, workspace scoping, random seeded ids; target ≥ 0.6 × floor.
  2. GET /api/v1/customers?limit=20: newest page of 20; target ≥ 0.4 × floor.
  3. Search over --search-rows customers (default 1M) with sequential requests, each followed or
     preceded (in turn) by the same SQL run raw through asyncpg (customer_search.search_statement);
     target p95 < 50 ms, two-character queries included.

Seeded data is reused while the row counts match (--reseed rebuilds it). Results also go to
bench/results/customers-<UTC timestamp>.json.

    .venv/bin/python bench/bench_customers.py                      # the full run
    .venv/bin/python bench/bench_customers.py --skip-search --duration 5 --warmup 1
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import floor_app
import httpx
from harness import (
    BENCH_DIR,
    BenchError,
    ServerProcess,
    WrkResult,
    free_port,
    machine_facts,
    percentile,
    require_wrk,
    run_wrk,
    running,
)
from seed import (
    BENCH_DATABASE,
    SURNAMES,
    BenchDatabase,
    SeededWorkspace,
    WorkspacePlan,
    ensure_workspace,
    issue_api_key,
    prepare_database,
    vacuum_analyze,
)
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from app.core.access import Caller, Scope
from app.core.settings import get_settings
from app.services.customers.customer_search import CHINESE_TRIGRAMS_SQL, search_statement

RESULTS_DIR = BENCH_DIR / "results"
BENCH_SLUG = "bench"
OTHER_SLUG = "bench-other"
SEARCH_SLUG = "bench-search"
SEARCH_P95_TARGET_MS = 50.0
SEARCH_KINDS = ("name", "pair", "phone", "phone_full", "email", "surname")
# The groups the p95 target is read for: two-character queries, and the longer ones.
SEARCH_GROUPS: dict[str, Callable[[str], bool]] = {
    "2 chars": lambda q: len(q) == 2,
    "3+ chars": lambda q: len(q) >= 3,
}


@dataclass(frozen=True)
class LoadScenario:
    key: str
    title: str
    floor_path: str
    service_path: str
    random_ids: bool
    target_ratio: float


LOAD_SCENARIOS = (
    LoadScenario(
        "get",
        "GET /api/v1/customers/{id} (X-API-Key, workspace scope, random ids)",
        "/customers/",
        "/api/v1/customers/",
        True,
        0.6,
    ),
    LoadScenario(
        "list",
        "GET /api/v1/customers?limit=20 (newest first)",
        "/customers?limit=20",
        "/api/v1/customers?limit=20",
        False,
        0.4,
    ),
)


@dataclass
class Prepared:
    db: BenchDatabase
    postgres_version: str
    workspaces: dict[str, SeededWorkspace]
    bench_key: str
    search_key: str | None
    ids_file: Path
    other_id: uuid.UUID
    search_queries: list[tuple[str, str]] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="customers in the bench workspace")
    parser.add_argument("--search-rows", type=int, default=1_000_000, help="customers in the search workspace")
    parser.add_argument("--skip-search", action="store_true", help="skip scenario 3 (and its seeding)")
    parser.add_argument("--reseed", action="store_true", help="drop guanxi_bench and seed it again")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per scenario and app")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load before each")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--search-queries", type=int, default=200, help="measured sequential searches")
    parser.add_argument("--search-warmup", type=int, default=20, help="unmeasured searches before those")
    parser.add_argument("--seed", type=int, default=7, help="seed for the search query choice")
    parser.add_argument("--database", default=BENCH_DATABASE, help="the bench database's name")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.search_rows <= 0:
        args.skip_search = True
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    # The per-workspace phone salts (seed.py) leave room for this many rows before numbers repeat.
    if max(args.rows, args.search_rows) > 25_000_000:
        parser.error("--rows and --search-rows must be at most 25,000,000")
    return args


async def prepare(db: BenchDatabase, args: argparse.Namespace, workdir: Path) -> Prepared:
    plans = [
        WorkspacePlan(BENCH_SLUG, "Bench", args.rows, phone_salt=0),
        # A second tenant in the same tables: the service must scope, not just find.
        WorkspacePlan(OTHER_SLUG, "Bench (other tenant)", max(1_000, args.rows // 10), phone_salt=37_000_000),
    ]
    if not args.skip_search:
        plans.append(WorkspacePlan(SEARCH_SLUG, "Bench (search)", args.search_rows, phone_salt=71_000_000))
    conn = await asyncpg.connect(db.dsn)
    try:
        postgres_version = str(await conn.fetchval("SELECT version()"))
        seeded: dict[str, SeededWorkspace] = {}
        for plan in plans:
            print(f"  workspace {plan.slug}: {plan.rows:,} customers ...", end="", flush=True)
            seeded[plan.slug] = ws = await ensure_workspace(conn, plan)
            print(f" {'reused' if ws.reused else 'seeded'} in {ws.seconds:.1f} s")
        if not all(ws.reused for ws in seeded.values()):
            started = time.perf_counter()
            await vacuum_analyze(conn)
            print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
        ids = await conn.fetch(
            "SELECT id::text FROM customers WHERE workspace_id = $1 AND deleted_at IS NULL",
            seeded[BENCH_SLUG].workspace_id,
        )
        ids_file = workdir / "ids.txt"
        ids_file.write_text("".join(f"{row[0]}\n" for row in ids))
        other_id = await conn.fetchval(
            "SELECT id FROM customers WHERE workspace_id = $1 AND deleted_at IS NULL LIMIT 1",
            seeded[OTHER_SLUG].workspace_id,
        )
        queries: list[tuple[str, str]] = []
        if not args.skip_search:
            queries = await search_queries(
                conn, seeded[SEARCH_SLUG].workspace_id, args.search_queries + args.search_warmup, args.seed
            )
    finally:
        await conn.close()
    bench_key = await issue_api_key(db.url, seeded[BENCH_SLUG].workspace_id, "bench")
    search_key = None
    if not args.skip_search:
        search_key = await issue_api_key(db.url, seeded[SEARCH_SLUG].workspace_id, "bench search")
    return Prepared(
        db=db,
        postgres_version=postgres_version,
        workspaces=seeded,
        bench_key=bench_key,
        search_key=search_key,
        ids_file=ids_file,
        other_id=other_id,
        search_queries=queries,
    )


async def search_queries(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, count: int, seed: int
) -> list[tuple[str, str]]:
    """Typical searches, taken from the seeded customers so they find someone: a 3-character name,
    two adjacent characters of a name or company, 6 phone digits, a whole phone number written as
    people write it (`139 1234 5678`), an email's local part and a 1-character surname, in turn."""
    rng = random.Random(seed)
    await conn.execute("SELECT setseed($1)", (seed % 1000) / 1000)
    sample = await conn.fetch(
        "SELECT name, kind, company, emails, phones FROM customers WHERE workspace_id = $1 AND deleted_at IS NULL "
        "ORDER BY random() LIMIT $2",
        workspace_id,
        count * 4,
    )
    names = [r["name"] for r in sample if r["kind"] == "individual" and len(r["name"]) >= 3]
    phones = [p for r in sample for p in r["phones"][:1]]
    # Pairs of Chinese characters: the city prefix and suffixes (有限公司) of the seeded companies too.
    texts = [r["name"] for r in sample] + [r["company"] for r in sample if r["company"]]
    emails = [r["emails"][0] for r in sample if r["emails"]]
    surnames = [s for s, _, weight in SURNAMES for _ in range(weight)]
    queries: list[tuple[str, str]] = []
    for i in range(count):
        kind = SEARCH_KINDS[i % len(SEARCH_KINDS)]
        if kind == "name":
            name = rng.choice(names)
            start = rng.randrange(len(name) - 2)
            text = name[start : start + 3]
        elif kind == "pair":
            chosen = rng.choice(texts)
            start = rng.randrange(len(chosen) - 1)
            text = chosen[start : start + 2]
        elif kind == "phone_full":
            national = rng.choice(phones).removeprefix("+86")
            text = f"{national[:3]} {national[3:7]} {national[7:]}"
        elif kind == "phone":
            digits = rng.choice(phones).removeprefix("+86")
            start = rng.randrange(len(digits) - 5)
            text = digits[start : start + 6]
        elif kind == "email":
            text = rng.choice(emails).split("@", 1)[0]
        else:
            text = rng.choice(surnames)
        queries.append((kind, text))
    return queries


def check_responses(server: ServerProcess, prefix: str, headers: dict[str, str], prepared: Prepared) -> None:
    """One correct answer per route before loading it: a fast wrong answer would win the bench."""
    first_id = prepared.ids_file.read_text().split("\n", 1)[0]
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        got = client.get(f"{prefix}/{first_id}")
        if got.status_code != 200 or got.json().get("id") != first_id:
            raise BenchError(f"{server.name}: GET {prefix}/{first_id} -> {got.status_code} {got.text[:300]}")
        page = client.get(f"{prefix}?limit=20")
        if page.status_code != 200 or len(page.json()["items"]) != 20:
            raise BenchError(f"{server.name}: GET {prefix}?limit=20 -> {page.status_code} {page.text[:300]}")
        other = client.get(f"{prefix}/{prepared.other_id}")
        if other.status_code != 404:
            raise BenchError(f"{server.name}: another workspace's customer -> {other.status_code}, not 404")


def load(
    server: ServerProcess,
    scenario: LoadScenario,
    path: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    ids: Path,
) -> WrkResult:
    common: dict[str, Any] = {
        "ids_file": ids if scenario.random_ids else None,
        "headers": headers,
        "threads": args.threads,
        "connections": args.connections,
    }
    if args.warmup > 0:
        run_wrk(server.base_url, path, seconds=args.warmup, **common)
    result = run_wrk(server.base_url, path, seconds=args.duration, server=server, **common)
    print(
        f"  {server.name:<7} {scenario.key:<5} {result.rps:>9.1f} req/s  p50 {result.p50_ms:.2f} ms  "
        f"p99 {result.p99_ms:.2f} ms  errors {result.errors}"
    )
    return result


def run_search(server: ServerProcess, prepared: Prepared, args: argparse.Namespace) -> dict[str, Any]:
    """Each query through the route and as the same SQL raw (compiled from the service's own
    statement, run on one asyncpg connection), in alternating order so neither always finds the
    pages the other has just read; the two must return the same customers."""
    assert prepared.search_key is not None
    caller = Caller(
        workspace_id=prepared.workspaces[SEARCH_SLUG].workspace_id,
        actor_type="api_key",
        actor_id=None,
        scopes=frozenset({Scope.CUSTOMERS_READ, Scope.CUSTOMERS_PII}),
        visibility="all",
    )
    dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
    samples: list[dict[str, Any]] = []
    errors = 0
    differ: list[str] = []
    headers = {"X-API-Key": prepared.search_key}
    load_before = os.getloadavg()
    with asyncio.Runner() as runner, httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        conn: asyncpg.Connection = runner.run(asyncpg.connect(prepared.db.dsn))
        chinese_trigrams = bool(runner.run(conn.fetchval(CHINESE_TRIGRAMS_SQL)))

        def service(text: str) -> tuple[float, list[str] | None]:
            started = time.perf_counter()
            got = client.get("/api/v1/customers", params={"q": text, "limit": 20})
            ms = (time.perf_counter() - started) * 1000
            return ms, [c["id"] for c in got.json()["items"]] if got.status_code == 200 else None

        def raw(text: str) -> tuple[float, list[str]]:
            compiled = search_statement(caller, text, limit=20, chinese_trigrams=chinese_trigrams).compile(
                dialect=dialect
            )
            params = [compiled.params[name] for name in compiled.positiontup or []]
            started = time.perf_counter()
            rows = runner.run(conn.fetch(str(compiled), *params))
            ms = (time.perf_counter() - started) * 1000
            return ms, [str(row["id"]) for row in rows[:20]]

        try:
            for n, (kind, text) in enumerate(prepared.search_queries):
                if n % 2:
                    raw_ms, raw_ids = raw(text)
                    service_ms, service_ids = service(text)
                else:
                    service_ms, service_ids = service(text)
                    raw_ms, raw_ids = raw(text)
                if n < args.search_warmup:
                    continue
                if service_ids is None:
                    errors += 1
                    continue
                if service_ids != raw_ids:
                    differ.append(text)
                samples.append(
                    {
                        "kind": kind,
                        "q": text,
                        "ms": round(service_ms, 3),
                        "raw_ms": round(raw_ms, 3),
                        "hits": len(raw_ids),
                    }
                )
        finally:
            runner.run(conn.close())
    load_after = os.getloadavg()
    if differ:
        raise BenchError(f"the route and the raw SQL found different customers for {differ[:5]}")
    groups: dict[str, list[dict[str, Any]]] = {
        **{kind: [s for s in samples if s["kind"] == kind] for kind in SEARCH_KINDS},
        **{name: [s for s in samples if test(s["q"])] for name, test in SEARCH_GROUPS.items()},
        "all": samples,
    }
    by_kind = {name: _search_figures(chosen, name in SEARCH_KINDS) for name, chosen in groups.items()}
    p95 = by_kind["all"]["p95_ms"]
    slowest = sorted(samples, key=lambda s: s["ms"], reverse=True)[:5]
    return {
        "rows": prepared.workspaces[SEARCH_SLUG].rows,
        "queries": len(samples),
        "errors": errors,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "by_kind": by_kind,
        "slowest": slowest,
        "target_p95_ms": SEARCH_P95_TARGET_MS,
        "verdict": "PASS" if errors == 0 and p95 < SEARCH_P95_TARGET_MS else "MISS",
    }


def _search_figures(chosen: list[dict[str, Any]], examples: bool) -> dict[str, Any]:
    times = [s["ms"] for s in chosen]
    raw = [s["raw_ms"] for s in chosen]
    return {
        "n": len(chosen),
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "p99_ms": round(percentile(times, 99), 2),
        "max_ms": round(max(times), 2) if times else None,
        "raw_p50_ms": round(percentile(raw, 50), 2),
        "raw_p95_ms": round(percentile(raw, 95), 2),
        "mean_hits": round(sum(s["hits"] for s in chosen) / len(chosen), 1) if chosen else 0,
        "examples": [s["q"] for s in chosen[:3]] if examples else [],
    }


def service_argv(port: int) -> list[str]:
    script = Path(sys.executable).parent / "guanxi"
    if script.exists():
        return [str(script), "serve", "--no-demo", "--port", str(port)]
    return [sys.executable, "-c", "from app.cli import main; main()", "serve", "--no-demo", "--port", str(port)]


def floor_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "floor_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def print_load_table(scenario: LoadScenario, floor: WrkResult, service: WrkResult, args: argparse.Namespace) -> str:
    ratio = service.rps / floor.rps if floor.rps else 0.0
    verdict = "PASS" if ratio >= scenario.target_ratio and service.errors == 0 and floor.errors == 0 else "MISS"
    print()
    print(f"{scenario.title}")
    settings = f"{args.threads} threads, {args.connections} connections, {args.duration:g} s"
    print(f"  wrk {settings} (+{args.warmup:g} s warm-up)")
    print(
        f"  {'':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'app CPU µs/req':>15}"
        f" {'machine busy/steal %':>21}"
    )
    for name, r in (("floor", floor), ("service", service)):
        cpu = f"{r.server_cpu_us_per_request:.0f}" if r.server_cpu_us_per_request is not None else "-"
        machine = f"{r.machine_busy_pct}/{r.machine_steal_pct}"
        print(f"  {name:<8} {r.rps:>10.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>7} {cpu:>15} {machine:>21}")
    print(f"  ratio service/floor = {ratio:.2f}   target ≥ {scenario.target_ratio:.2f}   {verdict}")
    return verdict


def print_search_table(search: dict[str, Any]) -> None:
    print()
    print(f"Search over {search['rows']:,} customers ({search['queries']} sequential queries, limit=20)")
    print(f"  load average before/after: {search['load_average_before_after']}")
    print(
        f"  {'kind':<10} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'raw p50':>8} "
        f"{'raw p95':>8} {'p95 ratio':>9} {'hits':>5}  examples"
    )
    for kind, s in search["by_kind"].items():
        ratio = s["p95_ms"] / s["raw_p95_ms"] if s["raw_p95_ms"] else 0.0
        print(
            f"  {kind:<10} {s['n']:>4} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} {s['p99_ms']:>8.2f} "
            f"{s['max_ms'] or 0:>8.2f} {s['raw_p50_ms']:>8.2f} {s['raw_p95_ms']:>8.2f} {ratio:>9.2f} "
            f"{s['mean_hits']:>5}  {' '.join(s['examples'])}"
        )
    p95 = search["by_kind"]["all"]["p95_ms"]
    print(f"  p95 {p95:.2f} ms   target < {SEARCH_P95_TARGET_MS:g} ms   {search['verdict']}")
    if search["errors"]:
        print(f"  {search['errors']} searches failed")


def run(args: argparse.Namespace, workdir: Path) -> int:
    started = datetime.now(UTC)
    print(f"guanxi customers bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    db = prepare_database(recreate=args.reseed, database=args.database)
    print(f"database {db.server}: {args.database}")
    seed_started = time.perf_counter()
    prepared = asyncio.run(prepare(db, args, workdir))
    seed_seconds = time.perf_counter() - seed_started

    bench_ws = prepared.workspaces[BENCH_SLUG]
    results: dict[str, dict[str, WrkResult]] = {s.key: {} for s in LOAD_SCENARIOS}
    search: dict[str, Any] | None = None

    floor_port = free_port()
    floor_env = {
        **_base_env(),
        "FLOOR_DSN": db.dsn,
        "FLOOR_WORKSPACE_ID": str(bench_ws.workspace_id),
    }
    print(f"floor on :{floor_port}")
    with running("floor", floor_argv(floor_port), floor_env, workdir / "floor.log", floor_port, "/healthz") as floor:
        check_responses(floor, "/customers", {}, prepared)
        for scenario in LOAD_SCENARIOS:
            path = scenario.floor_path
            results[scenario.key]["floor"] = load(floor, scenario, path, {}, args, prepared.ids_file)

    service_port = free_port()
    # One API key sends every request: the per-caller rate limit (6,000 a minute) would answer most
    # of them 429, which wrk counts as errors and which cost the service next to nothing.
    service_env = {**_base_env(), "DATABASE_URL": db.url, "GUANXI_RATE_LIMIT_PER_MINUTE": "100000000"}
    headers = {"X-API-Key": prepared.bench_key}
    print(f"service on :{service_port}")
    with running(
        "service", service_argv(service_port), service_env, workdir / "service.log", service_port, "/healthz"
    ) as service:
        check_responses(service, "/api/v1/customers", headers, prepared)
        for scenario in LOAD_SCENARIOS:
            path = scenario.service_path
            results[scenario.key]["service"] = load(service, scenario, path, headers, args, prepared.ids_file)
        if not args.skip_search:
            print("  service search ...")
            search = run_search(service, prepared, args)

    verdicts: list[str] = []
    scenarios_out: list[dict[str, Any]] = []
    for scenario in LOAD_SCENARIOS:
        floor_r, service_r = results[scenario.key]["floor"], results[scenario.key]["service"]
        verdict = print_load_table(scenario, floor_r, service_r, args)
        verdicts.append(verdict)
        scenarios_out.append(
            {
                "key": scenario.key,
                "title": scenario.title,
                "floor": floor_r.as_dict(),
                "service": service_r.as_dict(),
                "ratio": round(service_r.rps / floor_r.rps, 3) if floor_r.rps else None,
                "target_ratio": scenario.target_ratio,
                "verdict": verdict,
            }
        )
    if search is not None:
        print_search_table(search)
        verdicts.append(search["verdict"])

    out = {
        "bench": "customers",
        "date": started.isoformat(),
        "machine": machine_facts(),
        "postgresql": prepared.postgres_version,
        "database": db.server,
        "settings": {
            "rows": args.rows,
            "search_rows": None if args.skip_search else args.search_rows,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "search_queries": args.search_queries,
            # What the two apps ran with: the service's environment sets no pool size.
            "service_pool_sizes": {
                "read_lane": get_settings().read_lane_pool_size,
                "reads": get_settings().db_pool_size,
            },
            "floor_pool_size": floor_app.POOL_SIZE,
        },
        "seeding": {
            "seconds_total": round(seed_seconds, 1),
            "workspaces": {
                slug: {"rows": ws.rows, "reused": ws.reused, "seconds": round(ws.seconds, 1)}
                for slug, ws in prepared.workspaces.items()
            },
        },
        "scenarios": scenarios_out,
        "search": search,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    results_path = RESULTS_DIR / f"customers-{started:%Y%m%dT%H%M%SZ}.json"
    results_path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print()
    print(f"seeding/preparation {seed_seconds:.1f} s; results in {results_path.relative_to(BENCH_DIR.parent)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # The service must use the bench database, never whatever the caller's shell points at.
    env.pop("DATABASE_URL", None)
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_wrk()
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="guanxi-bench-"))
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
