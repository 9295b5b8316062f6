"""Request rate limits per caller (API key or user), with the `limits` library's fixed windows, and
the sign-in throttle against password guessing.

Its asyncio storage: the threaded one starts a timer thread every 10 ms under load to expire keys.

Counted in each process: with N workers the effective limit is up to N times the setting. A limit
shared across processes would keep its counters in PostgreSQL or Redis."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter

from app.core.access import Caller
from app.core.errors import DomainError


class TooManyRequests(DomainError):
    status, title, slug = 429, "Too many requests", "rate-limited"


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.limiter = FixedWindowRateLimiter(MemoryStorage())

    async def check(self, ctx: Caller) -> None:
        key = f"{ctx.workspace_id}:{ctx.actor_type}:{ctx.actor_id}"
        if not await self.limiter.hit(self.item, key):
            reset = (await self.limiter.get_window_stats(self.item, key)).reset_time
            raise TooManyRequests(
                f"More than {self.item.amount} requests a minute; retry later.",
                retry_after=max(1, math.ceil(reset - time.time())),
            )


@dataclass(slots=True)
class _Failures:
    count: int
    last_at: float
    locked_until: float


class SignInThrottle:
    """Failed sign-ins counted by account (workspace and normalised email) and by source address.

    From the `threshold`-th failure in a row a key is locked for `base` seconds, doubling with
    each further failure up to `cap`: guessing slows to one try per `cap`, and a real user waits
    at most `cap` after the guessing stops. Requests while locked are refused (429) without
    checking the password, so they neither count nor reveal whether a guess was right. A success
    clears the account (not the source); a key is forgotten `window` seconds after its last
    failure or lock. The source limit is higher: people behind one address share it."""

    def __init__(
        self,
        *,
        per_account: int = 5,
        per_source: int = 50,
        base: float = 60,
        cap: float = 900,
        window: float = 900,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.thresholds = {"account": per_account, "source": per_source}
        self.base, self.cap, self.window, self.clock = base, cap, window, clock
        self.failures: dict[tuple[str, str], _Failures] = {}

    def check(self, *, account: str, source: str) -> None:
        now = self.clock()
        waits = [
            entry.locked_until - now
            for key in (("account", account), ("source", source))
            if (entry := self._live(key, now)) is not None and entry.locked_until > now
        ]
        if waits:
            raise TooManyRequests("Too many failed sign-ins; retry later.", retry_after=max(1, math.ceil(max(waits))))

    def failed(self, *, account: str, source: str) -> None:
        now = self.clock()
        if len(self.failures) >= _SWEEP_AT:
            for stale in [key for key in self.failures if self._live(key, now) is None]:
                self.failures.pop(stale, None)
        for key in (("account", account), ("source", source)):
            entry = self._live(key, now) or _Failures(count=0, last_at=now, locked_until=0)
            entry.count += 1
            entry.last_at = now
            over = entry.count - self.thresholds[key[0]]
            if over >= 0:
                entry.locked_until = now + min(self.base * 2 ** min(over, 32), self.cap)
            self.failures[key] = entry

    def succeeded(self, *, account: str) -> None:
        self.failures.pop(("account", account), None)

    def _live(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self.failures.get(key)
        if entry is not None and max(entry.last_at, entry.locked_until) + self.window < now:
            del self.failures[key]
            return None
        return entry


# Past this many keys the throttle sweeps out the forgotten ones, so guessing at many addresses
# cannot grow it without limit (each source is itself limited).
_SWEEP_AT = 10_000
