#!/usr/bin/env python3
"""Load bench: the service under a mixed load of reads and writes, then overloaded.

Seeds `guanxi_load` (embedded PostgreSQL, or DATABASE_URL's server) with a workspace of customers,
starts the service (`guanxi serve --no-worker --workers 2`: two API processes, as the image runs
them; `--workers`) and drives it with wrk (bench/wrk_mixed.lua): each connection is a client that sends its next
request as soon as the last one is answered, 80 % reads (half a customer by id, half the newest page
of 20) and 20 % creates with an Idempotency-Key. wrk, not a Python client, because on 2 cores the
generator's own CPU is taken from the service: httpx costs milliseconds of CPU per request.

  1. mixed: --clients (50) for --duration (120 s) after --warmup; targets: no 5xx, p95 ≤ 200 ms,
     p99 ≤ 500 ms. The service's own latency histogram is read before and after, to tell its time
     from the queueing in front of it.
  2. overload: the mixed clients for --overload-before seconds, --overload-clients (300) in all for
     --overload-duration, then the mixed clients alone for --overload-after; the surge clients never
     back off. A probe (one httpx client) reads a customer every 50 ms throughout. Targets: no 500
     (the excess is shed with 429 or 503) and no request left unanswered, and the probe's latency
     back to normal within 10 s of the surge ending: the first second from which the p95 of all it
     got until the end is ≤ the p95 target or 1.5 × its own p95 before the surge, whichever is
     larger (its p95 for each second is printed too).

The 2 cores are shared by the service, PostgreSQL, wrk and whatever else runs on the machine: each
run records `uptime`'s load averages before and after, machine busy/steal, and the CPU the service
and wrk used. Results also go to bench/results/load-<UTC timestamp>.json. Needs wrk (Debian: wrk).

    .venv/bin/python bench/bench_load.py                    # the full run (about 5 minutes)
    .venv/bin/python bench/bench_load.py --duration 20 --overload-duration 10
"""

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from harness import (
    BENCH_DIR,
    BenchError,
    ServerProcess,
    busy_and_steal,
    free_port,
    machine_cpu,
    machine_facts,
    percentile,
    require_wrk,
    running,
)
from prometheus_client.parser import text_string_to_metric_families
from seed import BenchDatabase, WorkspacePlan, ensure_workspace, prepare_database, vacuum_analyze

from app.core.access import Scope
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.services.identity import api_keys

RESULTS_DIR = BENCH_DIR / "results"
DATABASE = "guanxi_load"
SLUG = "bench-load"
P95_TARGET_MS = 200.0
P99_TARGET_MS = 500.0
RECOVERY_TARGET_S = 10.0
WRITE_SHARE = 0.2
WRK_SCRIPT = BENCH_DIR / "wrk_mixed.lua"
PROBE_PAUSE_S = 0.05


@dataclass(frozen=True)
class Sample:
    """One answer to the probe: a single client that sends a read every PROBE_PAUSE_S beside the
    load and times each, so latency can be followed second by second."""

    started: float  # monotonic
    ms: float
    status: int  # 0: no HTTP answer (transport error or the client's timeout)


@dataclass
class Machine:
    """What else the machine was doing: load averages and CPU use over a run."""

    uptime_before: str
    uptime_after: str = ""
    busy_pct: float | None = None
    steal_pct: float | None = None
    service_cpu_pct: float | None = None  # of one core, the service process
    wrk_cpu_pct: float | None = None  # of one core, the load generator (wrk)


@dataclass
class WrkMixed:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]  # wrk's socket errors and timeouts (no HTTP answer)
    statuses: dict[str, int]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))

    @property
    def unanswered(self) -> int:
        return sum(self.errors.values())

    def count(self, *statuses: str) -> int:
        return sum(self.statuses.get(status, 0) for status in statuses)


def uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or " ".join(f"{x:.2f}" for x in os.getloadavg())


async def wrk_mixed(
    service: ServerProcess, key: str, ids_file: Path, *, connections: int, seconds: float, tag: str
) -> WrkMixed:
    argv = [
        require_wrk(),
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-H",
        f"X-API-Key: {key}",
        "-s",
        str(WRK_SCRIPT),
        service.base_url,
        "--",
        str(ids_file),
        str(WRITE_SHARE),
        tag,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=seconds + 90)
    out = stdout.decode()
    line = next((x for x in out.splitlines() if x.startswith("WRK_MIXED ")), None)
    if process.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({process.returncode}):\n{out}\n{stderr.decode()}")
    values = {k: int(v) for k, v in (pair.split("=", 1) for pair in line.split()[1:])}
    duration = values["duration_us"] / 1e6
    return WrkMixed(
        requests=values["requests"],
        seconds=round(duration, 1),
        rps=round(values["requests"] / duration, 1) if duration else 0.0,
        p50_ms=values["p50_us"] / 1000,
        p95_ms=values["p95_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        max_ms=values["max_us"] / 1000,
        errors={k: values[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts") if values[k]},
        statuses=dict(sorted((k.removeprefix("status_"), v) for k, v in values.items() if k.startswith("status_"))),
    )


async def probe(service: ServerProcess, key: str, ids: list[str], until: float, samples: list[Sample]) -> None:
    rng = random.Random(5)
    async with httpx.AsyncClient(
        base_url=service.base_url, headers={"X-API-Key": key}, timeout=30.0, trust_env=False
    ) as http:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                status = (await http.get(f"/api/v1/customers/{rng.choice(ids)}")).status_code
            except httpx.TransportError:
                status = 0
            samples.append(Sample(started, (time.monotonic() - started) * 1000, status))
            await asyncio.sleep(PROBE_PAUSE_S)


OPERATIONS_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def server_counts(base_url: str) -> dict[str, float]:
    """The service's own counters: its latency histogram (guanxi_request_seconds) summed over the API
    routes, as cumulative counts by upper bound ("le=0.2", ...) in all and per method and route
    ("POST /customers le=0.2"), and the requests it shed. What the service measured from a request's
    arrival in the application to its answer, without the queueing in front of it (sockets, the
    event loop)."""
    text = httpx.get(base_url + "/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "guanxi_requests_shed_total":
                counts["shed"] = sample.value
            labels = sample.labels
            if sample.name.startswith("guanxi_request_seconds") and labels.get("route") not in OPERATIONS_ROUTES:
                route = f"{labels['method']} {labels['route']}"
                if sample.name.endswith("_bucket"):
                    for key in (f"le={labels['le']}", f"{route} le={labels['le']}"):
                        counts[key] = counts.get(key, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    counts[f"{route} sum"] = counts.get(f"{route} sum", 0.0) + sample.value
    return counts


def in_flight(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "guanxi_requests_in_flight":
                return float(sample.value)
    return 0.0


DRAIN_SECONDS = 60.0


async def drained(service: ServerProcess) -> None:
    """Wait until the service has answered every request of the last load: wrk stops sending at
    its deadline, but requests it sent are still being worked on, and would count against the next."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if await asyncio.to_thread(in_flight, service.base_url) == 0:
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"the service still had requests in flight {DRAIN_SECONDS:.0f} s after the load stopped")


def server_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Between two reads of server_counts: answers, shed requests, the share of the answers the
    service gave within 200 ms and within 500 ms, and per route the answers and their mean time."""
    diff = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    total = diff.get("le=+Inf", 0.0)
    shares: dict[str, Any] = {"answers": total, "shed": diff.get("shed", 0.0)}
    if total > 0:
        shares["% <= 200 ms"] = round(100 * diff.get("le=0.2", 0.0) / total, 2)
        shares["% <= 500 ms"] = round(100 * diff.get("le=0.5", 0.0) / total, 2)
    routes: dict[str, str] = {}
    for key, count in diff.items():
        if key.endswith(" le=+Inf") and count > 0:
            route = key.removesuffix(" le=+Inf")
            within = 100 * diff.get(f"{route} le=0.2", 0.0) / count
            mean_ms = 1000 * diff.get(f"{route} sum", 0.0) / count
            routes[route] = f"{count:.0f} answers, mean {mean_ms:.0f} ms, {within:.1f} % <= 200 ms"
    shares["routes"] = routes
    return shares


class Usage:
    """CPU of the service, of wrk (this process's children) and of the machine between start and stop."""

    def __init__(self, service: ServerProcess) -> None:
        self.service = service
        self.machine = Machine(uptime_before=uptime())
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._service = service.cpu_seconds()
        self._cpu = machine_cpu()
        self._wall = time.monotonic()

    def stop(self) -> Machine:
        wall = time.monotonic() - self._wall
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (children.ru_utime + children.ru_stime) - (self._children.ru_utime + self._children.ru_stime)
        self.machine.wrk_cpu_pct = round(100 * used / wall, 1)
        self.machine.service_cpu_pct = round(100 * (self.service.cpu_seconds() - self._service) / wall, 1)
        self.machine.busy_pct, self.machine.steal_pct = busy_and_steal(self._cpu, machine_cpu())
        self.machine.uptime_after = uptime()
        return self.machine


@dataclass
class MixedResult:
    load: WrkMixed
    machine: Machine
    server_side: dict[str, Any]
    verdict: str


@dataclass
class OverloadResult:
    base: WrkMixed  # the mixed clients, before, during and after the surge
    surge: WrkMixed  # the extra clients, during the surge only
    probe_before_p95_ms: float
    normal_p95_ms: float  # max(p95 target, 1.5 × the probe's p95 before the surge)
    per_second_p95_ms: list[tuple[int, float, int]]  # (second after the surge ended, probe p95, answers)
    recovery_s: int | None
    probe_statuses: dict[str, int]
    machine: Machine
    verdict: str = "MISS"


async def run_mixed(
    service: ServerProcess, key: str, ids_file: Path, args: argparse.Namespace, tag: str
) -> MixedResult:
    if args.warmup > 0:
        await wrk_mixed(service, key, ids_file, connections=args.clients, seconds=args.warmup, tag=f"{tag}w")
    await drained(service)
    counts = await asyncio.to_thread(server_counts, service.base_url)
    usage = Usage(service)
    load = await wrk_mixed(service, key, ids_file, connections=args.clients, seconds=args.duration, tag=tag)
    machine = usage.stop()
    shares = server_shares(counts, await asyncio.to_thread(server_counts, service.base_url))
    met = (
        load.server_errors == 0
        and load.unanswered == 0
        and load.p95_ms <= P95_TARGET_MS
        and load.p99_ms <= P99_TARGET_MS
    )
    return MixedResult(load, machine, shares, "PASS" if met else "MISS")


async def run_overload(
    service: ServerProcess,
    key: str,
    ids: list[str],
    ids_file: Path,
    args: argparse.Namespace,
    tag: str,
) -> OverloadResult:
    samples: list[Sample] = []
    await drained(service)
    usage = Usage(service)
    start = time.monotonic()
    total = args.overload_before + args.overload_duration + args.overload_after

    async def surge() -> WrkMixed:
        await asyncio.sleep(args.overload_before)
        return await wrk_mixed(
            service,
            key,
            ids_file,
            connections=args.overload_clients - args.clients,
            seconds=args.overload_duration,
            tag=f"{tag}s",
        )

    base, surged, _ = await asyncio.gather(
        wrk_mixed(service, key, ids_file, connections=args.clients, seconds=total, tag=f"{tag}b"),
        surge(),
        probe(service, key, ids, start + total, samples),
    )
    machine = usage.stop()
    surge_end = start + args.overload_before + args.overload_duration
    before = [s.ms for s in samples if s.started < start + args.overload_before]
    # Normal: what the probe saw under the mixed load before the surge (with room for the noise of a
    # shared machine), and never stricter than the p95 target.
    normal_p95 = max(P95_TARGET_MS, 1.5 * percentile(before, 95))

    def answered(since: float, until: float) -> list[float]:
        return [s.ms for s in samples if since <= s.started + s.ms / 1000 < until]

    per_second: list[tuple[int, float, int]] = []
    for n in range(int(args.overload_after)):
        window = answered(surge_end + n, surge_end + n + 1)
        per_second.append((n, round(percentile(window, 95), 1) if window else float("nan"), len(window)))
    # Recovered at the first second from which the p95 of everything the probe got until the end is
    # normal again: one late second on a shared machine does not undo a recovery.
    recovery: int | None = None
    end = start + total
    for n in range(int(args.overload_after)):
        rest = answered(surge_end + n, end)
        if rest and percentile(rest, 95) <= normal_p95:
            recovery = n
            break
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    result = OverloadResult(
        base=base,
        surge=surged,
        probe_before_p95_ms=round(percentile(before, 95), 1),
        normal_p95_ms=round(normal_p95, 1),
        per_second_p95_ms=per_second,
        recovery_s=recovery,
        probe_statuses=dict(sorted(statuses.items())),
        machine=machine,
    )
    no_500 = base.count("500") + surged.count("500") + statuses.get("500", 0) == 0
    other_5xx = (base.server_errors - base.count("503")) + (surged.server_errors - surged.count("503"))
    all_answered = base.unanswered + surged.unanswered + statuses.get("0", 0) == 0
    if no_500 and other_5xx == 0 and all_answered and recovery is not None and recovery <= RECOVERY_TARGET_S:
        result.verdict = "PASS"
    return result


async def prepare(db: BenchDatabase, rows: int) -> tuple[uuid.UUID, list[str], str]:
    conn = await asyncpg.connect(db.dsn)
    try:
        workspace = await ensure_workspace(conn, WorkspacePlan(SLUG, "Bench (load)", rows, phone_salt=83_000_000))
        print(f"  workspace {SLUG}: {rows:,} customers {'reused' if workspace.reused else 'seeded'}")
        # Hint bits, visibility map and statistics now, for seeded rows and for the rows earlier runs
        # created, rather than inside the measured minutes, where PostgreSQL would otherwise spend
        # the machine on them and the service's latency would measure that.
        await vacuum_analyze(conn)
        ids = [
            str(r[0])
            for r in await conn.fetch(
                "SELECT id FROM customers WHERE workspace_id = $1 AND deleted_at IS NULL AND name NOT LIKE 'load %'",
                workspace.workspace_id,
            )
        ]
    finally:
        await conn.close()
    engine = create_engine(db.url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            _, key = await api_keys.issue(
                session,
                workspace.workspace_id,
                name="load bench",
                scopes=[Scope.CUSTOMERS_READ, Scope.CUSTOMERS_WRITE, Scope.CUSTOMERS_PII],
            )
            await session.commit()
    finally:
        await engine.dispose()
    return workspace.workspace_id, ids, key


async def forget_writes(db: BenchDatabase, workspace_id: uuid.UUID) -> None:
    """The creates of a run are removed, so the next run reuses the seeded workspace."""
    conn = await asyncpg.connect(db.dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "DELETE FROM customer_identities WHERE workspace_id = $1 AND customer_id IN "
                "(SELECT id FROM customers WHERE workspace_id = $1 AND name LIKE 'load %')",
                workspace_id,
            )
            for table in ("idempotency_records", "outbox_events", "audit_log"):
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
                if exists:
                    await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM customers WHERE workspace_id = $1 AND name LIKE 'load %'", workspace_id)
    finally:
        await conn.close()


def service_argv(port: int, workers: int) -> list[str]:
    script = Path(sys.executable).parent / "guanxi"
    tail = ["serve", "--no-demo", "--no-worker", "--workers", str(workers), "--port", str(port)]
    if script.exists():
        return [str(script), *tail]
    return [sys.executable, "-c", "from app.cli import main; main()", *tail]


def print_load(name: str, f: WrkMixed) -> None:
    print(
        f"  {name:<14} {f.requests:>8,} req {f.rps:>7.1f} req/s  p50 {f.p50_ms:>7.1f}  p95 {f.p95_ms:>7.1f}  "
        f"p99 {f.p99_ms:>7.1f}  max {f.max_ms:>8.1f} ms  {f.statuses} {f.errors or ''}"
    )


def print_machine(m: Machine) -> None:
    print(f"    before: {m.uptime_before}")
    print(f"    after:  {m.uptime_after}")
    print(
        f"    machine busy {m.busy_pct} % (steal {m.steal_pct} %); service {m.service_cpu_pct} % of a core, "
        f"wrk {m.wrk_cpu_pct} % of a core"
    )


def run(args: argparse.Namespace, workdir: Path) -> int:
    started = datetime.now(UTC)
    print(f"guanxi load bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    db = prepare_database(recreate=args.reseed, database=DATABASE)
    print(f"database {db.server}: {DATABASE}; service: {args.workers} API process(es)")
    workspace_id, ids, key = asyncio.run(prepare(db, args.rows))
    env = {**os.environ, "DATABASE_URL": db.url}
    # One API key drives the whole load: the per-caller limit (6,000/min by default) is not what this
    # bench measures, and would answer most of it with 429.
    env["GUANXI_RATE_LIMIT_PER_MINUTE"] = "100000000"
    env["GUANXI_LOG_LEVEL"] = "WARNING"
    port = free_port()
    verdicts: list[str] = []
    out: dict[str, Any] = {
        "bench": "load",
        "date": started.isoformat(),
        "machine": machine_facts(),
        "database": db.server,
        "settings": dict(vars(args)),
    }
    ids_file = workdir / "ids.txt"
    ids_file.write_text("".join(f"{i}\n" for i in ids))
    tag = f"{started:%H%M%S}"
    try:
        argv = service_argv(port, args.workers)
        with running("service", argv, env, workdir / "service.log", port, "/readyz") as service:
            print(
                f"\n1. mixed load: {args.clients} clients (wrk connections), {args.duration:g} s "
                f"(+{args.warmup:g} s warm-up), {int(WRITE_SHARE * 100)} % creates"
            )
            mixed = asyncio.run(run_mixed(service, key, ids_file, args, tag))
            print_load("mixed", mixed.load)
            routes = mixed.server_side.pop("routes", {})
            print(f"    measured by the service itself: {mixed.server_side}")
            for route, text in sorted(routes.items()):
                print(f"      {route}: {text}")
            mixed.server_side["routes"] = routes
            print_machine(mixed.machine)
            print(
                f"  targets: no 5xx ({mixed.load.server_errors}), p95 ≤ {P95_TARGET_MS:g} ms, "
                f"p99 ≤ {P99_TARGET_MS:g} ms   {mixed.verdict}"
            )
            verdicts.append(mixed.verdict)
            out["mixed"] = asdict(mixed)
            if not args.skip_overload:
                print(
                    f"\n2. overload: {args.clients} clients for {args.overload_before:g} s, then "
                    f"{args.overload_clients} for {args.overload_duration:g} s, then {args.clients} for "
                    f"{args.overload_after:g} s; a probe reads a customer every {PROBE_PAUSE_S * 1000:g} ms"
                )
                over = asyncio.run(run_overload(service, key, ids, ids_file, args, tag))
                print_load("mixed clients", over.base)
                print_load("surge clients", over.surge)
                print(f"  probe: {over.probe_statuses}, p95 before the surge {over.probe_before_p95_ms} ms")
                print(
                    "    probe p95 per second after the surge (ms): "
                    + " ".join(f"{p:.0f}" if c else "-" for _, p, c in over.per_second_p95_ms[:20])
                )
                print_machine(over.machine)
                shed = over.base.count("429", "503") + over.surge.count("429", "503")
                errors_500 = over.base.count("500") + over.surge.count("500") + over.probe_statuses.get("500", 0)
                print(
                    f"  targets: excess shed ({shed:,} answered 429/503), no 500 ({errors_500}), "
                    f"p95 back ≤ {over.normal_p95_ms:g} ms within {RECOVERY_TARGET_S:g} s "
                    f"(took {over.recovery_s} s)   {over.verdict}"
                )
                verdicts.append(over.verdict)
                out["overload"] = asdict(over)
            log_text = (workdir / "service.log").read_text(errors="replace")
            out["unhandled_errors_logged"] = log_text.count("unhandled error")
            print(f"\nunhandled errors in the service log: {out['unhandled_errors_logged']}")
    finally:
        asyncio.run(forget_writes(db, workspace_id))
    RESULTS_DIR.mkdir(exist_ok=True)
    results_path = RESULTS_DIR / f"load-{started:%Y%m%dT%H%M%SZ}.json"
    results_path.write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"\nresults in {results_path.relative_to(BENCH_DIR.parent)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="seeded customers in the load workspace")
    parser.add_argument("--clients", type=int, default=50, help="clients of the mixed load")
    parser.add_argument(
        "--workers", type=int, default=2, help="API processes (the image runs 2: one per core of this machine)"
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of the measured mixed load")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before it")
    parser.add_argument("--overload-clients", type=int, default=300, help="clients in all during the surge")
    parser.add_argument("--overload-before", type=float, default=10.0, help="mixed load seconds before the surge")
    parser.add_argument("--overload-duration", type=float, default=30.0, help="seconds of the surge")
    parser.add_argument("--overload-after", type=float, default=30.0, help="mixed load seconds after the surge")
    parser.add_argument("--skip-overload", action="store_true", help="run the mixed load only")
    parser.add_argument("--reseed", action="store_true", help="drop guanxi_load and seed it again")
    parser.add_argument("--seed", type=int, default=11, help="seed of the request mix")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args, _unknown = parser.parse_known_args(argv)  # flags meant for other benches are ignored
    if args.overload_clients <= args.clients:
        parser.error("--overload-clients must be more than --clients")
    if args.overload_after < 1:
        parser.error("--overload-after must be at least 1 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_wrk()
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="guanxi-bench-load-"))
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
