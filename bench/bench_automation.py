#!/usr/bin/env python3
"""Automation rules bench (issue "Outreach": a date trigger over 1M customers enqueues in < 30 s, a
re-run creates nothing; a rule preview over 1M customers < 1 s).

Seeds `guanxi_bench_automation` (bench/seed.py: 1,000,000 customers; --small 100,000) and an admin
(the tasks' fallback assignee). Measures, as the worker and the API run them:

  1. A date rule for today's fixed day (every customer's occasion, offset 0) with one create_task
     action, as the worker's date tick runs it (`automation.run_dates`: ranges of 20,000 customers,
     two at a time, each committed), one run record and one task per customer. Floor: the
     same work hand-written as one statement (runs INSERT ... SELECT ... ON CONFLICT DO NOTHING
     RETURNING, and the tasks of the rows it returned) through asyncpg for a second rule, from the
     same state. Target < 30 s.
  2. Its re-run (the next date tick): records and creates nothing. Target: nothing created.
  3. `triggers.preview` of a schedule rule whose audience is city + tag (count + first 20 names), 20
     times. Floor: the hand-written count and page through asyncpg. Target p95 < 1 s.
  4. A date rule over that audience with one `send_message` action (an email template rendered per
     customer), as the worker runs it: each message through the one message writer (consent,
     suppression, caps, dedupe key, the interaction on the timeline and its event), which the
     action calls once per range (`messages.enqueue_many`). Floor: the run records, the messages
     (content built in SQL), their interactions and the interactions' events in one hand-written
     statement. The issue's target is 1M customers in < 30 s; this measures the rate on the audience.

Each run deletes what the previous one made (untimed). Results also go to
bench/results/automation-<UTC timestamp>.json.

    .venv/bin/python bench/bench_automation.py
    .venv/bin/python bench/bench_automation.py --small
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
from zoneinfo import ZoneInfo

import asyncpg
from harness import ROOT, BenchError, machine_facts, percentile
from seed import WorkspacePlan, ensure_workspace, prepare_database
from value_seed import RESULTS_DIR

from app.core.access import system_caller
from app.core.db import create_engine, create_sessionmaker
from app.core.ids import new_id
from app.core.settings import get_settings
from app.models import AutomationRule
from app.schemas.message_template import MessageTemplateIn
from app.schemas.outreach import EmailChannelIn
from app.services.automation import triggers
from app.services.outreach import channels, message_templates
from app.workers import automation

DATABASE = "guanxi_bench_automation"
SLUG = "automation"
DATE_TARGET_S = 30.0
PREVIEW_TARGET_MS = 1000.0
PREVIEW_ROUNDS = 20
AUDIENCE = {
    "and": [{"field": "city", "op": "eq", "value": "深圳市"}, {"field": "tags", "op": "contains", "value": "vip"}]
}

FLOOR_SQL = """
WITH new_runs AS (
    INSERT INTO automation_runs (workspace_id, id, rule_id, trigger_key, customer_id, occasion, depth, outcome,
                                 actions, ran_at)
    SELECT $1, guanxi_uuid7(), $2, $3::text, c.id, $4::date, 1, 'ok',
           '[{"index": 0, "type": "create_task", "outcome": "ok"}]'::jsonb, now()
    FROM customers c WHERE c.workspace_id = $1 AND c.deleted_at IS NULL
    ON CONFLICT DO NOTHING
    RETURNING customer_id, occasion
)
INSERT INTO tasks (workspace_id, id, customer_id, title, kind, assignee_id, due_at, priority, status, origin,
                   created_at, updated_at, version)
SELECT $1, guanxi_uuid7(), r.customer_id, 'floor', 'care', coalesce(c.owner_id, $5),
       r.occasion::timestamp AT TIME ZONE 'Asia/Shanghai', 'normal', 'open', 'automation', now(), now(), 1
FROM new_runs r JOIN customers c ON c.workspace_id = $1 AND c.id = r.customer_id
"""

FLOOR_MESSAGES_SQL = """
WITH new_runs AS (
    INSERT INTO automation_runs (workspace_id, id, rule_id, trigger_key, customer_id, occasion, depth, outcome,
                                 actions, ran_at)
    SELECT $1, guanxi_uuid7(), $2, $3::text, c.id, $4::date, 1, 'ok',
           '[{"index": 0, "type": "send_message", "outcome": "queued"}]'::jsonb, now()
    FROM customers c
    WHERE c.workspace_id = $1 AND c.deleted_at IS NULL AND c.city = $5 AND c.tags && ARRAY[$6]::text[]
      AND cardinality(c.emails) > 0
    ON CONFLICT DO NOTHING
    RETURNING customer_id, trigger_key
),
sent AS (
    INSERT INTO messages (workspace_id, id, customer_id, channel_id, purpose, status, recipient, content, dedupe_key,
                          source, actor, send_after, attempts, created_at, updated_at)
    SELECT $1, guanxi_uuid7(), r.customer_id, $7, 'transactional', 'queued', c.emails[1],
           jsonb_build_object('subject', c.name || '，生日快乐', 'body', '亲爱的' || c.name || '：优惠码 BDAY'),
           'automation:' || $2 || ':' || r.trigger_key || ':' || r.customer_id || ':0', 'automation:' || $2,
           '{"type": "automation"}'::jsonb, now(), 0, now(), now()
    FROM new_runs r JOIN customers c ON c.workspace_id = $1 AND c.id = r.customer_id
    RETURNING id, customer_id, content
),
logged AS (
    INSERT INTO interactions (workspace_id, id, customer_id, channel, direction, occurred_at, subject, content,
                              source, external_id, created_at, updated_at, version)
    SELECT $1, guanxi_uuid7(), s.customer_id, 'email', 'outbound', now(), s.content ->> 'subject',
           s.content ->> 'body', 'outreach', 'message:' || s.id, now(), now(), 1
    FROM sent s
    RETURNING id, customer_id, subject, content, external_id
)
INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data, published_at)
SELECT $1, guanxi_uuid7(), 'interaction.created', now(), '{"type": "automation"}'::jsonb,
       jsonb_build_object('id', l.id, 'customer_id', l.customer_id, 'subject', l.subject, 'content', l.content,
                          'external_id', l.external_id),
       now()
FROM logged l
"""

FLOOR_PREVIEW_SQL = """
WITH affected AS (
    SELECT id FROM customers
    WHERE workspace_id = $1 AND deleted_at IS NULL AND city = $2 AND tags && ARRAY[$3]::text[]
)
SELECT c.id, c.name, (SELECT count(*) FROM affected) AS total
FROM (SELECT id FROM affected ORDER BY id LIMIT 20) p JOIN customers c ON c.workspace_id = $1 AND c.id = p.id
ORDER BY p.id
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="100,000 customers")
    parser.add_argument("--reseed", action="store_true", help=f"drop {DATABASE} and seed it again")
    args, _ = parser.parse_known_args(argv)
    if args.small:
        args.customers = 100_000
    return args


async def prepare(dsn: str, customers: int) -> tuple[uuid.UUID, uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        ws = await ensure_workspace(conn, WorkspacePlan(SLUG, "Bench automation", customers, 0))
        admin = await conn.fetchval(
            "SELECT id FROM users WHERE workspace_id = $1 AND role = 'admin' LIMIT 1", ws.workspace_id
        )
        if admin is None:
            admin = new_id()
            await conn.execute(
                "INSERT INTO users (workspace_id, id, email, email_key, name, role, password_hash, created_at, "
                "updated_at) VALUES ($1, $2, 'admin@bench.test', 'admin@bench.test', 'Admin', 'admin', 'x', now(), "
                "now())",
                ws.workspace_id,
                admin,
            )
        await cleanup(conn, ws.workspace_id)
        for table in ("customers", "users", "tasks", "automation_runs"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        return ws.workspace_id, admin
    finally:
        await conn.close()


async def cleanup(conn: asyncpg.Connection, ws: uuid.UUID) -> None:
    # Tasks before interactions: a task may name an interaction, and with a million tasks each
    # deleted interaction's foreign key check would scan them.
    for table in ("tasks", "messages", "channels", "message_template_revisions", "message_templates",
                  "automation_runs", "automation_rules"):  # fmt: skip
        await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1", ws)
    await conn.execute("DELETE FROM interactions WHERE workspace_id = $1 AND source = 'outreach'", ws)
    await conn.execute("DELETE FROM outbox_events WHERE workspace_id = $1 AND type = 'interaction.created'", ws)


async def messages_scenario(
    sessions: Any, conn: asyncpg.Connection, ws: uuid.UUID, trigger: dict[str, Any], now: datetime
) -> dict[str, Any]:
    ctx = system_caller(ws)
    async with sessions() as session:
        channel = await channels.create(
            session,
            ctx,
            EmailChannelIn.model_validate(
                {"kind": "email", "name": "bench", "secrets": {"password": "bench"},
                 "settings": {"host": "127.0.0.1", "port": 2525, "tls": "none", "from_address": "crm@bench.test"}}
            ),
        )  # fmt: skip
        template = await message_templates.create(
            session,
            ctx,
            MessageTemplateIn.model_validate(
                {"name": "生日", "channel": "email", "subject": "{{ customer.name }}，生日快乐",
                 "body": "亲爱的{{ customer.name }}：优惠码 {{ vars.coupon }}", "variables": ["coupon"]}
            ),
        )  # fmt: skip
        await session.commit()
    await conn.execute("UPDATE automation_rules SET active = false WHERE workspace_id = $1", ws)
    floor_rule = _rule(ws, {**trigger, "audience": AUDIENCE}, now)
    async with sessions() as session:
        session.add(floor_rule)
        await session.commit()
    today = now.astimezone(ZoneInfo("Asia/Shanghai")).date()
    started = time.perf_counter()
    async with conn.transaction():
        floor = await conn.execute(
            FLOOR_MESSAGES_SQL, ws, floor_rule.id, str(today.year), today, "深圳市", "vip", channel.id
        )
    floor_s = time.perf_counter() - started
    await conn.execute("UPDATE automation_rules SET active = false WHERE id = $1", floor_rule.id)
    rule = _rule(ws, {**trigger, "audience": AUDIENCE}, now)
    rule.actions = [{"type": "send_message", "channel_id": str(channel.id), "template_id": str(template["id"]),
                     "purpose": "transactional", "variables": {"coupon": "BDAY"}}]  # fmt: skip
    async with sessions() as session:
        session.add(rule)
        await session.commit()
    started = time.perf_counter()
    runs = await automation.run_dates(sessions, now=datetime.now(UTC))
    service_s = time.perf_counter() - started
    queued = await conn.fetchval("SELECT count(*) FROM messages WHERE workspace_id = $1 AND source = $2", ws,
                                 f"automation:{rule.id}")  # fmt: skip
    return {
        "floor_seconds": round(floor_s, 2),
        "floor_messages": int(floor.split()[-1]),
        "service_seconds": round(service_s, 2),
        "runs": runs,
        "messages": queued,
        "messages_per_second": round(queued / service_s, 1) if service_s else None,
    }


def _rule(ws: uuid.UUID, trigger: dict[str, Any], now: datetime) -> AutomationRule:
    return AutomationRule(
        workspace_id=ws,
        id=new_id(),
        name="bench",
        active=True,
        trigger_kind=trigger["kind"],
        trigger=trigger,
        actions=[{"type": "create_task", "title": "节日问候", "kind": "care", "priority": "normal",
                  "due_in_days": 0, "assignee_id": None}],
        created_at=now,
        updated_at=now,
        version=1,
    )  # fmt: skip


async def run(dsn: str, url: str, ws: uuid.UUID, admin: uuid.UUID) -> dict[str, Any]:
    engine = create_engine(url, get_settings())
    sessions = create_sessionmaker(engine)
    conn = await asyncpg.connect(dsn)
    out: dict[str, Any] = {}
    try:
        now = datetime.now(UTC)
        today = now.astimezone(ZoneInfo("Asia/Shanghai")).date()
        trigger = {"kind": "date", "date": "fixed", "month": today.month, "day": today.day, "calendar": "gregorian",
                   "offset_days": 0, "field_key": None, "audience": None}  # fmt: skip
        floor_rule = _rule(ws, trigger, now)
        async with sessions() as session:
            session.add(floor_rule)
            await session.commit()
        started = time.perf_counter()
        async with conn.transaction():
            tasks = await conn.execute(FLOOR_SQL, ws, floor_rule.id, str(today.year), today, admin)
        floor_s = time.perf_counter() - started
        out["floor"] = {"seconds": round(floor_s, 2), "tasks": int(tasks.split()[-1])}
        print(f"  floor: {out['floor']}")
        await conn.execute("UPDATE automation_rules SET active = false WHERE id = $1", floor_rule.id)
        await conn.execute("VACUUM (ANALYZE) automation_runs")
        await conn.execute("VACUUM (ANALYZE) tasks")

        rule = _rule(ws, trigger, now)
        async with sessions() as session:
            session.add(rule)
            await session.commit()
        for label in ("date rule", "re-run"):
            started = time.perf_counter()
            made = await automation.run_dates(sessions, now=datetime.now(UTC))
            seconds = time.perf_counter() - started
            made_tasks = await conn.fetchval(
                "SELECT count(*) FROM tasks WHERE workspace_id = $1 AND title = $2", ws, rule.actions[0]["title"]
            )
            out[label] = {"seconds": round(seconds, 2), "runs": made, "tasks_in_total": made_tasks}
            print(f"  {label}: {out[label]}")

        preview_rule = _rule(ws, {"kind": "schedule", "cron": "0 9 * * *", "audience": AUDIENCE}, now)
        ctx = system_caller(ws)
        service_ms: list[float] = []
        floor_ms: list[float] = []
        count = floor_count = 0
        for _ in range(PREVIEW_ROUNDS):
            started = time.perf_counter()
            async with sessions() as session:
                count, _rows = await triggers.preview(session, ctx, preview_rule, limit=20, now=now)
            service_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            rows = await conn.fetch(FLOOR_PREVIEW_SQL, ws, "深圳市", "vip")
            floor_ms.append((time.perf_counter() - started) * 1000)
            floor_count = int(rows[0]["total"]) if rows else 0
        if count != floor_count:
            raise BenchError(f"the preview counted {count}, the floor {floor_count}")
        out["preview"] = {
            "count": count,
            "service_p50_ms": round(percentile(service_ms, 50), 1),
            "service_p95_ms": round(percentile(service_ms, 95), 1),
            "floor_p50_ms": round(percentile(floor_ms, 50), 1),
            "floor_p95_ms": round(percentile(floor_ms, 95), 1),
        }
        print(f"  preview: {out['preview']}")
        out["messages"] = await messages_scenario(sessions, conn, ws, trigger, now)
        print(f"  messages: {out['messages']}")
        await cleanup(conn, ws)
    finally:
        await conn.close()
        await engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    os.chdir(ROOT)
    args = parse_args(argv)
    started = datetime.now(UTC)
    print(f"guanxi automation bench, {started:%Y-%m-%d %H:%M:%S} UTC, {args.customers:,} customers")
    try:
        db = prepare_database(recreate=args.reseed, database=DATABASE)
        seed_started = time.perf_counter()
        ws, admin = asyncio.run(prepare(db.dsn, args.customers))
        print(f"data ready in {time.perf_counter() - seed_started:.1f} s")
        out = asyncio.run(run(db.dsn, db.url, ws, admin))
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 2
    date_s, floor_s = out["date rule"]["seconds"], out["floor"]["seconds"]
    met = "met" if date_s < DATE_TARGET_S else "MISS"
    print(f"\ndate rule: {date_s:.1f} s (floor {floor_s:.1f} s, ratio {date_s / floor_s:.2f}), target < 30 s: {met}")
    print(f"re-run: {out['re-run']['seconds']:.1f} s, {out['re-run']['runs']} runs")
    preview = out["preview"]
    met = "met" if preview["service_p95_ms"] < PREVIEW_TARGET_MS else "MISS"
    print(
        f"preview p95: {preview['service_p95_ms']:.0f} ms (floor {preview['floor_p95_ms']:.0f} ms), target < 1 s: {met}"
    )
    sent = out["messages"]
    print(
        f"send_message: {sent['messages']:,} messages in {sent['service_seconds']:.1f} s, "
        f"{sent['messages_per_second']}/s (floor {sent['floor_seconds']:.2f} s, "
        f"ratio {sent['service_seconds'] / sent['floor_seconds']:.1f})"
    )
    result = {"bench": "automation", "date": started.isoformat(), "machine": machine_facts(),
              "customers": args.customers, **out}  # fmt: skip
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"automation-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"results in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
