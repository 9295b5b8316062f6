"""PostgreSQL crashes (`pg_ctl stop -m immediate`) under a mixed load, then starts again: at once, or
after 15 s down. Only 503 with Retry-After while it is away, the first 2xx within 2 s of its return,
/readyz 503 then 200, and every acknowledged write in the database exactly once."""

import asyncio
import time
from collections.abc import Callable

import pytest

from bench.harness import ServerProcess
from chaos.cluster import Cluster
from chaos.conftest import DATABASE, Tenant, seed_customers
from chaos.load import MixedLoad, check_acks
from chaos.timeline import (
    Window,
    describe,
    first_ok_after,
    first_status_after,
    server_errors,
    unanswered,
    without_retry_after,
)

RECOVERY_SECONDS = 2.0
# Requests already inside the service when the server died answer with the error they met; from
# this long after the crash on, every request must see the database gone.
SETTLE_SECONDS = 0.5


@pytest.mark.parametrize("down_seconds", [0.0, 15.0], ids=["restart", "down-15s"])
async def test_database_crash_under_load(
    cluster: Cluster, make_service: Callable[..., ServerProcess], tenant: Tenant, down_seconds: float
) -> None:
    service = make_service()
    await seed_customers(service.base_url, tenant)
    origin = time.monotonic()
    events: dict[str, float] = {}
    async with MixedLoad(service.base_url, tenant.api_key, tenant.customer_ids) as load:
        await asyncio.sleep(5)
        events["crash"] = await asyncio.to_thread(cluster.stop, "immediate")
        await asyncio.sleep(down_seconds)
        events["started"] = await asyncio.to_thread(cluster.start)
        await asyncio.sleep(8)
    log = load.log
    crash, back = events["crash"], events["started"]
    outage = Window(crash + SETTLE_SECONDS, back)
    in_outage = [o for o in log.outcomes if outage.holds(o)]
    readyz_down = [o for o in log.readyz if outage.holds(o)]
    first_ok = first_ok_after(log.outcomes, back)
    ready_again = first_status_after(log.readyz, back, 200)
    acks = await check_acks(cluster.dsn(DATABASE), tenant.workspace_id, log)

    print(f"\n  database crash, down {down_seconds:g} s (mixed load, {load.clients} clients)")
    print(describe(log, events, origin))
    print(f"     during the outage: {log.statuses(in_outage)}; readyz {log.statuses(readyz_down)}")
    print(f"     first 2xx {first_ok} s after the database was back; readyz 200 after {ready_again} s")
    print(f"     writes: {acks}")

    failed = len(server_errors(log.outcomes))
    hung = len(unanswered(log.outcomes))
    no_retry_after = len(without_retry_after(log.outcomes))
    outage_statuses = {o.status for o in in_outage}
    readyz_statuses = {o.status for o in readyz_down}
    assert failed == 0, f"5xx other than 503: {log.statuses()}"
    assert hung == 0, f"unanswered or slower than the bound: {unanswered(log.outcomes)[:5]}"
    assert no_retry_after == 0
    if down_seconds:
        assert outage_statuses == {503}, log.statuses(in_outage)
        assert readyz_statuses == {503}, log.statuses(readyz_down)
    assert first_ok is not None and first_ok <= RECOVERY_SECONDS
    assert ready_again is not None and ready_again <= RECOVERY_SECONDS
    assert acks.sound, acks
    assert acks.acknowledged > 0 and acks.retried > 0
