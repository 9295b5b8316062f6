"""The attempts one worker has in flight, counted per attempt rather than per job.

Jobs carry one attempt (events committed one at a time) or several (a burst); counting jobs would
leave a worker of trickle traffic far below its concurrency, or a worker of bursts far above it. A
job takes slots as they free up, one per attempt it claims, and gives each back when its send ends,
so its other attempts never wait for its slowest. One endpoint holds at most `per_endpoint` of
them: a slow receiver keeps the rest of the worker's slots free for everyone else."""

import asyncio
import uuid
from collections import Counter


class Slots:
    def __init__(self, total: int, per_endpoint: int) -> None:
        self.total = total
        self.per_endpoint = min(per_endpoint, total)
        self.in_flight = 0
        self.by_endpoint: Counter[uuid.UUID] = Counter()
        # Attempts of the jobs this worker runs that wait for a slot, by endpoint (None: not yet
        # known): see `taking_jobs`.
        self.waiting: Counter[uuid.UUID | None] = Counter()
        # Replaced at each release: whoever waits wakes and looks again.
        self._released = asyncio.Event()

    def taking_jobs(self) -> bool:
        """Whether the worker should take more jobs: while the attempts in flight and those that
        could have the next free slots are fewer than twice its slots. A worker counting jobs alone
        would take the whole of a burst (jobs of many attempts each) and leave other workers idle;
        this way it keeps enough to refill every slot as it frees, and the rest of the queue to the
        others. Attempts for an endpoint that holds its whole share while the worker has slots free
        are not counted: they cannot have those slots, and counting them would keep out the jobs of
        every other endpoint for as long as a slow receiver holds its requests."""
        full = self.in_flight >= self.total
        ready = sum(
            count
            for endpoint, count in self.waiting.items()
            if full or endpoint is None or self.by_endpoint[endpoint] < self.per_endpoint
        )
        return self.in_flight + ready < 2 * self.total

    def wait(self, endpoint: uuid.UUID | None, count: int) -> None:
        """`count` attempts of a running job (fewer when negative) wait for slots of `endpoint`."""
        self.waiting[endpoint] += count
        if self.waiting[endpoint] <= 0:
            del self.waiting[endpoint]

    def free(self, endpoint: uuid.UUID) -> int:
        return min(self.total - self.in_flight, self.per_endpoint - self.by_endpoint[endpoint])

    async def take(self, endpoint: uuid.UUID, wanted: int, *, patience: float | None = None) -> int:
        """Up to `wanted` slots for `endpoint`, as soon as at least one is free. While the worker is
        full this waits as long as it takes; once the endpoint's share is all that stands in the way
        and `patience` seconds have passed, it takes none (0)."""
        loop = asyncio.get_running_loop()
        deadline = None if patience is None else loop.time() + patience
        while (free := self.free(endpoint)) <= 0:
            # Only the endpoint's share stands in the way: other endpoints' jobs could use the slots.
            held_back = self.in_flight < self.total
            if held_back and deadline is not None and loop.time() >= deadline:
                return 0
            wait = None if deadline is None or not held_back else deadline - loop.time()
            try:
                await asyncio.wait_for(self._released.wait(), timeout=wait)
            except TimeoutError:
                pass
        taken = min(wanted, free)
        self.in_flight += taken
        self.by_endpoint[endpoint] += taken
        return taken

    def release(self, endpoint: uuid.UUID, count: int) -> None:
        if count <= 0:
            return
        self.in_flight -= count
        self.by_endpoint[endpoint] -= count
        if self.by_endpoint[endpoint] <= 0:
            del self.by_endpoint[endpoint]
        self._released.set()
        self._released = asyncio.Event()
