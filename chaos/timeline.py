"""Reading a load log against the times of the faults: what was answered when, and how fast it healed."""

import os
from dataclasses import dataclass

from chaos.load import LoadLog, Outcome

# A request the service has not answered after this long counts as hung. The longest bounded paths:
# a statement sent into a silent network waits for the client-side command timeout (statement_timeout
# 5 s + 2 s); a request that waits for a pooled connection waits at most 5 s, then at most 3 s to
# connect. The rest is slack for a shared 2-core machine.
HUNG_SECONDS = 10.0


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    def holds(self, outcome: Outcome) -> bool:
        """The request began and ended inside the window."""
        return self.start <= outcome.started and outcome.ended <= self.end


def first_ok_after(outcomes: list[Outcome], moment: float) -> float | None:
    """Seconds from `moment` to the first 2xx answered after it."""
    ends = [o.ended for o in outcomes if o.ok and o.ended >= moment]
    return min(ends) - moment if ends else None


def first_status_after(outcomes: list[Outcome], moment: float, status: int) -> float | None:
    ends = [o.ended for o in outcomes if o.status == status and o.ended >= moment]
    return min(ends) - moment if ends else None


def last_failure_started_after(outcomes: list[Outcome], moment: float) -> float | None:
    """Seconds from `moment` to the end of the last non-2xx answer to a request sent after it: when
    every request succeeds again."""
    ends = [o.ended for o in outcomes if not o.ok and o.started >= moment]
    return max(ends) - moment if ends else None


def server_errors(outcomes: list[Outcome]) -> list[Outcome]:
    """5xx other than 503, and 500 above all."""
    return [o for o in outcomes if o.status is not None and o.status >= 500 and o.status != 503]


def unanswered(outcomes: list[Outcome]) -> list[Outcome]:
    """No HTTP answer at all, or one that took longer than HUNG_SECONDS."""
    return [o for o in outcomes if o.status is None or o.seconds > HUNG_SECONDS]


def without_retry_after(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status == 503 and not (o.retry_after or "").isdigit()]


def slowest(outcomes: list[Outcome]) -> float:
    return max((o.seconds for o in outcomes), default=0.0)


def describe(log: LoadLog, events: dict[str, float], origin: float) -> str:
    """Counts and timings for the test's printout."""
    lines = [f"     requests {len(log.outcomes)}: {log.statuses()}"]
    worst = sorted(log.outcomes, key=lambda o: o.seconds, reverse=True)[:3]
    lines.append(
        "     slowest: "
        + "; ".join(f"{o.kind} {o.status} sent at +{o.started - origin:.2f} s took {o.seconds:.2f} s" for o in worst)
        + f"; readyz probes {len(log.readyz)}"
    )
    lines.append("     events: " + ", ".join(f"{name} at +{moment - origin:.2f} s" for name, moment in events.items()))
    # The 2 cores are shared: a busy machine stretches every timing above.
    lines.append("     load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return "\n".join(lines)
