"""Mixed read/write load against the running service, with a log of every answer.

Each client loops: 80 % reads (a customer by id, or the first page of the list), 20 % creates. Every
create carries an Idempotency-Key and is retried with the same key and body until it is acknowledged
(a 2xx), so a write that failed or whose answer was lost is sent again; a share of acknowledged
writes is sent once more on purpose and must be replayed with the same id. The acknowledged writes
are checked against the database afterwards (`check_acks`).

Times are `time.monotonic()` in this process, the same clock the fault injectors stamp their events
with.
"""

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import asyncpg
import httpx

Kind = Literal["get", "list", "create", "replay"]
# Retried sooner than the service's Retry-After: the load is also the probe that sees recovery.
RETRY_PAUSE_SECONDS = 0.2
REPLAY_SHARE = 0.1


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection error or the client's timeout)
    retry_after: str | None = None
    error: str | None = None
    key: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Write:
    key: str
    name: str
    attempts: int = 0
    acked_id: str | None = None
    # Ids from every 2xx for this key (first answer, retries that were replays, deliberate replays).
    answered_ids: list[str] = field(default_factory=list)
    # The acknowledging answer was a replay: an earlier attempt took effect but its answer was lost.
    acked_by_replay: bool = False
    deliberate_replays: int = 0
    deliberate_replays_marked: int = 0


@dataclass
class LoadLog:
    outcomes: list[Outcome] = field(default_factory=list)
    writes: dict[str, Write] = field(default_factory=dict)
    readyz: list[Outcome] = field(default_factory=list)

    def api(self) -> list[Outcome]:
        return self.outcomes

    def statuses(self, outcomes: list[Outcome] | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes if outcomes is None else outcomes:
            label = str(o.status) if o.status is not None else f"no answer ({o.error})"
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))


class MixedLoad:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        seed_ids: list[str],
        *,
        clients: int = 12,
        write_share: float = 0.2,
        timeout: float = 30.0,
        seed: int = 9,
    ) -> None:
        self.base_url = base_url
        self.headers = {"X-API-Key": api_key}
        self.ids = list(seed_ids)
        self.clients = clients
        self.write_share = write_share
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.log = LoadLog()
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> "MixedLoad":
        limits = httpx.Limits(max_connections=self.clients + 2, max_keepalive_connections=self.clients + 2)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, limits=limits, trust_env=False
        )
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]
        self._tasks.append(asyncio.create_task(self._probe_readiness()))
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        # A client finishes its request in flight (bounded by the timeout) before it stops.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _client(self, n: int) -> None:
        rng = random.Random(self.rng.random() + n)
        while not self.stop.is_set():
            if rng.random() < self.write_share:
                await self._write(rng)
            elif rng.random() < 0.5 and self.ids:
                await self._request("get", "GET", f"/api/v1/customers/{rng.choice(self.ids)}")
            else:
                await self._request("list", "GET", "/api/v1/customers?limit=20")

    async def _write(self, rng: random.Random) -> None:
        key = uuid.uuid4().hex
        write = Write(key=key, name=f"chaos {key}")
        self.log.writes[key] = write
        body = {"name": write.name, "tags": ["chaos"]}
        while write.acked_id is None and not self.stop.is_set():
            write.attempts += 1
            outcome, response = await self._request("create", "POST", "/api/v1/customers", key=key, json=body)
            if response is not None and outcome.ok:
                write.answered_ids.append(str(response.json()["id"]))
                write.acked_id = write.answered_ids[0]
                write.acked_by_replay = _replayed(response)
                self.ids.append(write.acked_id)
            else:
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
        if write.acked_id is not None and rng.random() < REPLAY_SHARE and not self.stop.is_set():
            outcome, response = await self._request("replay", "POST", "/api/v1/customers", key=key, json=body)
            if response is not None and outcome.ok:
                write.answered_ids.append(str(response.json()["id"]))
                write.deliberate_replays += 1
                write.deliberate_replays_marked += _replayed(response)

    async def _request(
        self, kind: Kind, method: str, path: str, *, key: str | None = None, json: object = None
    ) -> tuple[Outcome, httpx.Response | None]:
        headers = {"Idempotency-Key": key} if key else None
        started = time.monotonic()
        response: httpx.Response | None = None
        error: str | None = None
        try:
            response = await self._http.request(method, path, headers=headers, json=json)
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.TransportError as exc:
            error = type(exc).__name__
        outcome = Outcome(
            kind=kind,
            started=started,
            ended=time.monotonic(),
            status=response.status_code if response is not None else None,
            retry_after=response.headers.get("retry-after") if response is not None else None,
            error=error,
            key=key,
        )
        self.log.outcomes.append(outcome)
        if error is not None:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
        return outcome, response

    async def _probe_readiness(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, trust_env=False) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                status: int | None = None
                retry_after: str | None = None
                error: str | None = None
                try:
                    response = await http.get("/readyz")
                    status, retry_after = response.status_code, response.headers.get("retry-after")
                except httpx.TransportError as exc:
                    error = type(exc).__name__
                self.log.readyz.append(Outcome("get", started, time.monotonic(), status, retry_after, error))
                await asyncio.sleep(0.1)


def _replayed(response: httpx.Response) -> bool:
    return bool(response.headers.get("idempotent-replayed") == "true")


@dataclass
class AckCheck:
    attempted: int
    acknowledged: int
    retried: int  # acknowledged writes that needed more than one attempt
    rows_for_acked: int
    lost: list[str]  # acknowledged keys without their row
    duplicated: list[str]  # keys with more than one row
    wrong_id: list[str]  # acknowledged keys whose row has another id, or answered with two ids
    stray: int  # rows no write of this load asked for
    unacknowledged_applied: int  # keys never acknowledged (load stopped) whose row exists: allowed
    acked_by_replay: int  # retries answered from the stored response: the first attempt had committed
    replays: int  # acknowledged writes sent again on purpose
    replays_unmarked: int  # ... answered without Idempotent-Replayed: true

    @property
    def sound(self) -> bool:
        return not (self.lost or self.duplicated or self.wrong_id or self.stray or self.replays_unmarked)

    def __str__(self) -> str:
        return (
            f"{self.acknowledged} of {self.attempted} creates acknowledged ({self.retried} after retries, "
            f"{self.acked_by_replay} of them by a replay), {self.rows_for_acked} rows for them; "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, wrong id {len(self.wrong_id)}, "
            f"stray {self.stray}; "
            f"deliberate replays {self.replays} ({self.replays_unmarked} unmarked); "
            f"unacknowledged but applied {self.unacknowledged_applied}"
        )


async def check_acks(dsn: str, workspace_id: uuid.UUID, log: LoadLog) -> AckCheck:
    """The ack log against the rows: every acknowledged create is there once, with the id it was
    answered with; no key made two rows."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text, name FROM customers WHERE workspace_id = $1 AND name LIKE 'chaos %'", workspace_id
        )
    finally:
        await conn.close()
    by_key: dict[str, list[str]] = {}
    for row in rows:
        by_key.setdefault(row["name"].removeprefix("chaos "), []).append(row["id"])
    acked = [w for w in log.writes.values() if w.acked_id is not None]
    lost = [w.key for w in acked if not by_key.get(w.key)]
    duplicated = [key for key, ids in by_key.items() if len(ids) > 1]
    wrong_id = [
        w.key for w in acked if by_key.get(w.key) and (by_key[w.key] != [w.acked_id] or len(set(w.answered_ids)) != 1)
    ]
    unacked_applied = sum(1 for w in log.writes.values() if w.acked_id is None and by_key.get(w.key))
    stray = sum(len(ids) for key, ids in by_key.items() if key not in log.writes)
    return AckCheck(
        attempted=len(log.writes),
        acknowledged=len(acked),
        retried=sum(1 for w in acked if w.attempts > 1),
        rows_for_acked=sum(len(by_key.get(w.key, [])) for w in acked),
        lost=lost,
        duplicated=duplicated,
        wrong_id=wrong_id,
        stray=stray,
        unacknowledged_applied=unacked_applied,
        acked_by_replay=sum(1 for w in acked if w.acked_by_replay),
        replays=sum(w.deliberate_replays for w in acked),
        replays_unmarked=sum(w.deliberate_replays - w.deliberate_replays_marked for w in acked),
    )
