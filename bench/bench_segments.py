#!/usr/bin/env python3
"""Segments and lifecycle bench (issue "Segmentation engine and lifecycle stages").

Shares `guanxi_bench_value` with bench_value.py (bench/value_seed.py: 1M customers, ~2M orders,
~10M lines by default); customer_values are computed first (untimed) when empty. Measures:

  1. Lifecycle rules over every customer: `lifecycle.apply_rules_in_chunks(sessions, ctx)`, as the
     worker runs them (ranges of 50,000 customers, two transactions at once), target < 30 s.
     "first pass": no customer has a stage yet (stages, history and this workspace's events are
     deleted before, untimed), so every live customer moves; "re-run": the next pass, which moves
     almost no one. Floor: the same rules statement over the whole workspace in one go
     (RULES_RANGE with open bounds, literal parameters), raw through psql, from the same state.
  2. A 5-condition dynamic segment: city (geography) + RFM segment + last purchase in 180 days
     (value.last_purchase_at: the filter catalogue has no interaction field) + tag + lifecycle
     stage. `segments.refresh(session, segment)` + COMMIT, target < 5 s and ≤ 1.3 × the floor:
     a hand-written diff (INSERT the new members, DELETE the leavers, their outbox events, the
     member count, the size row) through asyncpg into a second segment with the same filter.
     "first" refresh: every member joins; "steady": refreshed again, nobody joins or leaves. Both
     member sets must be equal.
  3. `segments.preview(session, ctx, filter, limit=20)` (count + first page): target < 1 s p95;
     floor: the hand-written count and page through asyncpg.

Results also go to bench/results/segments-<UTC timestamp>.json. Flags meant for other benches are ignored.

    .venv/bin/python bench/bench_segments.py
    .venv/bin/python bench/bench_segments.py --small
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from harness import ROOT, BenchError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from value_seed import (
    ValueData,
    add_size_arguments,
    configure_environment,
    inline_params,
    median,
    now_utc,
    order_plan,
    prepare_value_data,
    print_header,
    run_psql,
    settle,
    summary,
    vacuum_analyze,
    verdict,
    wait_for_quiet_machine,
    write_results,
)

LIFECYCLE_TARGET_S = 30.0
REFRESH_TARGET_S = 5.0
REFRESH_TARGET_RATIO = 1.3
PREVIEW_TARGET_MS = 1000.0
SEGMENT_PREFIX = "bench:"

CITIES = ["上海市", "北京市", "深圳市", "广州市", "杭州市"]
RFM = ["Champions", "Loyal", "Potential loyalist", "New", "Promising", "Need attention"]
TAGS = ["vip", "wholesale"]
STAGES = ["new_customer", "active", "loyal", "won_back"]
LAST_PURCHASE_DAYS = 180

FILTER: dict[str, Any] = {
    "and": [
        {"field": "city", "op": "in", "value": CITIES},
        {"field": "value.rfm_segment", "op": "in", "value": RFM},
        {"field": "value.last_purchase_at", "op": "in_last_days", "value": LAST_PURCHASE_DAYS},
        {"field": "tags", "op": "in", "value": TAGS},
        {"field": "lifecycle.stage", "op": "in", "value": STAGES},
    ]
}

# The same five conditions, written by hand: $1 workspace, $2 cities, $3 RFM, $4 since, $5 tags, $6 stages.
TARGET_SQL = """
SELECT c.id FROM customers c
JOIN customer_values v ON v.workspace_id = c.workspace_id AND v.customer_id = c.id
JOIN customer_stages s ON s.workspace_id = c.workspace_id AND s.customer_id = c.id
WHERE c.workspace_id = $1 AND c.deleted_at IS NULL
  AND c.city = ANY($2::text[]) AND v.rfm_segment = ANY($3::text[]) AND v.last_purchase_at >= $4
  AND c.tags && $5::text[] AND s.stage = ANY($6::text[])
"""
# $7 segment, $8 now, $9 actor.
FLOOR_REFRESH_SQL = f"""
WITH target AS ({TARGET_SQL}),
added AS (
    INSERT INTO segment_members (workspace_id, segment_id, customer_id, added_at)
    SELECT $1, $7, t.id, $8 FROM target t
    WHERE NOT EXISTS (SELECT 1 FROM segment_members m
                      WHERE m.workspace_id = $1 AND m.segment_id = $7 AND m.customer_id = t.id)
    ON CONFLICT DO NOTHING
    RETURNING customer_id
),
removed AS (
    DELETE FROM segment_members m
    WHERE m.workspace_id = $1 AND m.segment_id = $7 AND NOT EXISTS (SELECT 1 FROM target t WHERE t.id = m.customer_id)
    RETURNING customer_id
),
events AS (
    INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data)
    SELECT $1, guanxi_uuid7(), e.type, $8, $9::jsonb,
           jsonb_build_object('segment_id', $7::text, 'customer_id', e.customer_id)
    FROM (SELECT 'segment.member_added' AS type, customer_id FROM added
          UNION ALL SELECT 'segment.member_removed', customer_id FROM removed) e
    RETURNING 1
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM removed), (SELECT count(*) FROM events)
"""
PREVIEW_COUNT_SQL = f"SELECT count(*) FROM ({TARGET_SQL}) t"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="timed steady refreshes (service and floor each)")
    parser.add_argument("--previews", type=int, default=10, help="measured previews (service and floor each)")
    parser.add_argument("--skip-lifecycle", action="store_true", help="skip scenario 1 (stages must exist)")
    args, _unknown = parser.parse_known_args(argv)
    if args.repeat < 1 or args.previews < 1:
        parser.error("--repeat and --previews must be at least 1")
    return args


def floor_args(workspace_id: uuid.UUID, now: datetime) -> list[Any]:
    return [workspace_id, CITIES, RFM, now - timedelta(days=LAST_PURCHASE_DAYS), TAGS, STAGES]


async def ensure_values(data: ValueData, sessions: async_sessionmaker[AsyncSession], conn: asyncpg.Connection) -> None:
    from app.core import clock
    from app.core.access import system_caller
    from app.services.value import customer_values

    if await conn.fetchval("SELECT count(*) FROM customer_values WHERE workspace_id = $1", data.workspace_id):
        return
    # The figures statement alone, raw: the service's recompute adds an LTV fit segments do not need.
    print("  customer_values empty: filling them with FIGURES_ALL via psql (untimed) ...", end="", flush=True)
    started = time.perf_counter()
    ctx = system_caller(data.workspace_id)
    async with sessions() as session:
        model = await customer_values.model_for(session, data.workspace_id)
        params = customer_values._params(model, ctx, now=clock.now(), reason="recompute")
        await session.commit()
    await asyncio.to_thread(run_psql, data.db, [inline_params(customer_values.FIGURES_ALL.text, params)])
    await vacuum_analyze(conn, ("customer_values", "tier_changes", "outbox_events"))
    print(f" {time.perf_counter() - started:.1f} s")


async def reset_stages(conn: asyncpg.Connection, workspace_id: uuid.UUID) -> None:
    for table in ("stage_history", "customer_stages", "outbox_events"):
        await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1", workspace_id)
    await vacuum_analyze(conn, ("stage_history", "customer_stages", "outbox_events"))
    await settle(conn)


async def warm(conn: asyncpg.Connection, workspace_id: uuid.UUID) -> None:
    """Untimed: vacuum what the last step wrote, wait for autovacuum, and read the segment's tables once,
    so whichever side runs first does not pay for a cold cache."""
    await vacuum_analyze(conn, ("stage_history", "customer_stages", "segment_members", "outbox_events"))
    await settle(conn)
    await conn.fetchval(PREVIEW_COUNT_SQL, *floor_args(workspace_id, datetime.now(UTC)))


async def service_rules(sessions: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID) -> dict[str, Any]:
    from app.core.access import system_caller
    from app.services.segments import lifecycle

    started = time.perf_counter()
    moved = await lifecycle.apply_rules_in_chunks(sessions, system_caller(workspace_id))
    done = time.perf_counter()
    return {"total_s": round(done - started, 3), "moved": moved}


def floor_rules(data: ValueData) -> dict[str, Any]:
    from app.core.access import system_caller
    from app.core.clock import now
    from app.services.segments import lifecycle

    ctx = system_caller(data.workspace_id)
    params = {
        "ws": data.workspace_id,
        "now": now(),
        "actor": orjson.dumps(ctx.actor).decode(),
        "lo": None,
        "hi": None,
        **lifecycle.RULES,
    }
    run = run_psql(data.db, [inline_params(lifecycle.RULES_RANGE.text, params)])
    return {"total_s": round(run.seconds, 3), "psql_wall_s": round(run.wall_seconds, 3)}


async def run_lifecycle(
    data: ValueData, sessions: async_sessionmaker[AsyncSession], conn: asyncpg.Connection
) -> dict[str, Any]:
    ws = data.workspace_id
    out: dict[str, Any] = {}
    await reset_stages(conn, ws)
    floor_first = await asyncio.to_thread(floor_rules, data)
    moved = await conn.fetchval("SELECT count(*) FROM customer_stages WHERE workspace_id = $1", ws)
    print(f"  lifecycle first pass, floor (psql): {floor_first['total_s']:.2f} s ({moved:,} customers staged)")
    await reset_stages(conn, ws)
    service_first = await service_rules(sessions, ws)
    print(f"  lifecycle first pass, service: {service_first['total_s']:.2f} s ({service_first['moved']:,} moved)")
    await vacuum_analyze(conn, ("stage_history", "customer_stages", "outbox_events"))
    await settle(conn)
    service_again = await service_rules(sessions, ws)
    print(f"  lifecycle re-run, service: {service_again['total_s']:.2f} s ({service_again['moved']:,} moved)")
    floor_again = await asyncio.to_thread(floor_rules, data)
    print(f"  lifecycle re-run, floor (psql): {floor_again['total_s']:.2f} s")
    stages = await conn.fetch(
        "SELECT stage, count(*) AS n FROM customer_stages WHERE workspace_id = $1 GROUP BY stage ORDER BY 2 DESC", ws
    )
    out["first_pass"] = {"service": service_first, "floor": floor_first}
    out["re_run"] = {"service": service_again, "floor": floor_again}
    out["stages"] = {r["stage"]: r["n"] for r in stages}
    worst = max(service_first["total_s"], service_again["total_s"])
    out["verdict"] = verdict(worst < LIFECYCLE_TARGET_S)
    return out


async def create_segment(sessions: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, name: str) -> uuid.UUID:
    from app.core.access import system_caller
    from app.services.segments import segments

    async with sessions() as session:
        segment = await segments.create(
            session, system_caller(workspace_id), name=name, description="bench", kind="dynamic", filter_=FILTER
        )
        await session.commit()
        return segment.id


async def service_refresh(
    sessions: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, segment_id: uuid.UUID
) -> dict[str, Any]:
    from app.core.access import system_caller
    from app.services.segments import segments

    async with sessions() as session:
        started = time.perf_counter()
        segment = await segments.get(session, system_caller(workspace_id), segment_id, lock=True)
        joined, left = await segments.refresh(session, segment)
        ran = time.perf_counter()
        await session.commit()
        done = time.perf_counter()
        members = segment.member_count
    return {
        "total_s": round(done - started, 3),
        "commit_s": round(done - ran, 3),
        "joined": joined,
        "left": left,
        "members": members,
    }


async def floor_refresh(conn: asyncpg.Connection, workspace_id: uuid.UUID, segment_id: uuid.UUID) -> dict[str, Any]:
    actor = orjson.dumps({"type": "system", "id": None}).decode()
    started = time.perf_counter()
    async with conn.transaction():
        now = datetime.now(UTC)
        joined, left, _events = await conn.fetchrow(
            FLOOR_REFRESH_SQL, *floor_args(workspace_id, now), segment_id, now, actor
        )
        members = await conn.fetchval(
            "SELECT count(*) FROM segment_members WHERE workspace_id = $1 AND segment_id = $2", workspace_id, segment_id
        )
        await conn.execute(
            "UPDATE segments SET member_count = $3, refreshed_at = $4, refresh_requested_at = NULL "
            "WHERE workspace_id = $1 AND id = $2",
            workspace_id,
            segment_id,
            members,
            now,
        )
        await conn.execute(
            'INSERT INTO segment_sizes (workspace_id, id, segment_id, measured_at, members, joined, "left") '
            "VALUES ($1, guanxi_uuid7(), $2, $3, $4, $5, $6)",
            workspace_id,
            segment_id,
            now,
            members,
            joined,
            left,
        )
    done = time.perf_counter()
    return {"total_s": round(done - started, 3), "joined": joined, "left": left, "members": members}


async def run_segments(
    args: argparse.Namespace, data: ValueData, sessions: async_sessionmaker[AsyncSession], conn: asyncpg.Connection
) -> dict[str, Any]:
    ws = data.workspace_id
    # Earlier runs' segments (members and sizes cascade) and events.
    await conn.execute("DELETE FROM segments WHERE workspace_id = $1 AND name LIKE $2", ws, SEGMENT_PREFIX + "%")
    await conn.execute("DELETE FROM outbox_events WHERE workspace_id = $1", ws)
    await vacuum_analyze(conn, ("segments", "segment_members", "segment_sizes", "outbox_events"))
    service_id = await create_segment(sessions, ws, SEGMENT_PREFIX + " 5 conditions (service)")
    floor_id = await create_segment(sessions, ws, SEGMENT_PREFIX + " 5 conditions (floor)")
    await warm(conn, ws)
    first_floor = await floor_refresh(conn, ws, floor_id)
    print(f"  segment first refresh, floor: {first_floor['total_s']:.2f} s ({first_floor['joined']:,} joined)")
    await warm(conn, ws)
    first_service = await service_refresh(sessions, ws, service_id)
    print(f"  segment first refresh, service: {first_service['total_s']:.2f} s ({first_service['joined']:,} joined)")
    await warm(conn, ws)
    steady: dict[str, list[dict[str, Any]]] = {"service": [], "floor": []}
    for i in range(args.repeat):
        for who in ("floor", "service") if i % 2 == 0 else ("service", "floor"):
            if who == "service":
                result = await service_refresh(sessions, ws, service_id)
            else:
                result = await floor_refresh(conn, ws, floor_id)
            print(
                f"  segment steady refresh {i + 1}, {who}: {result['total_s']:.3f} s "
                f"(+{result['joined']}/-{result['left']}, {result['members']:,} members)",
                flush=True,
            )
            steady[who].append(result)
    differ = await conn.fetchval(
        "SELECT count(*) FROM ((SELECT customer_id FROM segment_members WHERE workspace_id = $1 AND segment_id = $2 "
        "EXCEPT SELECT customer_id FROM segment_members WHERE workspace_id = $1 AND segment_id = $3) UNION ALL "
        "(SELECT customer_id FROM segment_members WHERE workspace_id = $1 AND segment_id = $3 "
        "EXCEPT SELECT customer_id FROM segment_members WHERE workspace_id = $1 AND segment_id = $2)) d",
        ws,
        service_id,
        floor_id,
    )
    if differ:
        raise BenchError(f"service and floor segments differ by {differ} members: the floor is not equivalent")
    service_s = median([r["total_s"] for r in steady["service"]])
    floor_s = median([r["total_s"] for r in steady["floor"]])
    first_ratio = first_service["total_s"] / first_floor["total_s"] if first_floor["total_s"] else None
    ratio = service_s / floor_s if floor_s else None
    worst = max(first_service["total_s"], service_s)
    return {
        "filter": FILTER,
        "members": first_service["members"],
        "first": {
            "service": first_service,
            "floor": first_floor,
            "ratio": round(first_ratio, 3) if first_ratio else None,
        },
        "steady": {
            "service": steady["service"],
            "floor": steady["floor"],
            "service_median_s": round(service_s, 3),
            "floor_median_s": round(floor_s, 3),
            "ratio": round(ratio, 3) if ratio else None,
        },
        "verdict_absolute": verdict(worst < REFRESH_TARGET_S),
        "verdict_ratio": verdict(
            ratio is not None
            and ratio <= REFRESH_TARGET_RATIO
            and first_ratio is not None
            and first_ratio <= REFRESH_TARGET_RATIO
        ),
    }


async def run_previews(
    args: argparse.Namespace, data: ValueData, sessions: async_sessionmaker[AsyncSession], conn: asyncpg.Connection
) -> dict[str, Any]:
    from app.core.access import system_caller
    from app.services.customers.customer_output import COLUMN_NAMES
    from app.services.segments import segments

    ctx = system_caller(data.workspace_id)
    columns = ", ".join(f"c.{name}" for name in COLUMN_NAMES)
    page_sql = (
        f"SELECT {columns} FROM customers c WHERE c.workspace_id = $1 AND c.id IN ({TARGET_SQL}) "
        "ORDER BY c.created_at DESC, c.id DESC LIMIT 20"
    )
    await warm(conn, data.workspace_id)
    warmup = 2
    service_times: list[float] = []
    floor_times: list[float] = []
    service_count = floor_count = -1
    for n in range(args.previews + warmup):
        started = time.perf_counter()
        async with sessions() as session:
            service_count, rows = await segments.preview(session, ctx, FILTER, limit=20)
            await session.commit()
        if n >= warmup:
            service_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        bound = floor_args(data.workspace_id, datetime.now(UTC))
        floor_count = await conn.fetchval(PREVIEW_COUNT_SQL, *bound)
        page = await conn.fetch(page_sql, *bound)
        if n >= warmup:
            floor_times.append(time.perf_counter() - started)
        if [r["id"] for r in rows] != [r["id"] for r in page]:
            raise BenchError("service and floor previews return different first pages")
    if service_count != floor_count:
        raise BenchError(f"preview counts differ: service {service_count}, floor {floor_count}")
    service = summary(service_times)
    floor = summary(floor_times)
    return {
        "count": service_count,
        "service": service,
        "floor": floor,
        "ratio_p95": round(service["p95_ms"] / floor["p95_ms"], 3) if floor["p95_ms"] else None,
        "verdict": verdict(service["p95_ms"] < PREVIEW_TARGET_MS),
    }


def print_tables(
    lifecycle_out: dict[str, Any] | None, seg: dict[str, Any], preview: dict[str, Any], data: ValueData
) -> list[str]:
    verdicts: list[str] = []
    if lifecycle_out is not None:
        print()
        print(f"Lifecycle rules over all {data.customers:,} customers: 50k per transaction, 2 at once")
        print(f"  {'':<32} {'service s':>10} {'floor s':>9} {'ratio':>6} {'moved':>10}")
        for key, title in (("first_pass", "first pass (nobody staged)"), ("re_run", "re-run (steady)")):
            s, f = lifecycle_out[key]["service"], lifecycle_out[key]["floor"]
            ratio = s["total_s"] / f["total_s"] if f["total_s"] else float("nan")
            print(f"  {title:<32} {s['total_s']:>10.2f} {f['total_s']:>9.2f} {ratio:>6.2f} {s['moved']:>10,}")
        print(f"  stages: {lifecycle_out['stages']}")
        print(f"  target < {LIFECYCLE_TARGET_S:g} s (worst of the two)   {lifecycle_out['verdict']}")
        verdicts.append(lifecycle_out["verdict"])
    print()
    print(f"5-condition dynamic segment over {data.customers:,} customers ({seg['members']:,} members):")
    print("  city in 5 + RFM segment in 6 + last purchase ≤ 180 days (value.last_purchase_at) + tag vip|wholesale")
    print("  + lifecycle stage in 4; refresh + COMMIT; floor: hand-written INSERT/DELETE diff via asyncpg")
    print(f"  {'':<32} {'service s':>10} {'floor s':>9} {'ratio':>6}")
    first = seg["first"]
    print(
        f"  {'first (all join)':<32} {first['service']['total_s']:>10.3f} {first['floor']['total_s']:>9.3f} "
        f"{first['ratio'] or float('nan'):>6.2f}"
    )
    steady = seg["steady"]
    print(
        f"  {'steady (median of ' + str(len(steady['service'])) + ')':<32} {steady['service_median_s']:>10.3f} "
        f"{steady['floor_median_s']:>9.3f} {steady['ratio'] or float('nan'):>6.2f}"
    )
    print(
        f"  target < {REFRESH_TARGET_S:g} s   {seg['verdict_absolute']};  ratio ≤ {REFRESH_TARGET_RATIO:g}   "
        f"{seg['verdict_ratio']}"
    )
    verdicts += [seg["verdict_absolute"], seg["verdict_ratio"]]
    print()
    print(f"Preview (count {preview['count']:,} + first page of 20), sequential")
    print(f"  {'':<8} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name in ("floor", "service"):
        s = preview[name]
        print(f"  {name:<8} {s['n']:>4} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['max_ms']:>8.1f}")
    print(
        f"  service p95 {preview['service']['p95_ms']:.1f} ms   target < {PREVIEW_TARGET_MS:g} ms   "
        f"{preview['verdict']}   (service/floor p95 = {preview['ratio_p95']:.2f})"
    )
    verdicts.append(preview["verdict"])
    return verdicts


async def run(args: argparse.Namespace, data: ValueData) -> tuple[dict[str, Any], list[str]]:
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings

    settings = get_settings()
    engine = create_engine(data.db.url, settings)
    sessions = create_sessionmaker(engine)
    conn = await asyncpg.connect(data.db.dsn)
    try:
        await ensure_values(data, sessions, conn)
        waited = await asyncio.to_thread(wait_for_quiet_machine, args)
        lifecycle_out = None
        if args.skip_lifecycle:
            if not await conn.fetchval(
                "SELECT count(*) FROM customer_stages WHERE workspace_id = $1", data.workspace_id
            ):
                raise BenchError("--skip-lifecycle needs stages from an earlier run")
        else:
            lifecycle_out = await run_lifecycle(data, sessions, conn)
        seg = await run_segments(args, data, sessions, conn)
        preview = await run_previews(args, data, sessions, conn)
    finally:
        await conn.close()
        await engine.dispose()
    verdicts = print_tables(lifecycle_out, seg, preview, data)
    body = {
        "settings": {
            "repeat": args.repeat,
            "previews": args.previews,
            "statement_timeout_ms": settings.statement_timeout_ms,
            "waited_for_other_benches_s": round(waited, 1),
            "last_purchase_stands_for_last_interaction": True,
        },
        "targets": {
            "lifecycle_s": LIFECYCLE_TARGET_S,
            "refresh_s": REFRESH_TARGET_S,
            "refresh_ratio": REFRESH_TARGET_RATIO,
            "preview_p95_ms": PREVIEW_TARGET_MS,
        },
        "lifecycle": lifecycle_out,
        "segment": seg,
        "preview": preview,
    }
    return body, verdicts


def main(argv: list[str] | None = None) -> int:
    os.chdir(ROOT)  # the embedded server lives in ./.data
    args = parse_args(argv)
    configure_environment(args)
    started = now_utc()
    print(f"guanxi segments bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    try:
        plan = order_plan(args)
        data = prepare_value_data(plan, reseed=args.reseed, database=args.database)
        print_header(data)
        body, verdicts = asyncio.run(run(args, data))
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 2
    path = write_results("segments", started, data, body)
    print(f"\nfinished {datetime.now(UTC):%H:%M:%S} UTC; results in {path.relative_to(ROOT)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
