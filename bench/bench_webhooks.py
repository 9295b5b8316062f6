#!/usr/bin/env python3
"""Webhooks bench: outbox events to a local receiver through `guanxi worker` processes.

The targets (project issue): to a local receiver, ≥ 1,000 deliveries/s sustained with 2 workers,
and commit-to-delivery p50 < 100 ms when the queue is not backed up.

Uses its own database, `guanxi_bench_webhooks` (embedded PostgreSQL, or DATABASE_URL's server),
recreated and migrated on every run, with one workspace and --endpoints endpoints subscribed to
`customer.*` at a receiver on 127.0.0.1 (a raw asyncio + httptools HTTP server in its own process,
answering 200 at once and recording each request's `webhook-id` and arrival time). Scenarios:

  1. floor, receiver: wrk POSTs the same body and headers straight to the receiver (its capacity).
  2. floors, database: --workers processes of raw asyncpg (no ORM, no pgqueuer) that claim pending
     deliveries with one UPDATE ... SKIP LOCKED, POST them signed, and record attempt + outcome in one
     statement; once with a bare asyncio HTTP/1.1 client ("raw": the least Python can do) and once
     with httpx as the service makes it (webhook_delivery.http_client: over aiohttp's transport).
     The bench creates the deliveries beforehand: no fan-out here.
  3. throughput: --events `customer.updated` events are inserted in bulk into outbox_events while
     --workers `guanxi worker` processes run; sustained rate = deliveries / (last − first arrival).
  4. latency: with the queue idle, --latency-events single-event transactions at --latency-rate per
     second; latency = receiver arrival − the moment COMMIT returned, both by time.time().

  5. slow receiver: the endpoints answer after --receiver-delay seconds, and fresh `guanxi worker`
     processes (one endpoint may take all of a worker's slots) deliver events committed one per
     transaction at --slow-rate per second for --slow-seconds, then --slow-burst events in one
     transaction. Each prints deliveries/s against the floor, workers × concurrency / delay: what
     the attempts a worker may have in flight can deliver at most to such a receiver.

The first 50 requests of scenarios 2 to 5 are verified with the reference `standardwebhooks`
library; the bench fails if any does not verify, or if deliveries stop arriving for 30 s. CPU per
delivery is reported for the workers, PostgreSQL (when it runs here) and the receiver. Results also
go to bench/results/webhooks-<UTC timestamp>.json. Flags meant for other benches (bench/run_all.py
passes its arguments to all) are ignored.

    .venv/bin/python bench/bench_webhooks.py                       # the full run
    .venv/bin/python bench/bench_webhooks.py --events 2000 --latency-events 40 --duration 3
    .venv/bin/python bench/bench_webhooks.py --skip-floor --skip-db-floor --worker-command "..."
"""

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from harness import (
    BENCH_DIR,
    ROOT,
    WRK_SCRIPT,
    BenchError,
    ServerProcess,
    WrkResult,
    busy_and_steal,
    free_port,
    machine_cpu,
    machine_facts,
    percentile,
    require_wrk,
    run_wrk,
    running,
)

RESULTS_DIR = BENCH_DIR / "results"
DATABASE = "guanxi_bench_webhooks"
SLUG = "bench-webhooks"
THROUGHPUT_TARGET = 1000.0
LATENCY_P50_TARGET_MS = 100.0
# Requests the receiver keeps whole (headers and body) after each reset, for signature checks.
SAMPLE_REQUESTS = 50
EVENT_TYPE = "customer.updated"
FLOOR_APPLICATION = "guanxi-bench-floor"
FLOOR_CLIENTS = ("raw", "httpx")
# A scenario fails when no new delivery arrives for this long.
STALL_SECONDS = 30.0
OK_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


# --------------------------------------------------------------------------------------------------
# The receiver (run as `bench_webhooks.py --serve-receiver PORT` in its own process)
# --------------------------------------------------------------------------------------------------


@dataclass
class ReceiverState:
    """Every POST since the last reset: path, webhook-id and arrival time."""

    paths: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    distinct: set[tuple[str, str]] = field(default_factory=set)
    samples: list[dict[str, Any]] = field(default_factory=list)
    # Requests to /slow paths, answered after `delay`: how many wait now, and the most that did.
    delay: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0

    def reset(self) -> None:
        self.paths, self.ids, self.times, self.samples = [], [], [], []
        self.distinct = set()
        self.most_in_flight = self.in_flight

    def stats(self) -> dict[str, Any]:
        return {
            "count": len(self.times),
            "distinct": len(self.distinct),
            "first": self.times[0] if self.times else None,
            "last": self.times[-1] if self.times else None,
            "most_in_flight": self.most_in_flight,
        }

    def dump(self) -> dict[str, Any]:
        return {
            "records": list(zip(self.paths, self.ids, self.times, strict=True)),
            "samples": self.samples,
            **self.stats(),
        }


class ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, parsed by httptools; answers 200 "ok" to every POST at once."""

    def __init__(self, state: ReceiverState) -> None:
        import httptools  # type: ignore[import-untyped,unused-ignore]

        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.parse_error: type[Exception] = httptools.HttpParserError
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.parse_error:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        arrived = time.time()
        assert self.transport is not None
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode()
        if method == b"POST" and path.startswith("/slow"):
            self._record(path, arrived)
            self._answer_later(self.parser.should_keep_alive())
            return
        if method == b"POST" and path.startswith("/hook"):
            self._record(path, arrived)
            response = OK_RESPONSE
        elif path == "/reset":
            self.state.reset()
            response = _http_json({"reset": True})
        elif path == "/stats":
            response = _http_json(self.state.stats())
        elif path == "/dump":
            response = _http_json(self.state.dump())
        elif path == "/healthz":
            response = OK_RESPONSE
        else:
            response = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        self.transport.write(response)
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _answer_later(self, keep_alive: bool) -> None:
        """A receiver that takes `delay` seconds per request (clients send one at a time on a
        connection, so the answer cannot overtake another's)."""
        state, transport = self.state, self.transport
        assert transport is not None
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)

        def answer() -> None:
            state.in_flight -= 1
            if not transport.is_closing():
                transport.write(OK_RESPONSE)
                if not keep_alive:
                    transport.close()

        asyncio.get_running_loop().call_later(state.delay, answer)

    def _record(self, path: str, arrived: float) -> None:
        state = self.state
        webhook_id = ""
        for name, value in self.headers:
            if name.lower() == b"webhook-id":
                webhook_id = value.decode()
                break
        state.paths.append(path)
        state.ids.append(webhook_id)
        state.times.append(arrived)
        state.distinct.add((path, webhook_id))
        if len(state.samples) < SAMPLE_REQUESTS:
            state.samples.append(
                {
                    "path": path,
                    "headers": {n.decode().lower(): v.decode() for n, v in self.headers},
                    "body": bytes(self.body).decode(),
                }
            )


def _http_json(content: Any) -> bytes:
    body = orjson.dumps(content)
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def serve_receiver(port: int, delay: float) -> None:
    state = ReceiverState(delay=delay)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(lambda: ReceiverProtocol(state), "127.0.0.1", port, backlog=1024)
    async with server:
        await stop.wait()


# --------------------------------------------------------------------------------------------------
# The database floor worker (run as `bench_webhooks.py --serve-floor-worker DSN`)
# --------------------------------------------------------------------------------------------------

FLOOR_CLAIM_SQL = """
WITH picked AS (
    SELECT workspace_id, id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET state = 'sending', attempts = d.attempts + 1, locked_until = now() + interval '43 seconds',
        updated_at = now()
    FROM picked p
    WHERE d.workspace_id = p.workspace_id AND d.id = p.id
    RETURNING d.workspace_id, d.id, d.endpoint_id, d.event_id, d.attempts
)
SELECT c.workspace_id, c.id, c.attempts, e.url, e.secret, o.id AS event_id, o.type, o.occurred_at,
       o.actor::text AS actor, o.data::text AS data
FROM claimed c
JOIN webhook_endpoints e ON e.workspace_id = c.workspace_id AND e.id = c.endpoint_id
JOIN outbox_events o ON o.workspace_id = c.workspace_id AND o.id = c.event_id
"""

FLOOR_RECORD_SQL = """
WITH attempt AS (
    INSERT INTO webhook_attempts (
        workspace_id, id, delivery_id, attempt, started_at, duration_ms, status_code, error,
        response_excerpt, request_headers
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7::smallint, $8::varchar, $9, $10::jsonb)
)
UPDATE webhook_deliveries SET
    state = CASE WHEN $7::smallint BETWEEN 200 AND 299 THEN 'succeeded' ELSE 'pending' END,
    succeeded_at = CASE WHEN $7::smallint BETWEEN 200 AND 299 THEN now() END,
    next_attempt_at = CASE WHEN $7::smallint BETWEEN 200 AND 299 THEN next_attempt_at
                           ELSE now() + interval '5 seconds' END,
    last_status = $7::smallint, last_error = $8::varchar, locked_until = NULL, updated_at = now()
WHERE workspace_id = $1 AND id = $3
"""


class RawHttpConnection:
    """One keep-alive HTTP/1.1 connection and nothing else: the cheapest POST asyncio can make."""

    def __init__(self) -> None:
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        if self.streams is None:
            self.streams = await asyncio.open_connection(host, port)
        reader, writer = self.streams
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = f"POST {parts.path or '/'} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n{lines}\r\n"
        try:
            writer.write(head.encode() + body)
            response_head = await reader.readuntil(b"\r\n\r\n")
            status_line, _, rest = response_head.decode("latin-1").partition("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in rest.split("\r\n") if x)}
            content = await reader.readexactly(int(fields.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split()[1]), content[:2048].decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def serve_floor_worker(dsn: str, concurrency: int, client_kind: str) -> None:
    """Claim, POST signed, record: the least a Python worker can do per delivery."""
    from standardwebhooks.webhooks import Webhook

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pool = await asyncpg.create_pool(
        dsn, min_size=concurrency, max_size=concurrency, server_settings={"application_name": FLOOR_APPLICATION}
    )
    signers: dict[str, Any] = {}
    from app.services.events.webhook_delivery import http_client

    # The bench receivers listen on this machine.
    http = http_client(concurrency * 2, allow_private=True)

    async def one_task() -> None:
        raw = RawHttpConnection()
        while not stop.is_set():
            row = await pool.fetchrow(FLOOR_CLAIM_SQL)
            if row is None:
                await asyncio.sleep(0.05)
                continue
            message_id = str(row["event_id"])
            body = orjson.dumps(
                {
                    "id": message_id,
                    "type": row["type"],
                    "occurred_at": row["occurred_at"].isoformat(),
                    "workspace_id": str(row["workspace_id"]),
                    "actor": orjson.loads(row["actor"]),
                    "data": orjson.loads(row["data"]),
                }
            )
            signer = signers.get(row["secret"]) or signers.setdefault(row["secret"], Webhook(row["secret"]))
            now = datetime.now(UTC)
            headers = {
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(message_id, now, body.decode()),
                "content-type": "application/json",
                "user-agent": "Guanxi-Bench-Floor/1",
            }
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            excerpt: str | None = None
            try:
                if client_kind == "raw":
                    status, excerpt = await asyncio.wait_for(raw.post(row["url"], body, headers), 10.0)
                else:
                    response = await http.post(row["url"], content=body, headers=headers, timeout=10.0)
                    status, excerpt = response.status_code, response.text[:2048]
            except (httpx.HTTPError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            await pool.execute(
                FLOOR_RECORD_SQL,
                row["workspace_id"],
                uuid.uuid4(),
                row["id"],
                row["attempts"],
                now,
                int((time.perf_counter() - started) * 1000),
                status,
                error,
                excerpt,
                orjson.dumps({k: v for k, v in headers.items() if k != "webhook-signature"}).decode(),
            )
        raw.close()

    print("floor worker ready", flush=True)
    try:
        await asyncio.gather(*(one_task() for _ in range(concurrency)))
    finally:
        await http.aclose()
        await pool.close()


# --------------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    url: str
    dsn: str
    server: str
    postgres_version: str
    workspace_id: uuid.UUID
    # Receiver path -> the endpoint's signing secret.
    secrets: dict[str, str]


@dataclass
class Arrivals:
    records: list[tuple[str, str, float]]
    samples: list[dict[str, Any]]
    count: int
    distinct: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events of the throughput scenario")
    parser.add_argument("--insert-batch", type=int, default=5_000, help="events per INSERT transaction")
    parser.add_argument("--latency-events", type=int, default=200, help="measured events of the latency scenario")
    parser.add_argument("--latency-rate", type=float, default=20.0, help="latency events committed per second")
    parser.add_argument("--latency-warmup", type=int, default=10, help="unmeasured events before those")
    parser.add_argument("--endpoints", type=int, default=1, help="endpoints subscribed to customer.*")
    parser.add_argument("--workers", type=int, default=2, help="`guanxi worker` processes")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="GUANXI_WORKER_CONCURRENCY (default: the service's, 20)"
    )
    parser.add_argument(
        "--worker-command", default=None, help="run this instead of `guanxi worker` (e.g. a patched build)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk load on the receiver floor")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk load before that")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--floor-connections", type=int, default=None, help="wrk connections (default: workers × concurrency)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="most seconds to wait for a scenario's deliveries (default: no cap)"
    )
    parser.add_argument("--skip-floor", action="store_true", help="skip the receiver-direct wrk floor")
    parser.add_argument("--skip-db-floor", action="store_true", help="skip the raw asyncpg delivery floors")
    parser.add_argument(
        "--floor-clients",
        default="raw,httpx",
        help="HTTP clients of the asyncpg floors, comma-separated: raw (bare asyncio streams), httpx (the service's)",
    )
    parser.add_argument("--receiver-delay", type=float, default=1.0, help="seconds a slow receiver takes per request")
    parser.add_argument(
        "--slow-rate",
        type=float,
        default=None,
        help="events/s committed one by one to the slow receiver (default: 2 × floor)",
    )
    parser.add_argument(
        "--slow-seconds", type=float, default=10.0, help="seconds of one-by-one commits to the slow receiver"
    )
    parser.add_argument(
        "--slow-burst", type=int, default=None, help="events in one commit to the slow receiver (default: 10 × floor)"
    )
    parser.add_argument("--skip-slow", action="store_true", help="skip the slow receiver scenarios")
    parser.add_argument("--skip-throughput", action="store_true", help="skip the throughput scenario")
    parser.add_argument("--skip-latency", action="store_true", help="skip the latency scenario")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    # Internal: the receiver and the floor worker are this script in another process.
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor-worker", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--floor-client", default="httpx", choices=FLOOR_CLIENTS, help=argparse.SUPPRESS)
    # bench/run_all.py passes its arguments to every bench: flags meant for another one are ignored.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"bench_webhooks: ignoring arguments for other benches: {' '.join(unknown)}")
    if args.events < 1 or args.latency_events < 1 or args.endpoints < 1 or args.workers < 1:
        parser.error("--events, --latency-events, --endpoints and --workers must be at least 1")
    if args.latency_rate <= 0 or args.receiver_delay <= 0 or args.slow_seconds <= 0:
        parser.error("--latency-rate, --receiver-delay and --slow-seconds must be positive")
    args.floor_clients = [c.strip() for c in args.floor_clients.split(",") if c.strip()]
    if any(c not in FLOOR_CLIENTS for c in args.floor_clients):
        parser.error(f"--floor-clients takes {', '.join(FLOOR_CLIENTS)}")
    return args


def concurrency_of(args: argparse.Namespace) -> int:
    if args.concurrency is not None:
        return int(args.concurrency)
    from app.core.settings import Settings

    return Settings().worker_concurrency


# ---- preparation ---------------------------------------------------------------------------------


def prepare(receiver_port: int, endpoints: int) -> Setup:
    from seed import prepare_database

    db = prepare_database(recreate=True, database=DATABASE)
    return asyncio.run(_create_workspace(db.url, db.dsn, db.server, receiver_port, endpoints))


async def _create_workspace(url: str, dsn: str, server: str, receiver_port: int, endpoints: int) -> Setup:
    from app.core.access import system_caller
    from app.core.db import create_engine, create_sessionmaker
    from app.core.ids import new_id
    from app.core.settings import get_settings
    from app.schemas.event import EndpointCreate
    from app.services.events import webhook_endpoints

    conn = await asyncpg.connect(dsn)
    try:
        postgres_version = str(await conn.fetchval("SELECT version()"))
        workspace_id = new_id()
        await conn.execute(
            "INSERT INTO workspaces (id, slug, name, created_at) VALUES ($1, $2, $3, now())",
            workspace_id,
            SLUG,
            "Bench (webhooks)",
        )
    finally:
        await conn.close()
    # The service's own registration path, so the endpoints are exactly what the API would store.
    engine = create_engine(url, get_settings())
    secrets: dict[str, str] = {}
    try:
        async with create_sessionmaker(engine)() as session:
            for n in range(endpoints):
                path = f"/hook/{n}"
                data = EndpointCreate.model_validate(
                    {"url": f"http://127.0.0.1:{receiver_port}{path}", "event_types": ["customer.*"]}
                )
                endpoint = await webhook_endpoints.create(session, system_caller(workspace_id), data)
                secrets[path] = endpoint.secret
            await session.commit()
    finally:
        await engine.dispose()
    return Setup(url, dsn, server, postgres_version, workspace_id, secrets)


async def reset_tables(dsn: str) -> None:
    """Empty the event, delivery and queue tables (no worker may be running)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE outbox_events, webhook_deliveries, webhook_attempts, pgqueuer, pgqueuer_log, pgqueuer_statistics"
        )
        await conn.execute("VACUUM (ANALYZE) webhook_endpoints")
    finally:
        await conn.close()


# ---- events --------------------------------------------------------------------------------------


def customer_payload(n: int, customer_id: uuid.UUID) -> dict[str, Any]:
    """A customer.updated `data` the size of the service's (CustomerOut + changed_fields)."""
    stamp = "2026-11-22T08:00:00.000000Z"
    return {
        "id": str(customer_id),
        "code": f"C-2026-{n:06d}",
        "kind": "individual",
        "name": "张伟",
        "emails": [f"wei.zhang{n}@qq.com"],
        "phones": [f"+86138{n % 100_000_000:08d}"],
        "company": "深圳星河贸易有限公司",
        "title": "采购经理",
        "gender": "male",
        "birthday": "1985-06-01",
        "country": "CN",
        "province": "广东省",
        "city": "深圳市",
        "district": "南山区",
        "street": "科技园路88号",
        "postcode": "518000",
        "source": "website",
        "tags": ["vip"],
        "owner_id": None,
        "preferences": {"contact_hours": "evening", "language": "zh-CN"},
        "custom_fields": {},
        "consent": {"email": True, "sms": False, "wechat": True},
        "notes": None,
        "created_at": stamp,
        "updated_at": stamp,
        "deleted_at": None,
        "version": 2,
        "changed_fields": ["phones", "tags"],
    }


ACTOR = orjson.dumps({"type": "api_key", "id": "0192f5a0-0000-7000-8000-000000000001"}).decode()
INSERT_EVENTS_SQL = """
INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data)
SELECT $1, u.id, $2, now(), $3::jsonb, u.data::jsonb
FROM unnest($4::uuid[], $5::text[]) AS u(id, data)
"""
PUBLISHED_EVENTS_SQL = INSERT_EVENTS_SQL.replace("occurred_at, actor, data)", "occurred_at, actor, data, published_at)")
PUBLISHED_EVENTS_SQL = PUBLISHED_EVENTS_SQL.replace("u.data::jsonb", "u.data::jsonb, now()")
INSERT_DELIVERIES_SQL = """
INSERT INTO webhook_deliveries (
    workspace_id, id, endpoint_id, event_id, state, attempts, next_attempt_at, created_at, updated_at
)
SELECT $1, u.id, u.endpoint_id, u.event_id, 'pending', 0, now(), now(), now()
FROM unnest($2::uuid[], $3::uuid[], $4::uuid[]) AS u(id, endpoint_id, event_id)
"""


def new_events(count: int, start: int = 0) -> tuple[list[uuid.UUID], list[str]]:
    from app.core.ids import new_id

    ids = [new_id() for _ in range(count)]
    data = [orjson.dumps(customer_payload(start + i, new_id())).decode() for i in range(count)]
    return ids, data


def chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(start + size, total))


# ---- processes -----------------------------------------------------------------------------------


def script_argv(*extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *extra]


def worker_argv(command: str | None) -> list[str]:
    if command:
        return shlex.split(command)
    script = Path(sys.executable).parent / "guanxi"
    if script.exists():
        return [str(script), "worker"]
    return [sys.executable, "-c", "from app.cli import main; main()", "worker"]


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    return env


def worker_env(setup: Setup, args: argparse.Namespace) -> dict[str, str]:
    env = {
        **base_env(),
        "DATABASE_URL": setup.url,
        "GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "GUANXI_LOG_LEVEL": "WARNING",
    }
    if args.concurrency is not None:
        env["GUANXI_WORKER_CONCURRENCY"] = str(args.concurrency)
    return env


@contextlib.contextmanager
def processes(
    name: str, count: int, argv: list[str], env: dict[str, str], workdir: Path
) -> Iterator[list[ServerProcess]]:
    """`count` copies of a process, always stopped with SIGTERM (then SIGKILL) on the way out."""
    started: list[ServerProcess] = []
    try:
        for n in range(count):
            started.append(ServerProcess(f"{name}-{n}", argv, env, workdir / f"{name}-{n}.log", 0))
        yield started
    finally:
        for process in started:
            process.stop()


def check_alive(procs: list[ServerProcess]) -> None:
    for p in procs:
        if p.process.poll() is not None:
            raise BenchError(f"{p.name} exited with {p.process.returncode}:\n{p.log_tail()}")


def log_problems(procs: list[ServerProcess]) -> list[str]:
    """Warning and error lines the processes logged (they run at GUANXI_LOG_LEVEL=WARNING)."""
    found: list[str] = []
    for p in procs:
        with contextlib.suppress(OSError):
            for line in p.log_path.read_text(errors="replace").splitlines():
                if line.strip() and "floor worker ready" not in line:
                    found.append(f"{p.name}: {line[:300]}")
    return found


async def wait_listening(dsn: str, procs: list[ServerProcess], limit: float = 60.0) -> None:
    """Until every worker LISTENs for outbox commits (Worker.ready in another process)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            check_alive(procs)
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'LISTEN%guanxi_outbox%'"
            )
            if listening >= len(procs):
                # pgqueuer starts its consumer right after; give it a moment to subscribe.
                await asyncio.sleep(1.0)
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise BenchError(f"the workers did not listen within {limit:.0f} s")


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def postgres_processes(dsn: str) -> Callable[[], list[int]]:
    """A function listing the server's processes (they come and go with connections), or none when
    the server is not on this machine or its data directory cannot be read."""
    conn = await asyncpg.connect(dsn)
    try:
        try:
            data_directory = Path(str(await conn.fetchval("SHOW data_directory")))
        except asyncpg.PostgresError:
            return list
    finally:
        await conn.close()
    return lambda: _server_processes(data_directory)


def _server_processes(data_directory: Path) -> list[int]:
    try:
        postmaster = int((data_directory / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
    return pids


@dataclass
class CpuMeter:
    """CPU seconds of named process groups, and the machine's busy/steal share, over an interval."""

    # Group name -> its processes now (processes that start during the interval count whole; ones that
    # end before its end are missed).
    groups: dict[str, Callable[[], list[int]]]
    before: dict[int, float] = field(default_factory=dict)
    machine_before: list[int] = field(default_factory=list)
    started: float = 0.0

    def start(self) -> None:
        self.before = {pid: proc_cpu_seconds(pid) or 0.0 for pids in self.groups.values() for pid in pids()}
        self.machine_before = machine_cpu()
        self.started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        busy, steal = busy_and_steal(self.machine_before, machine_cpu())
        out: dict[str, Any] = {"seconds": round(elapsed, 2), "machine_busy_pct": busy, "machine_steal_pct": steal}
        for name, pids in self.groups.items():
            used = sum((proc_cpu_seconds(pid) or 0.0) - self.before.get(pid, 0.0) for pid in pids())
            out[f"{name}_cpu_s"] = round(used, 2)
        return out


# ---- receiver client -----------------------------------------------------------------------------


class ReceiverClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30.0, trust_env=False)

    async def reset(self) -> None:
        (await self.http.post("/reset")).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get("/stats")
        response.raise_for_status()
        return dict(response.json())

    async def dump(self) -> Arrivals:
        response = await self.http.get("/dump")
        response.raise_for_status()
        data = orjson.loads(response.content)
        return Arrivals(
            records=[(p, i, float(t)) for p, i, t in data["records"]],
            samples=list(data["samples"]),
            count=int(data["count"]),
            distinct=int(data["distinct"]),
        )

    async def wait_for(
        self,
        expected: int,
        limit: float | None,
        procs: list[ServerProcess],
        label: str,
        progress: bool = True,
        stall: float = STALL_SECONDS,
    ) -> dict[str, Any]:
        """Poll until `expected` distinct (path, webhook-id) pairs arrived; fail when nothing new arrives
        for `stall` seconds, or after `limit` seconds in all."""
        started = last_change = next_print = time.monotonic()
        next_print += 10.0
        seen = last_count = 0
        last_at = started
        while True:
            stats = await self.stats()
            if stats["distinct"] >= expected:
                return stats
            now = time.monotonic()
            if stats["distinct"] != seen:
                seen, last_change = stats["distinct"], now
            if now - last_change > stall or (limit is not None and now - started > limit):
                raise BenchError(
                    f"{label}: {seen:,} of {expected:,} deliveries arrived after {now - started:.0f} s "
                    f"(none in the last {now - last_change:.0f} s)"
                )
            check_alive(procs)
            if progress and now >= next_print:
                rate, window = (seen - last_count) / (now - last_at), now - last_at
                print(f"    {seen:>8,} / {expected:,} arrived  ({rate:,.0f}/s over the last {window:.0f} s)")
                last_count, last_at, next_print = seen, now, now + 10.0
            await asyncio.sleep(0.05 if expected - seen < 50 else 0.25)

    async def aclose(self) -> None:
        await self.http.aclose()


def verify_samples(samples: list[dict[str, Any]], secrets: dict[str, str], label: str) -> int:
    """Check every sampled request with the reference library; raise on any failure."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    checked = 0
    failures: list[str] = []
    for sample in samples:
        secret = secrets.get(sample["path"])
        if secret is None:
            failures.append(f"request to unknown path {sample['path']}")
            continue
        try:
            Webhook(secret).verify(sample["body"], sample["headers"])
        except WebhookVerificationError as exc:
            failures.append(f"{sample['headers'].get('webhook-id')}: {exc}")
            continue
        body = orjson.loads(sample["body"])
        if body.get("id") != sample["headers"].get("webhook-id") or body.get("type") != EVENT_TYPE:
            failures.append(f"{sample['headers'].get('webhook-id')}: body id/type {body.get('id')}/{body.get('type')}")
            continue
        checked += 1
    if failures or not checked:
        raise BenchError(f"{label}: {len(failures)} sampled deliveries failed verification: {failures[:5]}")
    return checked


def rate_profile(times: list[float]) -> dict[str, Any]:
    """Deliveries per whole second of arrival: steady-state median, best and worst full second."""
    if len(times) < 2:
        return {}
    first = min(times)
    buckets = Counter(int(t - first) for t in times)
    full = [buckets.get(s, 0) for s in range(max(buckets))]  # the last, partial second left out
    if not full:
        return {}
    return {"per_second_median": percentile(full, 50), "per_second_max": max(full), "per_second_min": min(full)}


# ---- scenarios -----------------------------------------------------------------------------------


def receiver_floor(receiver: ServerProcess, args: argparse.Namespace, workdir: Path, connections: int) -> WrkResult:
    """wrk POSTing a delivery-sized signed body to the receiver: what it can take at most."""
    from app.core.ids import new_id
    from app.services.events import webhook_signing

    event_id = new_id()
    body = orjson.dumps(
        {
            "id": str(event_id),
            "type": EVENT_TYPE,
            "occurred_at": datetime.now(UTC).isoformat(),
            "workspace_id": str(new_id()),
            "actor": orjson.loads(ACTOR),
            "data": customer_payload(1, new_id()),
        }
    ).decode()
    headers = {
        **webhook_signing.headers(
            message_id=str(event_id), at=datetime.now(UTC), body=body, secrets_in_use=[webhook_signing.new_secret()]
        ),
        "content-type": "application/json",
        "user-agent": "Guanxi-Webhooks/1",
    }
    body_file = workdir / "body.json"
    body_file.write_text(body)
    report = WRK_SCRIPT.read_text()
    done = report[report.index("function done(") :]
    script = workdir / "post.lua"
    script.write_text(
        "-- generated by bench_webhooks.py: POST args[2]'s content to args[1]\n"
        'local path = "/"\nlocal body = ""\n'
        "function init(args)\n  path = args[1]\n"
        '  local f = assert(io.open(args[2], "rb"))\n  body = f:read("*a")\n  f:close()\nend\n'
        'function request()\n  return wrk.format("POST", path, nil, body)\nend\n\n' + done
    )
    common: dict[str, Any] = {
        "ids_file": body_file,
        "headers": headers,
        "threads": args.threads,
        "connections": connections,
        "script": script,
    }
    if args.warmup > 0:
        run_wrk(receiver.base_url, "/hook/floor", seconds=args.warmup, **common)
    result = run_wrk(receiver.base_url, "/hook/floor", seconds=args.duration, server=receiver, **common)
    print(
        f"  receiver direct: {result.rps:,.0f} req/s  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
        f"errors {result.errors}  ({len(body)} B body, {connections} connections)"
    )
    return result


async def db_floor(
    setup: Setup,
    args: argparse.Namespace,
    workdir: Path,
    receiver: ReceiverClient,
    meter_groups: dict[str, Callable[[], list[int]]],
    client_kind: str,
) -> dict[str, Any]:
    """Raw asyncpg workers delivering pre-created deliveries: the delivery path without the service."""
    await reset_tables(setup.dsn)
    endpoint_ids = await _endpoint_ids(setup)
    expected = args.events * len(endpoint_ids)
    conn = await asyncpg.connect(setup.dsn)
    try:
        from app.core.ids import new_id

        for part in chunks(args.events, args.insert_batch):
            ids, data = new_events(len(part), part.start)
            async with conn.transaction():
                await conn.execute(PUBLISHED_EVENTS_SQL, setup.workspace_id, EVENT_TYPE, ACTOR, ids, data)
                pairs = [(e, event_id) for event_id in ids for e in endpoint_ids]
                await conn.execute(
                    INSERT_DELIVERIES_SQL,
                    setup.workspace_id,
                    [new_id() for _ in pairs],
                    [e for e, _ in pairs],
                    [event_id for _, event_id in pairs],
                )
        await conn.execute("VACUUM (ANALYZE) outbox_events, webhook_deliveries")
    finally:
        await conn.close()
    await receiver.reset()
    concurrency = concurrency_of(args)
    argv = script_argv(
        "--serve-floor-worker", setup.dsn, "--concurrency", str(concurrency), "--floor-client", client_kind
    )
    label = f"floor ({client_kind})"
    with processes(f"floor-{client_kind}", args.workers, argv, base_env(), workdir) as procs:
        meter = CpuMeter({"workers": lambda: [p.process.pid for p in procs], **meter_groups})
        meter.start()
        started = time.time()
        await receiver.wait_for(expected, args.timeout, procs, label)
        cpu = meter.stop()
        problems = log_problems(procs)
    arrivals = await receiver.dump()
    result = summarise_throughput(label, arrivals, expected, started, cpu, problems)
    result["client"] = client_kind
    result["verified_signatures"] = verify_samples(arrivals.samples, setup.secrets, label)
    return result


async def _endpoint_ids(setup: Setup) -> list[uuid.UUID]:
    conn = await asyncpg.connect(setup.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM webhook_endpoints WHERE workspace_id = $1 ORDER BY url", setup.workspace_id
        )
    finally:
        await conn.close()
    return [row["id"] for row in rows]


def summarise_throughput(
    label: str, arrivals: Arrivals, expected: int, started: float, cpu: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    times = sorted(t for _, _, t in arrivals.records)
    first, last = times[0], times[-1]
    span = last - first
    sustained = expected / span if span > 0 else float("inf")
    overall = expected / (last - started) if last > started else float("inf")
    out = {
        "deliveries": expected,
        "received": arrivals.count,
        "duplicates": arrivals.count - arrivals.distinct,
        "first_arrival_after_s": round(first - started, 3),
        "span_s": round(span, 3),
        "total_s": round(last - started, 3),
        "sustained_per_s": round(sustained, 1),
        "overall_per_s": round(overall, 1),
        **rate_profile(times),
        **cpu,
        "log_problems": problems[:20],
    }
    worker_cpu = cpu.get("workers_cpu_s")
    if worker_cpu is not None:
        out["worker_cpu_us_per_delivery"] = round(worker_cpu * 1e6 / expected, 1)
    print(
        f"  {label}: {expected:,} deliveries, sustained {sustained:,.0f}/s (first→last arrival {span:.2f} s), "
        f"overall {overall:,.0f}/s (first commit→last arrival {last - started:.2f} s), "
        f"duplicates {out['duplicates']}"
    )
    if problems:
        print(f"  {label}: {len(problems)} log lines at WARNING or above, first: {problems[0]}")
    return out


async def throughput(
    setup: Setup,
    args: argparse.Namespace,
    receiver: ReceiverClient,
    procs: list[ServerProcess],
    meter_groups: dict[str, Callable[[], list[int]]],
) -> dict[str, Any]:
    endpoints = len(setup.secrets)
    expected = args.events * endpoints
    print(f"  building {args.events:,} events ...")
    batches = [new_events(len(part), part.start) for part in chunks(args.events, args.insert_batch)]
    await receiver.reset()
    conn = await asyncpg.connect(setup.dsn)
    meter = CpuMeter({"workers": lambda: [p.process.pid for p in procs], **meter_groups})
    try:
        meter.start()
        started = time.time()
        for ids, data in batches:
            async with conn.transaction():
                await conn.execute(INSERT_EVENTS_SQL, setup.workspace_id, EVENT_TYPE, ACTOR, ids, data)
        committed = time.time()
    finally:
        await conn.close()
    print(f"  {args.events:,} events committed in {committed - started:.2f} s ({len(batches)} transactions)")
    await receiver.wait_for(expected, args.timeout, procs, "throughput")
    cpu = meter.stop()
    arrivals = await receiver.dump()
    result = summarise_throughput("service", arrivals, expected, started, cpu, log_problems(procs))
    result["insert_s"] = round(committed - started, 3)
    result["verified_signatures"] = verify_samples(arrivals.samples, setup.secrets, "throughput")
    # Arrived is not yet recorded: the state once every attempt is written and the queue is empty.
    await wait_idle(setup.dsn, procs)
    result["database"] = await delivery_states(setup.dsn)
    return result


async def delivery_states(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        states = {
            r["state"]: r["n"]
            for r in await conn.fetch("SELECT state, count(*) AS n FROM webhook_deliveries GROUP BY 1")
        }
        attempts = await conn.fetchval("SELECT count(*) FROM webhook_attempts")
        queue = {
            str(r["status"]): r["n"] for r in await conn.fetch("SELECT status, count(*) AS n FROM pgqueuer GROUP BY 1")
        }
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
    finally:
        await conn.close()
    return {"deliveries": states, "attempts": attempts, "queue": queue, "unpublished_events": unpublished}


async def wait_idle(dsn: str, procs: list[ServerProcess], limit: float = 60.0) -> None:
    """Until no job is queued or picked and no delivery is pending or sending."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            check_alive(procs)
            busy = await conn.fetchval(
                "SELECT (SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked'))"
                " + (SELECT count(*) FROM webhook_deliveries WHERE state IN ('pending', 'sending'))"
                " + (SELECT count(*) FROM outbox_events WHERE published_at IS NULL)"
            )
            if busy == 0:
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise BenchError(f"the queue did not drain within {limit:.0f} s")


async def latency(
    setup: Setup, args: argparse.Namespace, receiver: ReceiverClient, procs: list[ServerProcess]
) -> dict[str, Any]:
    endpoints = len(setup.secrets)
    interval = 1.0 / args.latency_rate
    await wait_idle(setup.dsn, procs)
    conn = await asyncpg.connect(setup.dsn)
    commits: dict[str, float] = {}
    try:
        # Warm-up: connections, prepared statements and pgqueuer's listener, unmeasured.
        await receiver.reset()
        await _commit_singles(conn, setup, args.latency_warmup, interval, {})
        await receiver.wait_for(args.latency_warmup * endpoints, 30.0, procs, "latency warm-up", progress=False)
        await wait_idle(setup.dsn, procs)
        await receiver.reset()
        started = time.time()
        await _commit_singles(conn, setup, args.latency_events, interval, commits)
        committing_s = time.time() - started
    finally:
        await conn.close()
    await receiver.wait_for(args.latency_events * endpoints, 30.0, procs, "latency", progress=False)
    arrivals = await receiver.dump()
    first_arrival: dict[tuple[str, str], float] = {}
    for path, webhook_id, t in arrivals.records:
        first_arrival.setdefault((path, webhook_id), t)
    latencies = [
        (t - commits[webhook_id]) * 1000 for (_, webhook_id), t in first_arrival.items() if webhook_id in commits
    ]
    stages = await _stages(setup.dsn, commits, first_arrival)
    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    print(
        f"  commit→arrival over {len(latencies)} deliveries: p50 {p50:.1f} ms  p95 {p95:.1f} ms  "
        f"p99 {p99:.1f} ms  max {max(latencies):.1f} ms"
    )
    return {
        "events": args.latency_events,
        "deliveries": len(latencies),
        "rate_per_s": args.latency_rate,
        "committing_s": round(committing_s, 2),
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(p99, 2),
        "min_ms": round(min(latencies), 2),
        "max_ms": round(max(latencies), 2),
        "duplicates": arrivals.count - arrivals.distinct,
        "stages_p50_ms": stages,
        "verified_signatures": verify_samples(arrivals.samples, setup.secrets, "latency"),
        "log_problems": log_problems(procs)[:20],
    }


async def _commit_singles(
    conn: asyncpg.Connection, setup: Setup, count: int, interval: float, commits: dict[str, float]
) -> None:
    """One event per transaction, paced; the commit time is taken as soon as COMMIT returns."""
    ids, data = new_events(count)
    start = time.monotonic()
    for n, (event_id, payload) in enumerate(zip(ids, data, strict=True)):
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        async with conn.transaction():
            await conn.execute(INSERT_EVENTS_SQL, setup.workspace_id, EVENT_TYPE, ACTOR, [event_id], [payload])
        commits[str(event_id)] = time.time()


async def _stages(
    dsn: str, commits: dict[str, float], arrivals: dict[tuple[str, str], float]
) -> dict[str, float | None]:
    """Where the latency goes, from the worker's own timestamps: fan-out (the delivery's created_at),
    job start (the attempt's started_at), arrival at the receiver."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT d.event_id::text AS event_id, e.url, extract(epoch FROM d.created_at)::float8 AS fanned_out, "
            "extract(epoch FROM a.started_at)::float8 AS job_started "
            "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.workspace_id = d.workspace_id "
            "AND e.id = d.endpoint_id JOIN webhook_attempts a ON a.workspace_id = d.workspace_id "
            "AND a.delivery_id = d.id AND a.attempt = 1 WHERE d.event_id = ANY($1::uuid[])",
            list(commits),
        )
    finally:
        await conn.close()
    to_fan_out, to_job, to_arrival = [], [], []
    for row in rows:
        path = "/" + row["url"].split("/", 3)[3]
        arrived = arrivals.get((path, row["event_id"]))
        committed = commits[row["event_id"]]
        to_fan_out.append((row["fanned_out"] - committed) * 1000)
        to_job.append((row["job_started"] - row["fanned_out"]) * 1000)
        if arrived is not None:
            to_arrival.append((arrived - row["job_started"]) * 1000)
    return {
        "commit_to_fan_out": round(percentile(to_fan_out, 50), 2) if to_fan_out else None,
        "fan_out_to_job_start": round(percentile(to_job, 50), 2) if to_job else None,
        "job_start_to_arrival": round(percentile(to_arrival, 50), 2) if to_arrival else None,
    }


async def slow_receiver(
    setup: Setup,
    args: argparse.Namespace,
    workdir: Path,
    receiver: ReceiverClient,
    meter_groups: dict[str, Callable[[], list[int]]],
) -> dict[str, Any]:
    """Events one by one, then in a burst, to endpoints that answer after --receiver-delay: how
    near the service comes to keeping every slot it may use busy."""
    concurrency = concurrency_of(args)
    floor = args.workers * concurrency / args.receiver_delay
    rate = args.slow_rate or 2 * floor
    trickle = max(1, round(rate * args.slow_seconds))
    burst = args.slow_burst or max(1, round(10 * floor))
    await reset_tables(setup.dsn)
    conn = await asyncpg.connect(setup.dsn)
    try:
        await conn.execute("UPDATE webhook_endpoints SET url = replace(url, '/hook/', '/slow/')")
    finally:
        await conn.close()
    secrets = {path.replace("/hook/", "/slow/"): secret for path, secret in setup.secrets.items()}
    # One endpoint may take every slot: the floor is then the same whatever the endpoint count.
    env = {**worker_env(setup, args), "GUANXI_WEBHOOK_ENDPOINT_CONCURRENCY": str(concurrency)}
    out: dict[str, Any] = {"delay_s": args.receiver_delay, "floor_per_s": round(floor, 1)}
    print(
        f"slow receiver: {args.receiver_delay:g} s per request, {args.workers} × `guanxi worker` "
        f"(concurrency {concurrency}): floor {floor:,.1f} deliveries/s"
    )
    try:
        with processes("slow-worker", args.workers, worker_argv(args.worker_command), env, workdir) as procs:
            await wait_listening(setup.dsn, procs)
            print(f"  one by one: {trickle:,} single-event commits at {rate:g}/s")
            out["one_by_one"] = await _slow_run(setup, args, receiver, procs, meter_groups, secrets, trickle, rate)
            await wait_idle(setup.dsn, procs, limit=STALL_SECONDS + args.receiver_delay * 4)
            print(f"  burst: {burst:,} events in one commit")
            out["burst"] = await _slow_run(setup, args, receiver, procs, meter_groups, secrets, burst, None)
    finally:
        conn = await asyncpg.connect(setup.dsn)
        try:
            await conn.execute("UPDATE webhook_endpoints SET url = replace(url, '/slow/', '/hook/')")
        finally:
            await conn.close()
    for name in ("one_by_one", "burst"):
        r = out[name]
        # From the first arrival to the last answer: the last request counts its delay too.
        r["per_s"] = round(r["deliveries"] / (r["span_s"] + args.receiver_delay), 1)
        r["ratio_to_floor"] = round(r["per_s"] / floor, 3)
    return out


async def _slow_run(
    setup: Setup,
    args: argparse.Namespace,
    receiver: ReceiverClient,
    procs: list[ServerProcess],
    meter_groups: dict[str, Callable[[], list[int]]],
    secrets: dict[str, str],
    events: int,
    rate: float | None,
) -> dict[str, Any]:
    """`events` committed one per transaction at `rate` per second, or all in one (None)."""
    expected = events * len(setup.secrets)
    await receiver.reset()
    conn = await asyncpg.connect(setup.dsn)
    meter = CpuMeter({"workers": lambda: [p.process.pid for p in procs], **meter_groups})
    try:
        meter.start()
        started = time.time()
        if rate is None:
            ids, data = new_events(events)
            async with conn.transaction():
                await conn.execute(INSERT_EVENTS_SQL, setup.workspace_id, EVENT_TYPE, ACTOR, ids, data)
        else:
            await _commit_singles(conn, setup, events, 1.0 / rate, {})
    finally:
        await conn.close()
    stats = await receiver.wait_for(
        expected, args.timeout, procs, "slow receiver", stall=STALL_SECONDS + args.receiver_delay
    )
    cpu = meter.stop()
    arrivals = await receiver.dump()
    label = "one by one" if rate is not None else "burst"
    result = summarise_throughput(label, arrivals, expected, started, cpu, log_problems(procs))
    result["most_in_flight"] = stats["most_in_flight"]
    result["verified_signatures"] = verify_samples(arrivals.samples, secrets, f"slow receiver, {label}")
    return result


# ---- the run -------------------------------------------------------------------------------------


async def run_scenarios(
    setup: Setup, args: argparse.Namespace, workdir: Path, receiver_proc: ServerProcess
) -> dict[str, Any]:
    receiver = ReceiverClient(receiver_proc.base_url)
    out: dict[str, Any] = {}
    concurrency = concurrency_of(args)
    groups = {"postgres": await postgres_processes(setup.dsn), "receiver": lambda: [receiver_proc.process.pid]}
    try:
        if not args.skip_floor:
            connections = args.floor_connections or args.workers * concurrency
            print("floor: wrk straight to the receiver")
            wrk = await asyncio.to_thread(receiver_floor, receiver_proc, args, workdir, connections)
            out["receiver_floor"] = {**wrk.as_dict(), "connections": connections, "threads": args.threads}
            await receiver.reset()
        if not args.skip_db_floor:
            out["db_floor"] = {}
            for kind in args.floor_clients:
                print(f"floor: {args.workers} asyncpg + {kind} HTTP processes × {concurrency} tasks")
                out["db_floor"][kind] = await db_floor(setup, args, workdir, receiver, groups, kind)
        if not args.skip_slow:
            out["slow"] = await slow_receiver(setup, args, workdir, receiver, groups)
        if args.skip_throughput and args.skip_latency:
            return out
        await reset_tables(setup.dsn)
        env = worker_env(setup, args)
        print(f"service: {args.workers} × `guanxi worker` (concurrency {concurrency})")
        with processes("worker", args.workers, worker_argv(args.worker_command), env, workdir) as procs:
            await wait_listening(setup.dsn, procs)
            if not args.skip_throughput:
                print(f"throughput: {args.events:,} events × {len(setup.secrets)} endpoint(s)")
                out["throughput"] = await throughput(setup, args, receiver, procs, groups)
            if not args.skip_latency:
                print(f"latency: {args.latency_events} single-event commits at {args.latency_rate:g}/s, queue idle")
                out["latency"] = await latency(setup, args, receiver, procs)
    finally:
        await receiver.aclose()
    return out


def _cpu_cell(r: dict[str, Any], name: str) -> str:
    value = r.get(f"{name}_cpu_s")
    return "-" if value is None else f"{value * 1e6 / r['deliveries']:.0f}"


def print_table(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    verdicts: list[str] = []
    floor = out.get("receiver_floor")
    db_floors: dict[str, dict[str, Any]] = out.get("db_floor", {})
    service = out.get("throughput")
    print()
    print(f"Webhook deliveries to a local receiver ({args.workers} workers, {args.endpoints} endpoint(s))")
    print(
        f"  {'':<24} {'sustained/s':>11} {'overall/s':>10} {'span s':>7}   "
        f"{'CPU µs per delivery: workers':>28} {'postgres':>9} {'receiver':>9}   {'busy/steal %':>12}"
    )
    if floor:
        print(
            f"  {'floor: receiver (wrk)':<24} {floor['rps']:>11,.0f} {'':>10} {floor['seconds']:>7.1f}   "
            f"{'':>28} {'':>9} {'':>9}   {floor['machine_busy_pct']}/{floor['machine_steal_pct']}"
        )
    rows = [(f"floor: asyncpg + {kind}", r) for kind, r in db_floors.items()]
    if service:
        rows.append(("service (guanxi worker)", service))
    for name, r in rows:
        print(
            f"  {name:<24} {r['sustained_per_s']:>11,.0f} {r['overall_per_s']:>10,.0f} {r['span_s']:>7.2f}   "
            f"{_cpu_cell(r, 'workers'):>28} {_cpu_cell(r, 'postgres'):>9} {_cpu_cell(r, 'receiver'):>9}   "
            f"{r['machine_busy_pct']}/{r['machine_steal_pct']}"
        )
    if service:
        rate = service["sustained_per_s"]
        if floor:
            print(f"  ratio service / receiver floor = {rate / floor['rps']:.3f}")
        for kind, r in db_floors.items():
            print(f"  ratio service / asyncpg + {kind} floor = {rate / r['sustained_per_s']:.3f}")
        ok = rate >= THROUGHPUT_TARGET and service["duplicates"] == 0
        verdict = "PASS" if ok else "MISS"
        print(
            f"  sustained {rate:,.0f}/s   target ≥ {THROUGHPUT_TARGET:,.0f}/s with {args.workers} workers   {verdict}"
        )
        verdicts.append(verdict)
    slow = out.get("slow")
    if slow:
        print()
        print(
            f"Slow receiver ({slow['delay_s']:g} s per request; floor = {args.workers} workers × concurrency "
            f"{concurrency_of(args)} / delay = {slow['floor_per_s']:,.1f}/s; service/s: deliveries over first "
            "arrival → last answer)"
        )
        print(f"  {'':<12} {'deliveries':>10} {'service/s':>10} {'floor/s':>8} {'ratio':>6} {'most in flight':>15}")
        for name, label in (("one_by_one", "one by one"), ("burst", "burst")):
            r = slow[name]
            print(
                f"  {label:<12} {r['deliveries']:>10,} {r['per_s']:>10,.1f} {slow['floor_per_s']:>8,.1f} "
                f"{r['ratio_to_floor']:>6.3f} {r['most_in_flight']:>15}"
            )
    lat = out.get("latency")
    if lat:
        print()
        print(f"Commit-to-delivery, queue idle ({lat['deliveries']} deliveries at {lat['rate_per_s']:g} events/s)")
        print(
            f"  p50 {lat['p50_ms']:.1f} ms   p95 {lat['p95_ms']:.1f} ms   p99 {lat['p99_ms']:.1f} ms   "
            f"max {lat['max_ms']:.1f} ms"
        )
        st = lat["stages_p50_ms"]
        print(
            f"  p50 by stage: commit→fan-out {st['commit_to_fan_out']} ms, fan-out→job start "
            f"{st['fan_out_to_job_start']} ms, job start→arrival {st['job_start_to_arrival']} ms"
        )
        verdict = "PASS" if lat["p50_ms"] < LATENCY_P50_TARGET_MS else "MISS"
        print(f"  p50 {lat['p50_ms']:.1f} ms   target < {LATENCY_P50_TARGET_MS:g} ms   {verdict}")
        verdicts.append(verdict)
    return verdicts


def package_facts() -> dict[str, str | None]:
    """Versions on the delivery path. httpcore retries `import sniffio` on every lock and event it
    creates when sniffio is missing (anyio ≥ 4.11 no longer brings it), so its presence is noted."""
    facts: dict[str, str | None] = {}
    for name in ("httpx", "httpx-aiohttp", "aiohttp", "httpcore", "sqlalchemy", "asyncpg", "pgqueuer", "uvloop"):
        try:
            facts[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts[name] = None
    return facts


def run(args: argparse.Namespace, workdir: Path) -> int:
    started = datetime.now(UTC)
    print(f"guanxi webhooks bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    # The bench registers endpoints at 127.0.0.1 through the service's own validation.
    os.environ["GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "true"
    receiver_port = free_port()
    setup = prepare(receiver_port, args.endpoints)
    print(f"database {setup.server}: {DATABASE}; {len(setup.secrets)} endpoint(s) at 127.0.0.1:{receiver_port}")
    receiver_argv = script_argv("--serve-receiver", str(receiver_port), "--receiver-delay", str(args.receiver_delay))
    with running("receiver", receiver_argv, base_env(), workdir / "receiver.log", receiver_port, "/healthz") as rec:
        out = asyncio.run(run_scenarios(setup, args, workdir, rec))
    verdicts = print_table(out, args)
    result = {
        "bench": "webhooks",
        "date": started.isoformat(),
        "machine": machine_facts(),
        "postgresql": setup.postgres_version,
        "database": setup.server,
        "targets": {"sustained_per_s": THROUGHPUT_TARGET, "latency_p50_ms": LATENCY_P50_TARGET_MS},
        "packages": package_facts(),
        "settings": {
            "events": args.events,
            "insert_batch": args.insert_batch,
            "endpoints": args.endpoints,
            "workers": args.workers,
            "worker_concurrency": concurrency_of(args),
            "latency_events": args.latency_events,
            "latency_rate_per_s": args.latency_rate,
            "wrk_duration_s": args.duration,
            "wrk_threads": args.threads,
            "worker_command": args.worker_command or "guanxi worker",
            "floor_clients": args.floor_clients,
            "receiver_delay_s": args.receiver_delay,
            "slow_rate_per_s": args.slow_rate,
            "slow_seconds": args.slow_seconds,
            "slow_burst": args.slow_burst,
        },
        **out,
        "verdicts": verdicts,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"webhooks-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"\nresults in {path.relative_to(ROOT)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (uvicorn[standard] brings it): the receiver should be the fast part."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_receiver is not None:
        _run_loop(serve_receiver(args.serve_receiver, args.receiver_delay))
        return 0
    if args.serve_floor_worker is not None:
        asyncio.run(serve_floor_worker(args.serve_floor_worker, concurrency_of(args), args.floor_client))
        return 0
    if not args.skip_floor:
        try:
            require_wrk()
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="guanxi-bench-webhooks-"))
    try:
        code = run(args, workdir)
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        print(f"logs kept in {workdir}", file=sys.stderr)
        return 2
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
