"""The service's database connections are killed (`pg_terminate_backend`) again and again under a
mixed load: never a 500, nothing hangs, every acknowledged write is in the database exactly once."""

import asyncio
import time
from collections.abc import Callable

from bench.harness import ServerProcess
from chaos.cluster import Cluster
from chaos.conftest import DATABASE, SERVICE_APPLICATION, Tenant, seed_customers
from chaos.load import MixedLoad, check_acks
from chaos.timeline import describe, first_ok_after, server_errors, unanswered, without_retry_after

KILLS = 20
KILL_INTERVAL_SECONDS = 0.5


async def test_terminated_backends_under_load(
    cluster: Cluster, make_service: Callable[..., ServerProcess], tenant: Tenant
) -> None:
    service = make_service()
    await seed_customers(service.base_url, tenant)
    origin = time.monotonic()
    events: dict[str, float] = {}
    killed: list[int] = []
    async with MixedLoad(service.base_url, tenant.api_key, tenant.customer_ids) as load:
        await asyncio.sleep(4)
        events["first kill"] = time.monotonic()
        for _ in range(KILLS):
            killed.append(await cluster.terminate_backends(DATABASE, SERVICE_APPLICATION))
            await asyncio.sleep(KILL_INTERVAL_SECONDS)
        events["last kill"] = time.monotonic()
        await asyncio.sleep(4)
    log = load.log
    acks = await check_acks(cluster.dsn(DATABASE), tenant.workspace_id, log)
    first_ok = first_ok_after(log.outcomes, events["last kill"])

    print(f"\n  {KILLS} rounds of pg_terminate_backend, every {KILL_INTERVAL_SECONDS:g} s ({load.clients} clients)")
    print(describe(log, events, origin))
    print(f"     backends killed per round: {killed} (total {sum(killed)})")
    print(f"     first 2xx {first_ok} s after the last kill")
    print(f"     writes: {acks}")

    failed = len(server_errors(log.outcomes))
    hung = len(unanswered(log.outcomes))
    assert sum(killed) >= KILLS, "the kills found no connection of the service to terminate"
    assert failed == 0, f"5xx other than 503: {log.statuses()}"
    assert hung == 0, f"unanswered or slower than the bound: {unanswered(log.outcomes)[:5]}"
    assert len(without_retry_after(log.outcomes)) == 0
    assert first_ok is not None and first_ok <= 2.0
    assert acks.sound, acks
    assert acks.acknowledged > 0
