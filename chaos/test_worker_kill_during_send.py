"""A worker killed with SIGKILL in the middle of a large send (issue 23): no message reaches the
provider twice, and every message ends `sent`, `failed`, `delivered` or `unknown`, with no more
`unknown` than the messages in flight when the worker died.

The real processes on the suite's own PostgreSQL: the API (`guanxi serve`), two `guanxi worker`s
and, after the kill, a replacement; the provider is the messages bench's Alibaba Cloud SMS stand-in
(bench/sms_stand_in.py, its own process), which counts every message reference it receives.
Customers are seeded set-based (bench/seed.py); the messages are created through the one writer,
`messages.enqueue_many`, the first ones through `POST /messages`. GUANXI_CHAOS_MESSAGES sets how many
(100,000 by default)."""

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.core.access import Scope, system_caller
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import get_settings
from app.schemas.outreach import MessageContent
from app.services.identity import api_keys
from app.services.outreach import messages
from bench.harness import ServerProcess, free_port
from bench.seed import WorkspacePlan, ensure_workspace
from chaos.cluster import Cluster
from chaos.conftest import DATABASE, start_worker

MESSAGES = int(os.environ.get("GUANXI_CHAOS_MESSAGES", "100000"))
# Through HTTP, before the rest through the writer in-process (100k HTTP requests would be most of the run).
OVER_HTTP = 100
WRITERS = 4
COMMIT_EVERY = 250
# The stand-in holds each answer this long, so that a kill finds requests on the wire.
ANSWER_SECONDS = 0.05
# A short send time limit, so that the dead worker's leases (the limit x 13 + 60 s) run out soon.
SEND_TIMEOUT_SECONDS = 2
KILL_AT_SENT_SHARE = 0.3
SETTLE_SECONDS = 1200.0
FINAL = {"sent", "failed", "delivered", "unknown"}
CONTENT = MessageContent(template_code="SMS_100001", template_params={"name": "张伟", "code": "4321"})


async def _workspace(cluster: Cluster) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A workspace with MESSAGES live customers that have a phone (the seed gives most a phone)."""
    conn = await asyncpg.connect(cluster.dsn(DATABASE))
    try:
        seeded = await ensure_workspace(
            conn, WorkspacePlan(f"chaos-send-{uuid.uuid4().hex[:8]}", "Chaos send", MESSAGES * 3 // 2 + 100, 23)
        )
        rows = await conn.fetch(
            "SELECT id FROM customers WHERE workspace_id = $1 AND cardinality(phones) > 0 AND deleted_at IS NULL "
            "ORDER BY id LIMIT $2",
            seeded.workspace_id,
            MESSAGES,
        )
        await conn.execute("VACUUM (ANALYZE) customers")
    finally:
        await conn.close()
    assert len(rows) == MESSAGES, f"the seed gave {len(rows)} customers with a phone, not {MESSAGES}"
    return seeded.workspace_id, [row["id"] for row in rows]


async def _api_key(cluster: Cluster, workspace_id: uuid.UUID) -> str:
    engine = create_engine(cluster.url(DATABASE), get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            _, key = await api_keys.issue(
                session,
                workspace_id,
                name="chaos send",
                scopes=[Scope.OUTREACH_ADMIN, Scope.MESSAGES_SEND, Scope.CUSTOMERS_READ, Scope.CUSTOMERS_PII],
            )
            await session.commit()
    finally:
        await engine.dispose()
    return key


async def _enqueue_all(cluster: Cluster, workspace_id: uuid.UUID, channel_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    """`messages.enqueue_many` (the writer a large automated send uses), WRITERS sessions side by side,
    COMMIT_EVERY customers a call and a commit."""
    engine = create_engine(cluster.url(DATABASE), get_settings())
    sessions = create_sessionmaker(engine)
    ctx = system_caller(workspace_id)

    async def writer(share: list[uuid.UUID]) -> None:
        for start in range(0, len(share), COMMIT_EVERY):
            batch = share[start : start + COMMIT_EVERY]
            async with sessions() as session:
                done = await messages.enqueue_many(
                    session,
                    ctx,
                    recipients={customer_id: f"chaos:{customer_id}" for customer_id in batch},
                    channel_id=channel_id,
                    purpose="transactional",
                    content=CONTENT,
                    source="chaos",
                )
                assert done.created == set(batch) and not done.refused, done.refused
                await session.commit()

    try:
        await asyncio.gather(*(writer(ids[n::WRITERS]) for n in range(WRITERS)))
    finally:
        await engine.dispose()


async def _statuses(conn: asyncpg.Connection, workspace_id: uuid.UUID) -> Counter[str]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM messages WHERE workspace_id = $1 GROUP BY 1", workspace_id
    )
    return Counter({row["status"]: row["n"] for row in rows})


async def test_a_worker_killed_mid_send_leaves_no_duplicate_and_every_message_settled(
    cluster: Cluster, make_service: Callable[..., ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUANXI_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
    get_settings.cache_clear()
    logs = Path(tempfile.mkdtemp(prefix="guanxi-chaos-send-"))
    started = time.monotonic()
    workspace_id, customer_ids = await _workspace(cluster)
    key = await _api_key(cluster, workspace_id)
    seeded = time.monotonic()
    port = free_port()
    stand_in = ServerProcess(
        "stand-in",
        [sys.executable, "bench/sms_stand_in.py", str(port), str(ANSWER_SECONDS)],
        dict(os.environ),
        logs / "stand-in.log",
        port,
    )
    workers: list[ServerProcess] = []
    conn = await asyncpg.connect(cluster.dsn(DATABASE))
    try:
        stand_in.wait_healthy("/stats")
        service = make_service()
        async with httpx.AsyncClient(base_url=service.base_url, headers={"X-API-Key": key}, timeout=30) as http:
            settings = {"access_key_id": "LTAI5tChaos", "sign_name": "关系科技", "endpoint": f"{stand_in.base_url}/"}
            body = {"kind": "sms_aliyun", "name": "chaos", "settings": settings, "secrets": {"access_key_secret": "s"}}
            response = await http.post("/api/v1/channels", json=body)
            assert response.status_code == 201, response.text
            channel_id = uuid.UUID(response.json()["id"])
            for customer_id in customer_ids[:OVER_HTTP]:
                sent = await http.post(
                    "/api/v1/messages",
                    json={"customer_id": str(customer_id), "channel_id": str(channel_id), "purpose": "transactional",
                          "content": CONTENT.model_dump(exclude_none=True), "dedupe_key": f"chaos:{customer_id}"},
                )  # fmt: skip
                assert sent.status_code == 201, sent.text
        await _enqueue_all(cluster, workspace_id, channel_id, customer_ids[OVER_HTTP:])
        queued = time.monotonic()
        assert (await _statuses(conn, workspace_id))["queued"] == MESSAGES

        env = {"GUANXI_OUTREACH_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT_SECONDS)}
        workers += [start_worker(cluster, logs, f"worker-{n}", **env) for n in range(2)]
        while (await _statuses(conn, workspace_id))["sent"] < MESSAGES * KILL_AT_SENT_SHARE:
            assert all(w.process.poll() is None for w in workers), workers[0].log_tail()
            await asyncio.sleep(0.2)
        workers[0].process.kill()
        workers[0].process.wait(timeout=10)
        killed = time.monotonic()
        # What the dead worker claimed stays `sending`; a moment for a commit it had sent to land.
        await asyncio.sleep(1)
        at_kill = await _statuses(conn, workspace_id)
        in_flight = at_kill["sending"]
        workers.append(start_worker(cluster, logs, "worker-replacement", **env))

        while time.monotonic() - killed < SETTLE_SECONDS:
            now = await _statuses(conn, workspace_id)
            if now["queued"] + now["sending"] == 0:
                break
            await asyncio.sleep(1)
        settled = time.monotonic()
        final = await _statuses(conn, workspace_id)
        status_of = {
            str(row["id"]): row["status"]
            for row in await conn.fetch("SELECT id, status FROM messages WHERE workspace_id = $1", workspace_id)
        }
        async with httpx.AsyncClient(timeout=60) as client:
            received: dict[str, int] = (await client.get(f"{stand_in.base_url}/received")).json()
        alive = [w.process.poll() is None for w in workers[1:]]
    finally:
        await conn.close()
        for worker in workers:
            worker.stop()
        stand_in.stop()
    get_settings.cache_clear()
    logged = {w.name: w.log_path.read_text(errors="replace") for w in workers}

    duplicates = {ref: n for ref, n in received.items() if n > 1}
    print(f"\n  {MESSAGES:,} messages: customers seeded in {seeded - started:.0f} s, messages queued through")
    print(f"     the writer in {queued - seeded:.0f} s; a worker killed with {at_kill['sent']:,} sent and {in_flight}")
    print(f"     in flight; every message settled {settled - killed:.0f} s after the kill")
    print(f"     final {dict(final)}; at the stand-in {len(received):,} references, {len(duplicates)} more than once")
    print(f"     (logs in {logs})")
    assert not duplicates, f"sent twice: {list(duplicates.items())[:10]}"
    assert final["queued"] + final["sending"] == 0, f"not settled in {SETTLE_SECONDS:.0f} s: {dict(final)}"
    assert set(final) <= FINAL, dict(final)
    assert len(status_of) == MESSAGES
    assert set(received) <= set(status_of), "the stand-in received a reference that is no message"
    wrong = {ref: status_of[ref] for ref in received if status_of[ref] not in ("sent", "delivered", "unknown")}
    assert not wrong, f"received but recorded as {Counter(wrong.values())}"
    unreceived_sent = [ref for ref, status in status_of.items() if status == "sent" and ref not in received]
    assert not unreceived_sent, f"{len(unreceived_sent)} recorded as sent never reached the stand-in"
    assert final["unknown"] <= in_flight, f"{final['unknown']} unknown, {in_flight} in flight at the kill"
    assert all(alive), {name: text[-2000:] for name, text in logged.items()}
    for name, text in logged.items():
        assert "unhandled error" not in text, f"{name}:\n{text[-4000:]}"
