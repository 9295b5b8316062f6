#!/usr/bin/env python3
"""Lead scoring bench (issue #25, "Lead scoring"): the recompute against a raw SQL floor.

Shares `guanxi_bench_value` with bench_value.py and bench_segments.py (bench/value_seed.py: 1M
customers, ~2M orders, ~10M lines by default; customers from seed.py's generator, set-based);
customer_values are computed first (untimed) when empty. Six rules: city, tag, orders, spend, RFM
segment, and a decaying contact rule (the last-contact join and the halving run for every customer).

  * Service: `lead_scoring.recompute_in_chunks(sessions, ctx, document, now=...)` as the worker runs
    it (ranges of 50,000 customers, each one statement committed on its own, two at once).
  * Floor: the same statement over the whole workspace in one go (open bounds), its parameters as
    literals, raw through psql (BEGIN; statement; COMMIT, timed by \\timing).

"first pass": no customer has a score (the scores are deleted before, untimed), so every customer
with a score other than 0 is written; "re-run": the next pass, which writes nothing. Targets: first
pass < 60 s and ≤ 1.3 × the floor. The order of service and floor alternates between repeats.

Results also go to bench/results/lead-scoring-<UTC timestamp>.json. Flags meant for other benches are ignored.

    .venv/bin/python bench/bench_lead_scoring.py
    .venv/bin/python bench/bench_lead_scoring.py --small
"""

import argparse
import asyncio
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from bench_segments import ensure_values
from harness import ROOT, BenchError
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from value_seed import (
    ValueData,
    add_size_arguments,
    configure_environment,
    median,
    now_utc,
    order_plan,
    prepare_value_data,
    print_header,
    run_psql,
    settle,
    sql_literal,
    vacuum_analyze,
    verdict,
    wait_for_quiet_machine,
    write_results,
)

TARGET_S = 60.0
TARGET_RATIO = 1.3
RULES: dict[str, Any] = {
    "half_life_days": 30,
    "rules": [
        {"name": "city", "filter": {"field": "city", "op": "in", "value": ["深圳市", "上海市"]}, "points": 20},
        {"name": "vip", "filter": {"field": "tags", "op": "contains", "value": "vip"}, "points": 15},
        {"name": "repeat", "filter": {"field": "value.order_count", "op": "gte", "value": 2}, "points": 25},
        {"name": "spend", "filter": {"field": "value.total_spend", "op": "gte", "value": 1000}, "points": 30},
        {
            "name": "rfm",
            "filter": {"field": "value.rfm_segment", "op": "in", "value": ["At risk", "Hibernating"]},
            "points": -20,
        },
        {
            "name": "contacted",
            "filter": {"field": "activity.interactions_365d", "op": "gte", "value": 0},
            "points": 40,
            "decays": True,
        },
    ],
}


# As the service stores it: every rule says whether it decays.
DOCUMENT: dict[str, Any] = {**RULES, "rules": [{"decays": False, **rule} for rule in RULES["rules"]]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_arguments(parser)
    parser.add_argument("--repeat", type=int, default=2, help="timed first passes (service and floor each)")
    args, _unknown = parser.parse_known_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


async def reset_scores(conn: asyncpg.Connection, data: ValueData) -> None:
    await conn.execute("DELETE FROM customer_lead_scores WHERE workspace_id = $1", data.workspace_id)
    await vacuum_analyze(conn, ("customer_lead_scores",))
    await settle(conn)


async def service_pass(sessions: async_sessionmaker[AsyncSession], data: ValueData, now: datetime) -> dict[str, Any]:
    from app.core.access import system_caller
    from app.services.segments import lead_scoring

    started = time.perf_counter()
    changed = await lead_scoring.recompute_in_chunks(sessions, system_caller(data.workspace_id), DOCUMENT, now=now)
    return {"total_s": round(time.perf_counter() - started, 3), "changed": changed}


async def floor_sql(sessions: async_sessionmaker[AsyncSession], data: ValueData, now: datetime) -> str:
    """The service's statement for the whole workspace, its parameters inlined."""
    from app.core.access import system_caller
    from app.services.segments import lead_scoring

    async with sessions() as session:
        statement = await lead_scoring.score_statement(
            session, system_caller(data.workspace_id), DOCUMENT, ids=(None, None), now=now
        )
    dialect = postgresql.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params

    def literal(match: re.Match[str]) -> str:
        if match.group(1) not in params:
            raise BenchError(f"no value for :{match.group(1)}")
        return sql_literal(params[match.group(1)])

    # value_seed.inline_params would read `:x::type` as `:x` minus its last letter: SQLAlchemy writes such casts.
    return re.sub(r"(?<![:\w]):(\w+)", literal, str(compiled))


async def floor_pass(data: ValueData, sql: str, conn: asyncpg.Connection) -> dict[str, Any]:
    run = await asyncio.to_thread(run_psql, data.db, [sql])
    changed = await conn.fetchval(
        "SELECT count(*) FROM customer_lead_scores WHERE workspace_id = $1", data.workspace_id
    )
    return {"total_s": round(run.seconds, 3), "psql_wall_s": round(run.wall_seconds, 3), "rows": changed}


async def run(args: argparse.Namespace, data: ValueData) -> tuple[dict[str, Any], list[str]]:
    from app.core.db import create_engine, create_sessionmaker
    from app.core.settings import get_settings

    settings = get_settings()
    engine = create_engine(data.db.url, settings)
    sessions = create_sessionmaker(engine)
    conn = await asyncpg.connect(data.db.dsn)
    now = datetime.now(UTC)
    first: dict[str, list[dict[str, Any]]] = {"service": [], "floor": []}
    try:
        await ensure_values(data, sessions, conn)
        waited = await asyncio.to_thread(wait_for_quiet_machine, args)
        sql = await floor_sql(sessions, data, now)
        for i in range(args.repeat):
            for who in ("floor", "service") if i % 2 == 0 else ("service", "floor"):
                await reset_scores(conn, data)
                if who == "service":
                    result = await service_pass(sessions, data, now)
                    print(f"  first pass {i + 1}, service: {result['total_s']:.2f} s ({result['changed']:,} written)")
                else:
                    result = await floor_pass(data, sql, conn)
                    print(f"  first pass {i + 1}, floor (psql): {result['total_s']:.2f} s ({result['rows']:,} rows)")
                first[who].append(result)
        await vacuum_analyze(conn, ("customer_lead_scores",))
        await settle(conn)
        again = await service_pass(sessions, data, now)
        print(f"  re-run, service: {again['total_s']:.2f} s ({again['changed']:,} written)")
        floor_again = await floor_pass(data, sql, conn)
        print(f"  re-run, floor (psql): {floor_again['total_s']:.2f} s")
        scored = await conn.fetchval(
            "SELECT count(*) FROM customer_lead_scores WHERE workspace_id = $1 AND score <> 0", data.workspace_id
        )
    finally:
        await conn.close()
        await engine.dispose()
    if first["service"][-1]["changed"] != first["floor"][-1]["rows"]:
        raise BenchError("the service and the floor wrote different numbers of scores")
    service_s = median([r["total_s"] for r in first["service"]])
    floor_s = median([r["total_s"] for r in first["floor"]])
    ratio = service_s / floor_s if floor_s else float("nan")
    absolute, relative = verdict(service_s < TARGET_S), verdict(ratio <= TARGET_RATIO)
    print()
    print(f"Lead scores over all {data.customers:,} customers ({scored:,} with a score), 6 rules, 1 decaying:")
    print(f"  {'':<28} {'service s':>10} {'floor s':>9} {'ratio':>6}")
    print(f"  {'first pass (median)':<28} {service_s:>10.2f} {floor_s:>9.2f} {ratio:>6.2f}")
    again_ratio = again["total_s"] / floor_again["total_s"] if floor_again["total_s"] else float("nan")
    title = "re-run (writes nothing)"
    print(f"  {title:<28} {again['total_s']:>10.2f} {floor_again['total_s']:>9.2f} {again_ratio:>6.2f}")
    print(f"  target < {TARGET_S:g} s   {absolute};  ratio ≤ {TARGET_RATIO:g}   {relative}")
    body = {
        "settings": {"repeat": args.repeat, "waited_for_other_benches_s": round(waited, 1)},
        "targets": {"first_pass_s": TARGET_S, "ratio": TARGET_RATIO},
        "document": DOCUMENT,
        "first_pass": first,
        "first_pass_median": {"service_s": service_s, "floor_s": floor_s, "ratio": round(ratio, 3)},
        "re_run": {"service": again, "floor": floor_again},
        "scored": scored,
    }
    return body, [absolute, relative]


def main(argv: list[str] | None = None) -> int:
    os.chdir(ROOT)  # the embedded server lives in ./.data
    args = parse_args(argv)
    configure_environment(args)
    started = now_utc()
    print(f"guanxi lead scoring bench, {started:%Y-%m-%d %H:%M:%S} UTC")
    try:
        plan = order_plan(args)
        data = prepare_value_data(plan, reseed=args.reseed, database=args.database)
        print_header(data)
        body, verdicts = asyncio.run(run(args, data))
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 2
    path = write_results("lead-scoring", started, data, body)
    print(f"\nfinished {datetime.now(UTC):%H:%M:%S} UTC; results in {path.relative_to(ROOT)}")
    return 1 if args.fail_on_miss and "MISS" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
