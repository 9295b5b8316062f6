#!/usr/bin/env python3
"""Tickets bench (issue "Feedback and complaint tickets"): "500k tickets: the at-risk list and the
service report each answer in < 200 ms p95; the breach job over all open tickets < 10 s."

Seeds `guanxi_bench_tickets` (embedded PostgreSQL, or DATABASE_URL's server) set-based: --customers
customers (seed.py's generator), --tickets tickets over the last 90 days (most resolved or closed,
~15% open and mostly recent; priorities, types, channels, categories, agents and teams; due times
from the default SLA policies, so some are overdue and some fall due within the next hour; first
response, resolution and closing times; CSAT on ~30% of the solved), their history (opened, first
reply, resolved, closed), --responses NPS answers, value tiers for every customer (half have one) and
10 segments (3-40% of the customers: the report breaks CSAT and NPS down by both); plus a small
second tenant. Seeded data is
reused while the sizes match and it is fresh (its clock is the seeding time: after --max-age-minutes
it is seeded again); --reseed forces it. Then, in one run:

  1. GET /api/v1/tickets?at_risk_within_minutes=60&limit=20 and GET /api/v1/reports/service (the
     default 30-day window) on `guanxi serve --no-demo --no-worker` with an admin API key, --requests
     sequential requests each after --warmup unmeasured ones: p50/p95/p99, target p95 < 200 ms.
     Floor: the same SQL raw through asyncpg on one connection (the statements as the service sends
     them, captured), and the service/floor ratio; for reference, the report computed from the tickets
     alone (without the daily figures), raw.
  2. What the daily figures (migration 0017) cost a write: one ticket resolved and reopened
     --requests times by autocommit UPDATEs with the figure triggers enabled, disabled, and enabled
     again; p50/p95 of each.
  3. The breach job: breach flags of the open tickets reset (and the previous run's breach history
     and events deleted, then VACUUM ANALYZE), then `tickets.mark_breaches(session)` + COMMIT timed,
     --breach-runs times; target < 10 s each (its UPDATE runs the figure triggers too).

Before each timed part it waits while another bench runs (--no-wait skips that). Results also go to
bench/results/tickets-<UTC timestamp>.json, with EXPLAIN (ANALYZE, BUFFERS) of the statements.
Flags meant for other benches (bench/run_all.py passes its arguments to all) are ignored.

    .venv/bin/python bench/bench_tickets.py            # full size (seeding takes a few minutes once)
    .venv/bin/python bench/bench_tickets.py --small    # 50k tickets in guanxi_bench_tickets_small, a quick run
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from harness import ROOT, BenchError, free_port, machine_facts, percentile, running
from seed import BenchDatabase, WorkspacePlan, ensure_workspace, prepare_database

TICKETS_DATABASE = "guanxi_bench_tickets"
MAIN_SLUG = "bench-tickets"
OTHER_SLUG = "bench-tickets-other"
SEED_VERSION = 3
LIST_P95_TARGET_MS = 200.0
REPORT_P95_TARGET_MS = 200.0
BREACH_TARGET_S = 10.0
AT_RISK_MINUTES = 60
LIST_PATH = "/api/v1/tickets"
REPORT_PATH = "/api/v1/reports/service"
OTHER_BENCHES = "bench_(webhooks|customers|value|segments|timeline)"
# The statuses BREACH_SQL looks at: a ticket waiting on the customer has its clock stopped.
BREACHABLE = ("new", "assigned", "in_progress")
OPEN = ("new", "assigned", "in_progress", "waiting_on_customer")
DAYS = 90

# (parent, children)
CATEGORIES: list[tuple[str, list[str]]] = [
    ("售前咨询", ["价格咨询", "产品选型", "活动规则"]),
    ("订单与配送", ["物流配送", "订单修改", "发票开具"]),
    ("售后服务", ["退换货", "售后维修", "安装预约", "产品质量"]),
    ("账户与会员", ["会员积分", "账单与支付", "网站与App"]),
]
# Weighted by repetition.
CHANNELS = (
    ["phone"] * 5 + ["wechat"] * 5 + ["web_form"] * 3 + ["email"] * 3 + ["chat"] * 2 + ["partner_api", "in_person"]
)
SUBJECTS = [
    "商品质量问题",
    "配送延误",
    "收到的商品破损",
    "申请退货退款",
    "发票信息有误",
    "会员积分未到账",
    "App 登录失败",
    "支付成功但订单未生成",
    "设备无法开机",
    "预约上门安装",
    "客服电话无人接听",
    "价格与宣传不符",
    "希望增加夜间配送",
    "咨询产品保修期",
    "修改收货地址",
    "感谢安装师傅的服务",
]
DETAILS = [
    "客户来电反映情况属实，已核对订单信息，请尽快处理并回复客户。",
    "客户通过微信留言，附有照片，情绪较为激动，需要优先跟进。",
    "客户表示此前已反馈过一次，但未得到答复，希望今天内有结果。",
    "已初步排查，疑似批次问题，需要质检部门协助确认。",
    "客户希望上门处理，时间方便在工作日晚上或周末。",
    "客户询问处理进度，并要求提供书面说明。",
    "系统日志显示当时有报错，已转技术支持排查。",
    "客户对处理方案基本认可，等待其确认。",
]
AGENTS = 24
TEAMS = ["一线客服组", "售后技术组", "投诉处理组"]

TICKETS_SQL = """
INSERT INTO tickets (
    workspace_id, id, number, customer_id, type, channel, subject, description, category_id, priority, status,
    assignee_id, team_id, attachments, escalated, tier, first_response_due_at, resolution_due_at, paused_at,
    response_minutes_left, resolution_minutes_left, first_responded_at, resolved_at, closed_at,
    first_response_breached, resolution_breached, csat_score, csat_comment, created_at, updated_at, version
)
SELECT
    $1, {id_expr}, s.i, m.id, s.type, s.channel, s.subject,
    s.subject || '。' || ($9::text[])[1 + s.h6 % {details}] || '（工单 #' || s.i || '）',
    s.category_id, s.priority, s.status,
    s.assignee_id, s.team_id, '{{}}'::jsonb, s.h7 / 100 % 100 < 3, m.tier,
    CASE WHEN NOT s.paused THEN s.fr_due END,
    CASE WHEN NOT s.paused THEN s.res_due END,
    s.paused_at,
    NULL,
    CASE WHEN s.paused THEN greatest(0, ceil(extract(epoch FROM s.res_due - s.paused_at) / 60))::int END,
    s.responded_at, s.resolved_at, s.closed_at,
    -- The flags as the breach job would have left them at seeding time.
    CASE WHEN s.responded_at IS NOT NULL THEN s.responded_at > s.fr_due ELSE s.fr_due < $10::timestamptz END,
    CASE WHEN s.resolved_at IS NOT NULL THEN s.resolved_at > s.res_due
         WHEN s.paused THEN s.res_due < s.paused_at
         ELSE s.res_due < $10::timestamptz END,
    s.csat_score,
    CASE WHEN s.csat_score <= 2 THEN '处理太慢，问题反复出现。'
         WHEN s.csat_score = 5 AND s.h6 % 3 = 0 THEN '客服很专业，谢谢！' END,
    s.created_at,
    greatest(s.created_at, s.responded_at, s.paused_at, s.resolved_at, s.closed_at),
    1 + (s.responded_at IS NOT NULL)::int + (s.paused_at IS NOT NULL)::int + (s.resolved_at IS NOT NULL)::int
      + (s.closed_at IS NOT NULL)::int + (s.assignee_id IS NOT NULL)::int
FROM (
    SELECT
        d.*,
        d.status = 'waiting_on_customer' AS paused,
        CASE WHEN d.status = 'waiting_on_customer'
             THEN d.responded_at + ($10::timestamptz - d.responded_at) / 2 END AS paused_at,
        CASE WHEN d.status = 'closed'
             THEN least(d.resolved_at + make_interval(hours => 24 + d.h5 / 10 % 48), $10::timestamptz) END AS closed_at,
        CASE WHEN d.status IN ('resolved', 'closed') AND d.h4 / 1000 % 10 < 3 THEN
            CASE WHEN d.h5 / 1000 % 100 < 45 THEN 5 WHEN d.h5 / 1000 % 100 < 75 THEN 4
                 WHEN d.h5 / 1000 % 100 < 87 THEN 3 WHEN d.h5 / 1000 % 100 < 94 THEN 2 ELSE 1 END
        END AS csat_score,
        CASE WHEN d.status <> 'new' THEN ($5::uuid[])[d.agent] END AS assignee_id,
        CASE WHEN d.status <> 'new' THEN ($6::uuid[])[1 + (d.agent - 1) % {teams}] END AS team_id
    FROM (
        SELECT
            c.*,
            CASE
                WHEN c.status IN ('resolved', 'closed')
                    THEN least(c.created_at + make_interval(secs => c.frm * 60 * c.resp_factor), c.resolved_at)
                WHEN c.status = 'new' OR (c.status = 'assigned' AND c.h4 / 100 % 2 = 0) THEN NULL
                ELSE least(c.created_at + make_interval(secs => c.frm * 60 * c.resp_factor),
                           c.created_at + ($10::timestamptz - c.created_at) / 2)
            END AS responded_at
        FROM (
            SELECT
                b.*,
                CASE
                    WHEN b.is_open THEN CASE WHEN b.h2 / 100 % 100 < 15 THEN 'new'
                                             WHEN b.h2 / 100 % 100 < 40 THEN 'assigned'
                                             WHEN b.h2 / 100 % 100 < 85 THEN 'in_progress'
                                             ELSE 'waiting_on_customer' END
                    WHEN b.age_days < 7 AND b.h3 / 100 % 2 = 0 THEN 'resolved'
                    ELSE 'closed'
                END AS status,
                CASE WHEN NOT b.is_open THEN
                    least(b.created_at + make_interval(secs => b.resm * 60 * (b.h8 % 997) / 997.0 * 1.25),
                          b.created_at + ($10::timestamptz - b.created_at) * 0.9)
                END AS resolved_at,
                -- ~30% of first replies come after the due time.
                (b.h1 % 1000) / 1000.0 * 1.45 AS resp_factor
            FROM (
                SELECT
                    r.*,
                    r.created_at + make_interval(secs => r.frm * 60) AS fr_due,
                    r.created_at + make_interval(secs => r.resm * 60) AS res_due,
                    -- Old tickets are mostly done; the backlog is recent.
                    r.h7 % 100 < CASE WHEN r.age_days < 3 THEN 70 WHEN r.age_days < 14 THEN 30 ELSE 10 END AS is_open
                FROM (
                    SELECT
                        q.*,
                        CASE WHEN q.h2 % 100 < 5 THEN 'urgent' WHEN q.h2 % 100 < 20 THEN 'high'
                             WHEN q.h2 % 100 < 80 THEN 'normal' ELSE 'low' END AS priority,
                        -- The default policies (app/services/service_desk/tickets.py), 1.4x for business hours.
                        1.4 * CASE WHEN q.h2 % 100 < 5 THEN 60 WHEN q.h2 % 100 < 20 THEN 240
                                   WHEN q.h2 % 100 < 80 THEN 480 ELSE 1440 END AS frm,
                        1.4 * CASE WHEN q.h2 % 100 < 5 THEN 480 WHEN q.h2 % 100 < 20 THEN 1440
                                   WHEN q.h2 % 100 < 80 THEN 2880 ELSE 7200 END AS resm,
                        CASE WHEN q.h3 % 100 < 30 THEN 'complaint' WHEN q.h3 % 100 < 70 THEN 'inquiry'
                             WHEN q.h3 % 100 < 85 THEN 'fault_report' WHEN q.h3 % 100 < 95 THEN 'suggestion'
                             ELSE 'praise' END AS type,
                        ($7::text[])[1 + q.h4 % {channels}] AS channel,
                        ($8::text[])[1 + q.h1 / 1000 % {subjects}] AS subject,
                        CASE WHEN q.h5 % 10 = 0 THEN NULL ELSE ($4::uuid[])[1 + q.h5 / 10 % {categories}] END
                            AS category_id,
                        1 + q.h6 / 1000 % {agents} AS agent,
                        -- A few customers open many tickets.
                        1 + least($3::int - 1, floor($3::int * power((q.h3 / 100 % 1000003) / 1000003.0, 1.6)))::int
                            AS customer_n
                    FROM (
                        SELECT
                            i,
                            $10::timestamptz - make_interval(secs => 60 + ($2::int - i) * {step}) AS created_at,
                            ($2::int - i) * {step} / 86400.0 AS age_days,
                            hashint8(i::bigint * 16 + 1 + $11::int) & 2147483647 AS h1,
                            hashint8(i::bigint * 16 + 2 + $11::int) & 2147483647 AS h2,
                            hashint8(i::bigint * 16 + 3 + $11::int) & 2147483647 AS h3,
                            hashint8(i::bigint * 16 + 4 + $11::int) & 2147483647 AS h4,
                            hashint8(i::bigint * 16 + 5 + $11::int) & 2147483647 AS h5,
                            hashint8(i::bigint * 16 + 6 + $11::int) & 2147483647 AS h6,
                            hashint8(i::bigint * 16 + 7 + $11::int) & 2147483647 AS h7,
                            hashint8(i::bigint * 16 + 8 + $11::int) & 2147483647 AS h8
                        FROM generate_series(1, $2::int) AS i
                    ) q
                ) r
            ) b
        ) c
    ) d
) s
JOIN bench_customer_map m ON m.n = s.customer_n
"""

# The history the service writes as tickets move: opened, first public reply, resolved, closed.
EVENTS_SQL = """
INSERT INTO ticket_events (workspace_id, id, ticket_id, action, from_value, to_value, actor, at)
SELECT t.workspace_id, {id_expr}, t.id, e.action, e.from_value, e.to_value, e.actor, e.at
FROM tickets t
CROSS JOIN LATERAL (VALUES
    ('opened', NULL, 'new', '{{"type": "api_key", "id": null}}'::jsonb, t.created_at),
    ('public_reply', NULL, NULL, jsonb_build_object('type', 'user', 'id', t.assignee_id), t.first_responded_at),
    ('status_changed', 'in_progress', 'resolved', jsonb_build_object('type', 'user', 'id', t.assignee_id),
     t.resolved_at),
    ('status_changed', 'resolved', 'closed', '{{"type": "system", "id": null}}'::jsonb, t.closed_at)
) AS e(action, from_value, to_value, actor, at)
WHERE t.workspace_id = $1 AND e.at IS NOT NULL
"""

# NPS answers: survey k gets $4[k] answers from distinct customers (j * 7919 mod C is a
# bijection while C is not a multiple of 7919 and $4[k] <= C).
RESPONSES_SQL = """
INSERT INTO survey_responses (workspace_id, survey_id, customer_id, score, comment, answered_at)
SELECT $1, ($2::uuid[])[x.k], m.id,
       CASE WHEN x.h % 100 < 45 THEN 9 + x.h / 100 % 2 WHEN x.h % 100 < 75 THEN 7 + x.h / 100 % 2
            ELSE x.h / 100 % 7 END,
       CASE WHEN x.h % 100 >= 90 THEN '希望物流再快一点。' END,
       least(($3::timestamptz[])[x.k] + make_interval(secs => x.h / 7 % (30 * 86400)),
             $6::timestamptz - interval '1 minute')
FROM (
    SELECT k, j, hashint8(k::bigint * 10000019 + j + $7::int) & 2147483647 AS h,
           1 + ((j::bigint * 7919 + k * 104729) % $5::int) AS n
    FROM generate_series(1, array_length($2::uuid[], 1)) AS k, generate_series(1, ($4::int[])[k]) AS j
) x
JOIN bench_customer_map m ON m.n = x.n
"""

# Value figures with a tier for every customer (the report groups CSAT and NPS by tier; tickets
# carry their customer's tier, as open_ticket sets it).
VALUES_SQL = """
INSERT INTO customer_values (
    workspace_id, customer_id, first_purchase_at, last_purchase_at, order_count, total_spend, avg_order_value,
    window_spend, window_orders, tier, tier_since, updated_at
)
SELECT $1, x.id,
       $2::timestamptz - make_interval(days => 30 + x.h % 700), $2::timestamptz - make_interval(days => x.h % 30),
       x.orders, x.orders * (50 + x.h / 1000 % 950), 50 + x.h / 1000 % 950, (x.orders / 2) * (50 + x.h / 1000 % 950),
       x.orders / 2,
       CASE WHEN x.h / 7 % 100 < 5 THEN 'vip' WHEN x.h / 7 % 100 < 20 THEN 'gold' WHEN x.h / 7 % 100 < 50 THEN 'silver'
       END,
       $2::timestamptz - make_interval(days => x.h % 60), $2::timestamptz
FROM (
    SELECT id, 1 + (hashint8(n + $3::int) & 2147483647) % 12 AS orders, hashint8(n * 7 + $3::int) & 2147483647 AS h
    FROM bench_customer_map
) x
"""

# Segment k holds the customers whose hash falls under its share ($3[k] per mille).
SEGMENT_MEMBERS_SQL = """
INSERT INTO segment_members (workspace_id, segment_id, customer_id, added_at)
SELECT $1, ($2::uuid[])[k], m.id, $4::timestamptz - make_interval(days => m.n::int % 30)
FROM generate_series(1, array_length($2::uuid[], 1)) AS k, bench_customer_map m
WHERE (hashint8(m.n * 64 + k + $5::int) & 2147483647) % 1000 < ($3::int[])[k]
"""
SEGMENTS: list[tuple[str, int]] = [
    ("高价值客户", 50),
    ("近30天活跃", 300),
    ("沉睡客户", 200),
    ("新客户", 120),
    ("华东地区", 350),
    ("企业客户", 60),
    ("投诉较多", 30),
    ("会员日参与者", 150),
    ("微信粉丝", 400),
    ("流失风险", 80),
]

# Secondary indexes of the tables bulk-loaded here (constraint indexes stay).
SECONDARY_INDEXES_SQL = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename IN ('tickets', 'ticket_events')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
ORDER BY i.indexname
"""
TICKET_TABLES = (
    "tickets",
    "ticket_events",
    "ticket_comments",
    "csat_requests",
    "survey_responses",
    "surveys",
    "customer_values",
    "segment_members",
    "segment_sizes",
    "segments",
)
VACUUM_TABLES = (
    "customers",
    "customer_values",
    "segments",
    "segment_members",
    "tickets",
    "ticket_events",
    "ticket_categories",
    "users",
    "teams",
    "surveys",
    "survey_responses",
    "customer_code_counters",
    "outbox_events",
    "api_keys",
    "ticket_day_counts",
    "ticket_day_latency",
)
RESET_SQL = f"""
UPDATE tickets SET first_response_breached = false, resolution_breached = false
WHERE status IN ({", ".join(f"'{s}'" for s in BREACHABLE)}) AND (first_response_breached OR resolution_breached)
"""


@dataclass(frozen=True)
class TicketPlan:
    slug: str
    name: str
    customers: int
    tickets: int
    responses: int
    salt: int


@dataclass
class Prepared:
    db: BenchDatabase
    postgres_version: str
    pg_settings: dict[str, str]
    workspace_id: uuid.UUID
    key: str
    seeded_at: datetime
    reused: bool
    seed_seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=None, help="tickets in the bench workspace (500,000)")
    parser.add_argument("--customers", type=int, default=None, help="customers in the bench workspace (50,000)")
    parser.add_argument("--responses", type=int, default=None, help="NPS answers in the bench workspace (20,000)")
    parser.add_argument("--small", action="store_true", help="50k tickets, 5k customers, 2k answers")
    parser.add_argument("--reseed", action="store_true", help=f"drop {TICKETS_DATABASE} and seed it again")
    parser.add_argument(
        "--max-age-minutes", type=float, default=180.0, help="seed again when the data is older than this"
    )
    parser.add_argument("--requests", type=int, default=200, help="measured sequential requests per route")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests before those")
    parser.add_argument("--breach-runs", type=int, default=3, help="timed runs of the breach job")
    parser.add_argument("--skip-http", action="store_true", help="skip the list and report measurements")
    parser.add_argument("--skip-breach", action="store_true", help="skip the breach job")
    parser.add_argument("--skip-write-cost", action="store_true", help="skip the daily figures' write cost")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for other benches to finish")
    parser.add_argument("--statement-timeout-ms", type=int, default=600_000, help="for the breach job's session")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    args, _ = parser.parse_known_args(argv)  # flags meant for other benches are ignored
    args.customers = args.customers or (5_000 if args.small else 50_000)
    args.tickets = args.tickets or (50_000 if args.small else 500_000)
    args.responses = args.responses if args.responses is not None else (2_000 if args.small else 20_000)
    if args.customers < 1_000 or args.tickets < 1_000:
        parser.error("--customers and --tickets must be at least 1,000")
    if args.customers % 7919 == 0:
        parser.error("--customers must not be a multiple of 7919")
    return args


def plans(args: argparse.Namespace) -> list[TicketPlan]:
    return [
        TicketPlan(MAIN_SLUG, "Bench (tickets)", args.customers, args.tickets, args.responses, salt=0),
        # A second tenant in the same tables: the breach job covers every workspace, the API only one.
        TicketPlan(
            OTHER_SLUG,
            "Bench (tickets, other tenant)",
            max(1_000, args.customers // 10),
            max(1_000, args.tickets // 20),
            args.responses // 10,
            salt=1_000_003,
        ),
    ]


def marker(args: argparse.Namespace, workspace_ids: dict[str, uuid.UUID]) -> dict[str, Any]:
    return {
        "seed_version": SEED_VERSION,
        "plans": [[p.slug, str(workspace_ids[p.slug]), p.customers, p.tickets, p.responses] for p in plans(args)],
    }


# --- seeding ---------------------------------------------------------------------------------------


async def read_marker(conn: asyncpg.Connection) -> dict[str, Any] | None:
    raw = await conn.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
    )
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


async def write_marker(conn: asyncpg.Connection, value: dict[str, Any]) -> None:
    database = await conn.fetchval("SELECT current_database()")
    literal = json.dumps(value).replace("'", "''")
    await conn.execute(f"COMMENT ON DATABASE \"{database}\" IS '{literal}'")


async def prepare(db: BenchDatabase, args: argparse.Namespace) -> Prepared:
    started = time.perf_counter()
    conn = await asyncpg.connect(db.dsn)
    try:
        postgres_version = str(await conn.fetchval("SELECT version()"))
        pg_settings = {
            name: str(await conn.fetchval(f"SHOW {name}"))
            for name in ("shared_buffers", "work_mem", "effective_cache_size", "jit", "max_parallel_workers_per_gather")
        }
        found = await read_marker(conn)
        ids = {
            r["slug"]: r["id"]
            for r in await conn.fetch("SELECT slug, id FROM workspaces WHERE slug = ANY($1)", [MAIN_SLUG, OTHER_SLUG])
        }
        fresh = False
        if found and set(ids) == {MAIN_SLUG, OTHER_SLUG} and found.get("plan") == marker(args, ids):
            seeded_at = datetime.fromisoformat(found["seeded_at"])
            age_min = (datetime.now(UTC) - seeded_at).total_seconds() / 60
            fresh = age_min <= args.max_age_minutes
            if not fresh:
                print(f"  seeded {age_min:.0f} min ago (> --max-age-minutes {args.max_age_minutes:g}): seeding again")
        if fresh:
            seed_seconds = time.perf_counter() - started
            assert found is not None
            print(f"  reusing the seeded data (seeded {found['seeded_at']}, sizes match)")
            reused = True
        else:
            seeded_at = await seed_all(conn, args)
            ids = {
                r["slug"]: r["id"]
                for r in await conn.fetch(
                    "SELECT slug, id FROM workspaces WHERE slug = ANY($1)", [MAIN_SLUG, OTHER_SLUG]
                )
            }
            await write_marker(
                conn,
                {
                    "plan": marker(args, ids),
                    "seeded_at": seeded_at.isoformat(),
                    "seconds": time.perf_counter() - started,
                },
            )
            seed_seconds = time.perf_counter() - started
            print(f"  seeding done in {seed_seconds:.1f} s")
            reused = False
        workspace_id = ids[MAIN_SLUG]
        # The state a running service keeps: its worker folds the figure rows the tickets' triggers
        # append every minute, and autovacuum keeps the tables' visibility maps current. Earlier runs'
        # breach jobs and write-cost flips leave both behind (150,000 rows a breach run).
        step = time.perf_counter()
        folded = await conn.fetchval("SELECT guanxi_compact_ticket_stats()")
        fold_seconds = time.perf_counter() - step
        for table in ("tickets", "ticket_day_counts", "ticket_day_latency"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        print(f"  figure rows folded: {folded:,} written in {fold_seconds:.2f} s; tickets and figures vacuumed")
        facts = await data_facts(conn, workspace_id)
    finally:
        await conn.close()
    key = await issue_admin_key(db.url, workspace_id)
    return Prepared(
        db=db,
        postgres_version=postgres_version,
        pg_settings=pg_settings,
        workspace_id=workspace_id,
        key=key,
        seeded_at=seeded_at,
        reused=reused,
        seed_seconds=seed_seconds,
        facts=facts,
    )


async def seed_all(conn: asyncpg.Connection, args: argparse.Namespace) -> datetime:
    # Tickets reference customers: empty the ticket tables before ensure_workspace may replace them.
    await conn.execute(f"TRUNCATE {', '.join(TICKET_TABLES)}, outbox_events CASCADE")
    ids: dict[str, uuid.UUID] = {}
    for plan in plans(args):
        print(f"  workspace {plan.slug}: {plan.customers:,} customers ...", end="", flush=True)
        ws = await ensure_workspace(conn, WorkspacePlan(plan.slug, plan.name, plan.customers, phone_salt=plan.salt))
        ids[plan.slug] = ws.workspace_id
        print(f" {'reused' if ws.reused else 'seeded'} in {ws.seconds:.1f} s")
    now = datetime.now(UTC)
    pg_version = int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
    uuid7 = pg_version >= 180000
    async with conn.transaction():
        await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        await conn.execute("SET LOCAL work_mem = '64MB'")
        indexes = list(await conn.fetch(SECONDARY_INDEXES_SQL))
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        for plan in plans(args):
            await seed_tickets(conn, ids[plan.slug], plan, now, uuid7=uuid7)
        step = time.perf_counter()
        for index in indexes:
            await conn.execute(index["indexdef"])
        print(f"    indexes rebuilt in {time.perf_counter() - step:.1f} s")
        # What the worker does every minute: the rows the tickets' triggers appended, one per key.
        await conn.execute("SELECT guanxi_compact_ticket_stats()")
    step = time.perf_counter()
    for table in VACUUM_TABLES:
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    print(f"    VACUUM ANALYZE in {time.perf_counter() - step:.1f} s")
    return now


async def seed_tickets(
    conn: asyncpg.Connection, workspace_id: uuid.UUID, plan: TicketPlan, now: datetime, *, uuid7: bool
) -> None:
    print(f"  workspace {plan.slug}: {plan.tickets:,} tickets, {plan.responses:,} NPS answers", flush=True)
    # Agents, teams and categories are this workspace's; earlier ones go (the tickets went with TRUNCATE).
    await conn.execute("DELETE FROM users WHERE workspace_id = $1", workspace_id)
    for table in ("teams", "ticket_categories", "sla_policies", "business_hours"):
        await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1", workspace_id)
    teams = [uuid.uuid4() for _ in TEAMS]
    await conn.executemany(
        "INSERT INTO teams (workspace_id, id, name, created_at) VALUES ($1, $2, $3, $4)",
        [(workspace_id, t, name, now - timedelta(days=400)) for t, name in zip(teams, TEAMS, strict=True)],
    )
    agents = [uuid.uuid4() for _ in range(AGENTS)]
    await conn.executemany(
        "INSERT INTO users (workspace_id, id, email, name, password_hash, role, team_id, created_at) "
        "VALUES ($1, $2, $3, $4, '!', 'support', $5, $6)",
        [
            (workspace_id, a, f"agent{n + 1}@bench.example.cn", f"客服{n + 1:02d}", teams[n % len(teams)], now)
            for n, a in enumerate(agents)
        ],
    )
    categories: list[uuid.UUID] = []
    rows: list[tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None, datetime]] = []
    for parent, children in CATEGORIES:
        parent_id = uuid.uuid4()
        rows.append((workspace_id, parent_id, parent, None, now - timedelta(days=400)))
        for child in children:
            child_id = uuid.uuid4()
            categories.append(child_id)
            rows.append((workspace_id, child_id, child, parent_id, now - timedelta(days=400)))
    await conn.executemany(
        "INSERT INTO ticket_categories (workspace_id, id, name, parent_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        rows,
    )
    await conn.execute("DROP TABLE IF EXISTS bench_customer_map")
    await conn.execute(
        "CREATE TEMP TABLE bench_customer_map ON COMMIT DROP AS "
        "SELECT row_number() OVER (ORDER BY created_at, id) AS n, id, NULL::text AS tier "
        "FROM customers WHERE workspace_id = $1",
        workspace_id,
    )
    await conn.execute(VALUES_SQL, workspace_id, now, plan.salt)
    await conn.execute(
        "UPDATE bench_customer_map m SET tier = v.tier FROM customer_values v "
        "WHERE v.workspace_id = $1 AND v.customer_id = m.id",
        workspace_id,
    )
    await conn.execute("ANALYZE bench_customer_map")
    count = int(await conn.fetchval("SELECT count(*) FROM bench_customer_map"))
    segments = [uuid.uuid4() for _ in SEGMENTS]
    await conn.executemany(
        "INSERT INTO segments (workspace_id, id, name, kind, member_count, refreshed_at, created_at, updated_at) "
        "VALUES ($1, $2, $3, 'static', 0, $4, $4, $4)",
        [(workspace_id, sid, name, now) for sid, (name, _) in zip(segments, SEGMENTS, strict=True)],
    )
    await conn.execute(SEGMENT_MEMBERS_SQL, workspace_id, segments, [p for _, p in SEGMENTS], now, plan.salt)
    await conn.execute(
        "UPDATE segments s SET member_count = (SELECT count(*) FROM segment_members m "
        "WHERE m.workspace_id = s.workspace_id AND m.segment_id = s.id) WHERE s.workspace_id = $1",
        workspace_id,
    )

    step = time.perf_counter()
    sql = TICKETS_SQL.format(
        id_expr="uuidv7(s.created_at - now())" if uuid7 else "gen_random_uuid()",
        step=DAYS * 86400 / plan.tickets,
        details=len(DETAILS),
        teams=len(teams),
        channels=len(CHANNELS),
        subjects=len(SUBJECTS),
        categories=len(categories),
        agents=len(agents),
    )
    await conn.execute(
        sql, workspace_id, plan.tickets, count, categories, agents, teams, CHANNELS, SUBJECTS, DETAILS, now, plan.salt
    )
    print(f"    tickets in {time.perf_counter() - step:.1f} s", flush=True)
    step = time.perf_counter()
    await conn.execute(
        EVENTS_SQL.format(id_expr="uuidv7(e.at - now())" if uuid7 else "gen_random_uuid()"), workspace_id
    )
    print(f"    history in {time.perf_counter() - step:.1f} s", flush=True)
    await conn.execute(
        "INSERT INTO customer_code_counters (workspace_id, scope, last_value) VALUES ($1, 'ticket', $2) "
        "ON CONFLICT (workspace_id, scope) DO UPDATE SET last_value = excluded.last_value",
        workspace_id,
        plan.tickets,
    )
    # One NPS survey a month, each answered by distinct customers.
    surveys = [uuid.uuid4() for _ in range(3)]
    opens = [now - timedelta(days=30 * (3 - k)) for k in range(3)]
    await conn.executemany(
        "INSERT INTO surveys (workspace_id, id, name, question, segment_id, channel, opens_at, closes_at, created_at) "
        "VALUES ($1, $2, $3, '您有多大可能向朋友推荐我们？', NULL, 'wechat', $4, $5, $4)",
        [
            (workspace_id, s, f"{o:%Y-%m} NPS", o, o + timedelta(days=30) if k < 2 else None)
            for k, (s, o) in enumerate(zip(surveys, opens, strict=True))
        ],
    )
    per_survey = [min(count, plan.responses // len(surveys) + (k < plan.responses % len(surveys))) for k in range(3)]
    if plan.responses:
        await conn.execute(RESPONSES_SQL, workspace_id, surveys, opens, per_survey, count, now, plan.salt)


async def issue_admin_key(url: str, workspace_id: uuid.UUID) -> str:
    from app.core.access import ALL_SCOPES
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings
    from app.services.identity import api_keys

    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            _, key = await api_keys.issue(
                session, workspace_id, name="bench tickets (admin)", scopes=sorted(ALL_SCOPES)
            )
            await session.commit()
    finally:
        await engine.dispose()
    return key


async def data_facts(conn: asyncpg.Connection, workspace_id: uuid.UUID) -> dict[str, Any]:
    """What the seeded workspace holds, so a reader can tell what the timed statements work through."""
    row = await conn.fetchrow(
        f"""
        SELECT count(*) AS tickets,
               count(*) FILTER (WHERE status IN ({", ".join(f"'{s}'" for s in OPEN)})) AS open,
               count(*) FILTER (WHERE status IN ({", ".join(f"'{s}'" for s in BREACHABLE)})) AS breachable,
               count(*) FILTER (WHERE status IN ({", ".join(f"'{s}'" for s in OPEN)})
                   AND ((first_responded_at IS NULL AND first_response_due_at <= now() + interval '60 minutes')
                        OR resolution_due_at <= now() + interval '60 minutes')) AS at_risk_60,
               count(*) FILTER (WHERE status IN ({", ".join(f"'{s}'" for s in OPEN)})
                   AND ((first_responded_at IS NULL AND first_response_due_at > now()
                         AND first_response_due_at <= now() + interval '60 minutes')
                        OR (resolution_due_at > now() AND resolution_due_at <= now() + interval '60 minutes')))
                   AS due_next_hour,
               count(*) FILTER (WHERE created_at >= now() - interval '30 days') AS last_30_days,
               count(*) FILTER (WHERE created_at >= now() - interval '30 days' AND customer_deleted_at IS NULL)
                   AS report_window,
               count(*) FILTER (WHERE csat_score IS NOT NULL) AS with_csat
        FROM (
            SELECT t.*, c.deleted_at AS customer_deleted_at
            FROM tickets t JOIN customers c ON c.workspace_id = t.workspace_id AND c.id = t.customer_id
            WHERE t.workspace_id = $1
        ) t
        """,
        workspace_id,
    )
    facts: dict[str, Any] = dict(row)
    facts["status_mix"] = {
        r["status"]: r["n"]
        for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM tickets WHERE workspace_id = $1 GROUP BY 1 ORDER BY 2 DESC",
            workspace_id,
        )
    }
    facts["all_workspaces_tickets"] = await conn.fetchval("SELECT count(*) FROM tickets")
    facts["customers"] = await conn.fetchval("SELECT count(*) FROM customers WHERE workspace_id = $1", workspace_id)
    facts["survey_responses"] = await conn.fetchval(
        "SELECT count(*) FROM survey_responses WHERE workspace_id = $1", workspace_id
    )
    facts["ticket_events"] = await conn.fetchval("SELECT count(*) FROM ticket_events")
    facts["segment_members"] = await conn.fetchval(
        "SELECT count(*) FROM segment_members WHERE workspace_id = $1", workspace_id
    )
    facts["tickets_table_mb"] = round(int(await conn.fetchval("SELECT pg_total_relation_size('tickets')")) / 2**20, 1)
    return facts


# --- waiting for a quiet machine -------------------------------------------------------------------


def other_bench_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", OTHER_BENCHES], capture_output=True, text=True, check=False).stdout
    mine = {os.getpid(), os.getppid()}
    pids = []
    for pid in (int(p) for p in found.split()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        # A shell or grep whose command line merely names a bench does not count; a bench runs in Python.
        if pid not in mine and b"python" in Path(argv0.decode(errors="replace")).name.encode():
            pids.append(pid)
    return pids


def wait_for_quiet_machine(args: argparse.Namespace, max_wait_s: float = 7200.0) -> float:
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
        print(f"  ... waited {waited:.0f} s", flush=True)
    return waited


# --- the list and the report ------------------------------------------------------------------------


def summary(times_ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(times_ms),
        "p50_ms": round(percentile(times_ms, 50), 2),
        "p95_ms": round(percentile(times_ms, 95), 2),
        "p99_ms": round(percentile(times_ms, 99), 2),
        "max_ms": round(max(times_ms), 2) if times_ms else None,
        "mean_ms": round(sum(times_ms) / len(times_ms), 2) if times_ms else None,
    }


def service_argv(port: int) -> list[str]:
    script = Path(sys.executable).parent / "guanxi"
    tail = ["serve", "--no-demo", "--no-worker", "--port", str(port)]
    if script.exists():
        return [str(script), *tail]
    return [sys.executable, "-c", "from app.cli import main; main()", *tail]


def check_list(got: httpx.Response) -> int:
    if got.status_code != 200:
        raise BenchError(f"GET {LIST_PATH} -> {got.status_code} {got.text[:300]}")
    items = got.json()["items"]
    horizon = AT_RISK_MINUTES * 60
    for item in items:
        due = [
            s
            for s in (item["seconds_to_first_response_due"], item["seconds_to_resolution_due"])
            if s is not None and s <= horizon
        ]
        if item["status"] not in OPEN or not due:
            raise BenchError(f"GET {LIST_PATH}: ticket #{item['number']} is not at risk: {item}")
    return len(items)


def check_report(got: httpx.Response, expected_tickets: int) -> dict[str, Any]:
    if got.status_code != 200:
        raise BenchError(f"GET {REPORT_PATH} -> {got.status_code} {got.text[:300]}")
    body: dict[str, Any] = got.json()
    counted = sum(v["tickets"] for v in body["volume"])
    # The window moves with the clock; the seeded workspace gains no tickets, so it can only lose a few.
    if not body["nps_by_month"] or not counted or abs(counted - expected_tickets) > max(50, expected_tickets // 50):
        raise BenchError(f"GET {REPORT_PATH}: {counted} tickets in volume, expected ~{expected_tickets}")
    return body


def run_http(base_url: str, key: str, args: argparse.Namespace, expected_report: int) -> dict[str, Any]:
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("list", LIST_PATH, {"at_risk_within_minutes": AT_RISK_MINUTES, "limit": 20}),
        ("report", REPORT_PATH, {}),
    ]
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        listed = check_list(client.get(LIST_PATH, params=routes[0][2]))
        report = check_report(client.get(REPORT_PATH), expected_report)
        out["checks"] = {
            "list_items": listed,
            "report_volume_rows": len(report["volume"]),
            "report": {k: v for k, v in report.items() if k != "volume"},
        }
        wait_for_quiet_machine(args)
        for name, path, params in routes:
            times: list[float] = []
            errors = 0
            for n in range(args.warmup + args.requests):
                started = time.perf_counter()
                got = client.get(path, params=params)
                ms = (time.perf_counter() - started) * 1000
                if got.status_code != 200:
                    errors += 1
                    if errors <= 3:
                        print(f"  {name}: {got.status_code} {got.text[:200]}")
                    continue
                if n >= args.warmup:
                    times.append(ms)
            out[name] = {**summary(times), "errors": errors}
            s = out[name]
            print(f"  service {name:<6} p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms")
    return out


async def floor_statements(prepared: Prepared) -> dict[str, tuple[str, list[Any]]]:
    """The statements as the service sends them, captured and replayed raw through asyncpg: the
    list's from tickets.list_tickets, the report's from service_reports.service_report for an admin
    (whole days from the daily figures), and, for reference, the same report computed from the tickets
    alone (what a caller limited to some customers gets, here over all of them)."""
    from sqlalchemy import event, text

    from app.core import clock
    from app.core.access import ALL_SCOPES, Caller
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings
    from app.services.service_desk import service_reports, tickets

    ctx = Caller(
        workspace_id=prepared.workspace_id, actor_type="api_key", actor_id=None, scopes=ALL_SCOPES, visibility="all"
    )
    engine = create_engine(prepared.db.url, get_settings())
    captured: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    now = clock.now()
    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        async with create_sessionmaker(engine)() as session:
            await tickets.list_tickets(session, ctx, filters={}, at_risk_minutes=AT_RISK_MINUTES, limit=20, cursor=None)
            tz = await session.scalar(text("SELECT timezone FROM workspaces WHERE id = :id"), {"id": ctx.workspace_id})
            for daily in (True, False):
                await service_reports.service_report(
                    session, ctx, since=now - timedelta(days=30), until=now, timezone=tz or "UTC", daily=daily
                )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        await engine.dispose()
    list_sql = next((s, list(p)) for s, p in captured if "FROM tickets" in s)
    daily_sql, live_sql = [(s, list(p)) for s, p in captured if "guanxi_ticket_stat" in s]
    return {"list": list_sql, "report": daily_sql, "report_live": live_sql}


async def plan_as_the_service(conn: asyncpg.Connection, name: str) -> None:
    """The report runs with a custom plan every time (service_reports.service_report); the list as any
    prepared statement."""
    mode = "force_custom_plan" if name.startswith("report") else "auto"
    await conn.execute(f"SET plan_cache_mode = {mode}")


async def run_floor(prepared: Prepared, args: argparse.Namespace) -> dict[str, Any]:
    statements = await floor_statements(prepared)
    conn = await asyncpg.connect(prepared.db.dsn)
    out: dict[str, Any] = {}
    try:
        for name, (sql, params) in statements.items():
            await plan_as_the_service(conn, name)
            rows = await conn.fetch(sql, *params)
            out[f"{name}_rows"] = len(rows)
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *params)
            out[f"{name}_plan"] = [r[0] for r in plan]
        wait_for_quiet_machine(args)
        for name, (sql, params) in statements.items():
            await plan_as_the_service(conn, name)
            times: list[float] = []
            # The reference takes most of a second a run: a few runs tell its order of magnitude.
            requests, warmup = (min(args.requests, 20), 2) if name == "report_live" else (args.requests, args.warmup)
            for n in range(warmup + requests):
                started = time.perf_counter()
                await conn.fetch(sql, *params)
                if n >= warmup:
                    times.append((time.perf_counter() - started) * 1000)
            out[name] = summary(times)
            s = out[name]
            print(f"  floor   {name:<11} p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms")
    finally:
        await conn.close()
    return out


# --- the breach job ---------------------------------------------------------------------------------


async def reset_breaches(conn: asyncpg.Connection, since: datetime) -> int:
    """Open tickets unflagged, the breach history and events of earlier runs gone, the tables vacuumed."""
    status = await conn.execute(RESET_SQL)
    await conn.execute("DELETE FROM ticket_events WHERE action = 'sla_breached' AND at >= $1", since)
    await conn.execute("DELETE FROM outbox_events WHERE type = 'ticket.sla_breached'")
    for table in ("tickets", "ticket_events", "outbox_events"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    return int(status.split()[-1])


async def run_breaches(prepared: Prepared, args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

    from app.core import clock
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings
    from app.services.service_desk import tickets

    conn = await asyncpg.connect(prepared.db.dsn, command_timeout=args.statement_timeout_ms / 1000)
    engine = create_engine(prepared.db.url, get_settings())
    sessions = create_sessionmaker(engine)
    out: dict[str, Any] = {"runs": []}
    try:
        # EXPLAIN ANALYZE once, rolled back, for where the time goes.
        unflagged = await reset_breaches(conn, prepared.seeded_at)
        compiled = tickets.BREACH_SQL.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
        tx = conn.transaction()
        await tx.start()
        try:
            now = clock.now()
            params = [now for _ in compiled.positiontup or []]
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + compiled.string, *params)
        finally:
            await tx.rollback()
        out["plan"] = [r[0] for r in plan]
        for run in range(1, args.breach_runs + 1):
            # (After the rolled-back EXPLAIN the flags are already clear: keep the first count.)
            unflagged = await reset_breaches(conn, prepared.seeded_at) or unflagged
            wait_for_quiet_machine(args)
            async with sessions() as session:
                await session.execute(text("SELECT 1"))  # the connection is open before the clock starts
                started = time.perf_counter()
                breached = await tickets.mark_breaches(session)
                await session.commit()
                seconds = time.perf_counter() - started
            events = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE type = 'ticket.sla_breached'")
            out["runs"].append(
                {"seconds": round(seconds, 3), "breaches": breached, "unflagged_before": unflagged, "events": events}
            )
            print(
                f"  breach run {run}: {seconds:.2f} s, {breached:,} breaches flagged "
                f"({unflagged:,} open tickets unflagged before; {events:,} events)",
                flush=True,
            )
    finally:
        await conn.close()
        await engine.dispose()
    times = [r["seconds"] for r in out["runs"]]
    out["max_seconds"] = max(times) if times else None
    out["target_s"] = BREACH_TARGET_S
    out["verdict"] = "PASS" if times and max(times) < BREACH_TARGET_S else "MISS"
    return out


# --- the write cost of the daily figures -------------------------------------------------------------

FIGURE_TRIGGERS = ("tickets_stats_insert", "tickets_stats_update", "tickets_stats_delete")
# Resolving and reopening one unbreached ticket: each flip changes its day's SLA figures, so every run
# of the trigger appends rows (the bench checks that it did).
FLIP_SQL = (
    "UPDATE tickets SET status = CASE status WHEN 'resolved' THEN 'in_progress' ELSE 'resolved' END, "
    "updated_at = now() WHERE workspace_id = $1 AND id = $2"
)


async def run_write_cost(prepared: Prepared, args: argparse.Namespace) -> dict[str, Any]:
    """One ticket's status flipped --requests times (autocommit UPDATEs, an even number, so it ends as it
    began) with the figure triggers on, off, and on again: what the daily figures cost a write."""
    conn = await asyncpg.connect(prepared.db.dsn)
    out: dict[str, Any] = {}
    ticket = await conn.fetchval(
        # Unbreached, so that resolving it moves it from "not judged" to "met" and back.
        "SELECT id FROM tickets WHERE workspace_id = $1 AND status = 'in_progress' "
        "AND NOT first_response_breached AND NOT resolution_breached ORDER BY id LIMIT 1",
        prepared.workspace_id,
    )
    flips = args.requests + args.requests % 2
    try:
        await conn.execute("SELECT guanxi_compact_ticket_stats()")
        wait_for_quiet_machine(args)
        for label, enabled in (("triggers", True), ("no_triggers", False), ("triggers_again", True)):
            for name in FIGURE_TRIGGERS:
                await conn.execute(f"ALTER TABLE tickets {'ENABLE' if enabled else 'DISABLE'} TRIGGER {name}")
            times: list[float] = []
            for n in range(args.warmup + flips):
                started = time.perf_counter()
                await conn.execute(FLIP_SQL, prepared.workspace_id, ticket)
                if n >= args.warmup:
                    times.append((time.perf_counter() - started) * 1000)
            out[label] = summary(times)
            out[label]["rows_appended"] = await conn.fetchval(
                "SELECT count(*) FROM ticket_day_counts WHERE workspace_id = $1 AND NOT compacted",
                prepared.workspace_id,
            )
            await conn.execute("SELECT guanxi_compact_ticket_stats()")
            s = out[label]
            print(
                f"  ticket update, {label:<15} p50 {s['p50_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms, "
                f"{s['rows_appended']:,} figure rows appended",
                flush=True,
            )
    finally:
        for name in FIGURE_TRIGGERS:
            await conn.execute(f"ALTER TABLE tickets ENABLE TRIGGER {name}")
        await conn.close()
    return out


# --- the run ----------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def plan_time(plan: list[str] | None) -> str:
    line = next((x for x in plan or [] if x.startswith("Execution Time")), "")
    return line.split(":", 1)[1].strip() if line else "-"


def run(args: argparse.Namespace, workdir: Path, service_timeout: str | None) -> int:
    started = datetime.now(UTC)
    print(f"guanxi tickets bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    database = TICKETS_DATABASE + ("_small" if args.small else "")
    db = prepare_database(recreate=args.reseed, database=database)
    print(f"database {db.server}: {database}")
    prepared = asyncio.run(prepare(db, args))
    f = prepared.facts
    print(
        f"  {f['tickets']:,} tickets ({f['all_workspaces_tickets']:,} in all workspaces),"
        f" {f['customers']:,} customers, {f['survey_responses']:,} NPS answers,"
        f" {f['ticket_events']:,} history rows, tickets {f['tickets_table_mb']} MB"
    )
    print(
        f"  open {f['open']:,} (breachable {f['breachable']:,});"
        f" at risk within {AT_RISK_MINUTES} min {f['at_risk_60']:,}"
        f" (due in the next hour, not yet overdue: {f['due_next_hour']:,}); last 30 days {f['last_30_days']:,}"
    )
    print(f"  status mix: {', '.join(f'{k} {v:,}' for k, v in f['status_mix'].items())}")
    out: dict[str, Any] = {
        "bench": "tickets",
        "date": started.isoformat(),
        "machine": machine_facts(),
        "postgresql": prepared.postgres_version,
        "postgresql_settings": prepared.pg_settings,
        "database": f"{db.server}: {database}",
        "settings": {
            "tickets": args.tickets,
            "customers": args.customers,
            "responses": args.responses,
            "requests": args.requests,
            "warmup": args.warmup,
            "breach_runs": args.breach_runs,
            "at_risk_within_minutes": AT_RISK_MINUTES,
        },
        "seeding": {
            "reused": prepared.reused,
            "seconds": round(prepared.seed_seconds, 1),
            "seeded_at": prepared.seeded_at.isoformat(),
        },
        "data": f,
    }
    verdicts: list[str] = []
    if not args.skip_http:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": db.url, "GUANXI_LOG_LEVEL": "WARNING"}
        # The service keeps its own statement timeout; only the breach job's session gets a long one.
        env.pop("GUANXI_STATEMENT_TIMEOUT_MS", None)
        if service_timeout is not None:
            env["GUANXI_STATEMENT_TIMEOUT_MS"] = service_timeout
        print(f"service on :{port}")
        with running("service", service_argv(port), env, workdir / "service.log", port, "/healthz") as service:
            http = run_http(service.base_url, prepared.key, args, f["report_window"])
        print("floor (asyncpg, one connection)")
        floor = asyncio.run(run_floor(prepared, args))
        out["http"] = http
        out["floor"] = floor
        for name, target in (("list", LIST_P95_TARGET_MS), ("report", REPORT_P95_TARGET_MS)):
            s, fl = http[name], floor[name]
            http[name]["target_p95_ms"] = target
            http[name]["ratio_p50"] = round(s["p50_ms"] / fl["p50_ms"], 2) if fl["p50_ms"] else None
            http[name]["ratio_p95"] = round(s["p95_ms"] / fl["p95_ms"], 2) if fl["p95_ms"] else None
            http[name]["verdict"] = verdict(s["errors"] == 0 and s["p95_ms"] < target)
            verdicts.append(http[name]["verdict"])
    if not args.skip_write_cost:
        print("write cost of the daily figures (one ticket resolved and reopened, autocommit)")
        out["write_cost"] = asyncio.run(run_write_cost(prepared, args))
    if not args.skip_breach:
        print(f"breach job (tickets.mark_breaches + COMMIT, {args.breach_runs} runs)")
        out["breach"] = asyncio.run(run_breaches(prepared, args))
        verdicts.append(out["breach"]["verdict"])

    print()
    print(f"Tickets bench, {f['tickets']:,} tickets / {f['customers']:,} customers, {started:%Y-%m-%d %H:%M} UTC")
    m = out["machine"]
    print(f"  {m['nproc']} CPUs ({m['cpu_model']}), {prepared.postgres_version.split(' on ')[0]}")
    if "http" in out:
        http, floor = out["http"], out["floor"]
        print(f"  {'':<38} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'floor p50/p95':>15} {'ratio p95':>9}")
        for name, title in (
            ("list", f"GET /tickets?at_risk_within_minutes={AT_RISK_MINUTES}"),
            ("report", "GET /reports/service (30 days)"),
        ):
            s, fl = http[name], floor[name]
            print(
                f"  {title:<38} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} "
                f"{fl['p50_ms']:>7.1f}/{fl['p95_ms']:<7.1f} {s['ratio_p95'] or 0:>9.2f}   "
                f"target p95 < {s['target_p95_ms']:g} ms  {s['verdict']}"
            )
        live = floor["report_live"]
        print(
            f"  {'  same report from the tickets alone, raw':<38} {'':>8} {'':>8} {'':>8} "
            f"{live['p50_ms']:>7.1f}/{live['p95_ms']:<7.1f}"
        )
        print(
            f"  EXPLAIN ANALYZE: list {plan_time(floor.get('list_plan'))} ({floor['list_rows']} rows), "
            f"report {plan_time(floor.get('report_plan'))}, from the tickets {plan_time(floor.get('report_live_plan'))}"
        )
    if "write_cost" in out:
        w = out["write_cost"]
        print(
            "  ticket update p50 / p95 ms: with the figure triggers "
            f"{w['triggers']['p50_ms']:.2f} / {w['triggers']['p95_ms']:.2f}, without "
            f"{w['no_triggers']['p50_ms']:.2f} / {w['no_triggers']['p95_ms']:.2f}, with again "
            f"{w['triggers_again']['p50_ms']:.2f} / {w['triggers_again']['p95_ms']:.2f}"
        )
    if "breach" in out:
        b = out["breach"]
        runs = ", ".join(f"{r['seconds']:.2f} s" for r in b["runs"])
        flagged = b["runs"][0]["breaches"] if b["runs"] else 0
        print(
            f"  breach job over {f['all_workspaces_tickets']:,} tickets ({flagged:,} breaches flagged): {runs}"
            f"   target < {BREACH_TARGET_S:g} s  {b['verdict']}   (EXPLAIN ANALYZE {plan_time(b.get('plan'))})"
        )
    seeding = "reused" if prepared.reused else "seeded"
    print(f"  seeding: {seeding}, {prepared.seed_seconds:.1f} s")

    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"tickets-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"  results in {path.relative_to(ROOT)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


def main(argv: list[str] | None = None) -> int:
    os.chdir(ROOT)  # the embedded server lives in ./.data
    args = parse_args(argv)
    # Before anything reads the app's settings: the breach job over every open ticket may outlive the
    # API's 5 s statement timeout. The service subprocess gets the caller's value back.
    service_timeout = os.environ.get("GUANXI_STATEMENT_TIMEOUT_MS")
    os.environ["GUANXI_STATEMENT_TIMEOUT_MS"] = str(args.statement_timeout_ms)
    from app.core.settings import get_settings

    get_settings.cache_clear()
    workdir = Path(tempfile.mkdtemp(prefix="guanxi-bench-tickets-"))
    try:
        code = run(args, workdir, service_timeout)
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        print(f"logs kept in {workdir}", file=sys.stderr)
        return 2
    for path in workdir.iterdir():
        path.unlink()
    workdir.rmdir()
    return code


if __name__ == "__main__":
    sys.exit(main())
