"""The one clock of the service; tests replace `now` to control time."""

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
