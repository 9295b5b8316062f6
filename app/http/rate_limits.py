"""Request rate limits per caller (API key or user), with the `limits` library's fixed windows.

Its asyncio storage: the threaded one starts a timer thread every 10 ms under load to expire keys.

Counted in each process: with N workers the effective limit is up to N times the setting. A limit
shared across processes would keep its counters in PostgreSQL or Redis."""

import math
import time

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
