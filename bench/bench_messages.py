#!/usr/bin/env python3
"""Messages bench: queued SMS sent through `guanxi worker` processes to a local Alibaba Cloud SMS
stand-in, against a raw floor in the same run.

The targets (issue 23): ≥ 1,000 messages/s with 2 workers; commit → send start p50 < 500 ms.

Uses its own database, `guanxi_bench_messages` (embedded PostgreSQL, or DATABASE_URL's server),
recreated and migrated, with one workspace of --messages seeded customers and one `sms_aliyun`
channel whose endpoint is the stand-in (bench/sms_stand_in.py, aiohttp, its own process: answers
`Code: OK` at once and records each message's arrival). Scenarios:

  1. floor: --workers processes of raw asyncpg + aiohttp (no ORM, no job queue) that claim 50 queued
     messages with one UPDATE ... SKIP LOCKED, sign and POST each (the service's own signature
     function), and record them with one UPDATE; messages/s over the arrivals.
  2. throughput: every customer with a phone gets a queued message in one INSERT while --workers
     `guanxi worker` processes run; messages/s = sent / (last − first arrival at the stand-in).
  3. latency: with the queue idle, --latency-messages single-message transactions (each notifying
     the workers, as the API does) at --latency-rate per second; latency = arrival at the stand-in −
     the moment COMMIT returned.

Prints each, the ratio of the service to the floor, and CPU seconds of the workers. Results also go
to bench/results/messages-<UTC timestamp>.json.

    .venv/bin/python bench/bench_messages.py
    .venv/bin/python bench/bench_messages.py --messages 5000 --latency-messages 30
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
from urllib.parse import urlencode

import aiohttp
import asyncpg
import httpx
from harness import ROOT, ServerProcess, free_port, machine_facts, percentile
from seed import BenchDatabase, WorkspacePlan, ensure_workspace, prepare_database

from app.core.secret_box import box
from app.core.settings import get_settings
from app.services.outreach.providers.aliyun_sms import national, signature

DATABASE = "guanxi_bench_messages"
CONTENT = '{"template_code": "SMS_100001", "template_params": {"name": "张伟", "code": "4321"}}'
QUEUE_SQL = """
INSERT INTO messages (workspace_id, id, customer_id, channel_id, purpose, status, recipient, content, dedupe_key,
                      source, actor, send_after, attempts, created_at, updated_at)
SELECT c.workspace_id, guanxi_uuid7(), c.id, $2, 'transactional', 'queued', c.phones[1], $3::jsonb,
       $4 || c.id::text, 'bench', '{"type": "system", "id": null}'::jsonb, now(), 0, now(), now()
FROM customers c WHERE c.workspace_id = $1 AND cardinality(c.phones) > 0
"""
CLAIM_SQL = """
UPDATE messages m SET status = 'sending', attempts = attempts + 1, locked_until = now() + interval '5 minutes'
FROM (SELECT workspace_id, id FROM messages WHERE status = 'queued' LIMIT 50 FOR UPDATE SKIP LOCKED) t
WHERE m.workspace_id = t.workspace_id AND m.id = t.id
RETURNING m.workspace_id, m.id, m.recipient, m.content
"""
RECORD_SQL = """
UPDATE messages m SET status = 'sent', sent_at = now(), locked_until = NULL, provider_message_id = t.biz
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(workspace_id, id, biz)
WHERE m.workspace_id = t.workspace_id AND m.id = t.id
"""


def _stand_in_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


async def _channel(conn: asyncpg.Connection, workspace_id: uuid.UUID, port: int) -> uuid.UUID:
    channel_id = uuid.uuid4()
    settings = {"access_key_id": "LTAI5tBench", "sign_name": "关系科技", "endpoint": _stand_in_url(port),
                "region": "cn-hangzhou"}  # fmt: skip
    await conn.execute(
        "INSERT INTO channels (workspace_id, id, kind, name, settings, sealed_secrets, callback_token, created_at, "
        "updated_at, version) VALUES ($1, $2, 'sms_aliyun', 'bench', $3::jsonb, $4, $5, now(), now(), 1)",
        workspace_id,
        channel_id,
        json.dumps(settings),
        box(get_settings()).seal({"access_key_secret": "bench-secret"}),
        uuid.uuid4().hex,
    )
    return channel_id


async def _arrivals(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        return dict((await client.get(_stand_in_url(port) + "stats")).json())


async def _received(port: int) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        return dict((await client.get(_stand_in_url(port) + "received")).json())


async def _forget(port: int) -> None:
    async with httpx.AsyncClient() as client:
        await client.delete(_stand_in_url(port) + "stats")


async def _floor_process(dsn: str, port: int, until_empty: asyncio.Event) -> int:
    sent = 0
    conn = await asyncpg.connect(dsn)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
        while True:
            rows = await conn.fetch(CLAIM_SQL)
            if not rows:
                break

            async def post(row: asyncpg.Record) -> str:
                content = json.loads(row["content"])
                params = {"AccessKeyId": "LTAI5tBench", "Action": "SendSms", "Format": "JSON",
                          "OutId": str(row["id"]), "PhoneNumbers": national(row["recipient"]),
                          "RegionId": "cn-hangzhou", "SignName": "关系科技", "SignatureMethod": "HMAC-SHA1",
                          "SignatureNonce": str(uuid.uuid4()), "SignatureVersion": "1.0",
                          "TemplateCode": content["template_code"],
                          "TemplateParam": json.dumps(content["template_params"], ensure_ascii=False),
                          "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "Version": "2017-05-25"}  # fmt: skip
                params["Signature"] = signature(params, "POST", "bench-secret")
                async with http.post(
                    _stand_in_url(port),
                    data=urlencode(params),
                    headers={"content-type": "application/x-www-form-urlencoded"},
                ) as response:
                    return str((await response.json())["BizId"])

            ids = await asyncio.gather(*(post(row) for row in rows))
            await conn.execute(RECORD_SQL, [r["workspace_id"] for r in rows], [r["id"] for r in rows], ids)
            sent += len(rows)
    await conn.close()
    until_empty.set()
    return sent


def _floor_main(dsn: str, port: int) -> None:
    asyncio.run(_floor_process(dsn, port, asyncio.Event()))


async def _wait_done(conn: asyncpg.Connection, workspace_id: uuid.UUID, expected: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE workspace_id = $1 AND status NOT IN ('queued', 'sending')",
            workspace_id,
        )
        if done >= expected:
            return
        if done != last:
            last, since = done, time.monotonic()
        elif time.monotonic() - since > 30:
            raise RuntimeError(f"messages stopped moving at {done} of {expected}")
        await asyncio.sleep(0.2)
    raise RuntimeError("the bench ran out of time")


def _rate(arrivals: dict[str, float]) -> float:
    times = sorted(arrivals.values())
    return len(times) / (times[-1] - times[0]) if len(times) > 1 else 0.0


async def run(args: argparse.Namespace, database: BenchDatabase) -> dict[str, Any]:
    conn = await asyncpg.connect(database.dsn)
    workspace = await ensure_workspace(conn, WorkspacePlan("bench-messages", "Messages bench", args.messages, 11))
    port = free_port()
    logs = ROOT / "bench" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    stand_in = ServerProcess("stand-in", [sys.executable, "bench/sms_stand_in.py", str(port)], dict(os.environ),
                             logs / "messages-stand-in.log", port)  # fmt: skip
    stand_in.wait_healthy("/stats")
    results: dict[str, Any] = {"machine": machine_facts(), "args": vars(args), "at": datetime.now(UTC).isoformat()}
    try:
        channel_id = await _channel(conn, workspace.workspace_id, port)
        expected = int(await conn.fetchval(
            "SELECT count(*) FROM customers WHERE workspace_id = $1 AND cardinality(phones) > 0", workspace.workspace_id
        ))  # fmt: skip

        # 1. floor
        await conn.execute(QUEUE_SQL, workspace.workspace_id, channel_id, CONTENT, "floor:")
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); from bench_messages import _floor_main; "
                f"_floor_main({database.dsn!r}, {port})",
            )
            for _ in range(args.workers)
        ]  # fmt: skip
        for process in processes:
            await process.wait()
        floor_rate = _rate(await _arrivals(port))
        results["floor"] = {"messages": expected, "per_second": round(floor_rate)}
        print(f"floor: {expected} messages, {floor_rate:,.0f}/s with {args.workers} raw processes")
        await conn.execute("DELETE FROM messages WHERE workspace_id = $1", workspace.workspace_id)
        await _forget(port)

        # 2. throughput
        env = {**os.environ, "DATABASE_URL": database.url, "GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
               "GUANXI_LOG_LEVEL": "WARNING"}  # fmt: skip
        workers = [
            ServerProcess(f"worker {i}", [str(ROOT / ".venv" / "bin" / "guanxi"), "worker"], env,
                          logs / f"messages-worker-{i}.log", 0)
            for i in range(args.workers)
        ]  # fmt: skip
        try:
            await asyncio.sleep(args.worker_start_seconds)
            cpu_before = sum(w.cpu_seconds() for w in workers)
            async with conn.transaction():
                await conn.execute(QUEUE_SQL, workspace.workspace_id, channel_id, CONTENT, "run:")
                await conn.execute("SELECT pg_notify('guanxi_outbox', '')")
            await _wait_done(conn, workspace.workspace_id, expected, limit=600)
            arrivals = await _arrivals(port)
            service_rate = _rate(arrivals)
            cpu = sum(w.cpu_seconds() for w in workers) - cpu_before
            statuses = dict(await conn.fetch(
                "SELECT status, count(*) FROM messages WHERE workspace_id = $1 GROUP BY 1", workspace.workspace_id
            ))  # fmt: skip
            duplicates = sum(n - 1 for n in (await _received(port)).values())
            results["service"] = {"messages": expected, "per_second": round(service_rate), "statuses": statuses,
                                  "worker_cpu_ms_per_message": round(1000 * cpu / expected, 3)}  # fmt: skip
            print(f"service: {expected} messages, {service_rate:,.0f}/s with {args.workers} `guanxi worker`s "
                  f"({service_rate / floor_rate:.0%} of the floor); statuses {statuses}; "
                  f"worker CPU {1000 * cpu / expected:.2f} ms/message; "
                  f"duplicates at the stand-in: {duplicates}")  # fmt: skip

            # 3. latency
            await _forget(port)
            committed: dict[str, float] = {}
            customers = await conn.fetch(
                "SELECT id, phones[1] AS phone FROM customers WHERE workspace_id = $1 AND cardinality(phones) > 0 "
                "LIMIT $2", workspace.workspace_id, args.latency_messages,
            )  # fmt: skip
            for customer in customers:
                message_id = uuid.uuid4()
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO messages (workspace_id, id, customer_id, channel_id, purpose, status, recipient, "
                        "content, dedupe_key, source, actor, send_after, attempts, created_at, updated_at) VALUES "
                        "($1, $2, $3, $4, 'transactional', 'queued', $5, $6::jsonb, $7, 'bench', "
                        "'{\"type\": \"system\", \"id\": null}'::jsonb, now(), 0, now(), now())",
                        workspace.workspace_id, message_id, customer["id"], channel_id, customer["phone"], CONTENT,
                        f"latency:{message_id}",
                    )  # fmt: skip
                    await conn.execute("SELECT pg_notify('guanxi_outbox', '')")
                committed[str(message_id)] = time.time()
                await asyncio.sleep(1 / args.latency_rate)
            await asyncio.sleep(2)
            arrivals = await _arrivals(port)
            latencies = [1000 * (arrivals[k] - t) for k, t in committed.items() if k in arrivals]
            results["latency_ms"] = {"p50": round(percentile(latencies, 50), 1),
                                     "p95": round(percentile(latencies, 95), 1),
                                     "arrived": len(latencies), "sent": len(committed)}  # fmt: skip
            print(f"latency commit → arrival: p50 {percentile(latencies, 50):.0f} ms, "
                  f"p95 {percentile(latencies, 95):.0f} ms ({len(latencies)} of {len(committed)} arrived)")  # fmt: skip
        finally:
            for worker in workers:
                worker.stop()
    finally:
        stand_in.stop()
        await conn.close()
    out = logs / f"messages-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--latency-rate", type=float, default=20.0)
    parser.add_argument("--worker-start-seconds", type=float, default=5.0)
    args, _ = parser.parse_known_args()
    asyncio.run(run(args, prepare_database(recreate=True, database=DATABASE)))


if __name__ == "__main__":
    main()
