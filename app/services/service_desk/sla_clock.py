"""Business-time arithmetic for SLAs: open hours per weekday in a time zone, minus holidays, plus
make-up working days (调休: a weekend day worked in exchange for a longer holiday).

Pure functions of a calendar and instants, so the rules are tested table-driven with fixed times."""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ALWAYS_OPEN = {str(day): [["00:00", "24:00"]] for day in range(7)}
DEFAULT_WEEK = {str(day): [["09:00", "18:00"]] for day in range(5)}


@dataclass(frozen=True)
class Calendar:
    timezone: str = "Asia/Shanghai"
    weekly: dict[str, list[list[str]]] = field(default_factory=lambda: dict(DEFAULT_WEEK))
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    def hours_of(self, day: date) -> list[list[str]]:
        """A holiday is closed; a make-up working day has the hours of the week's first working day
        (Monday's in the usual week), whatever its own weekday's are."""
        if day in self.holidays:
            return []
        if day in self.workdays:
            return next((self.weekly[str(d)] for d in range(7) if self.weekly.get(str(d))), [])
        return self.weekly.get(str(day.weekday()), [])

    def open_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The open periods of a local calendar day, as aware datetimes."""
        tz = ZoneInfo(self.timezone)
        periods = []
        for start, end in self.hours_of(day):
            opens = datetime.combine(day, _parse(start), tz)
            closes = (
                datetime.combine(day + timedelta(days=1), time(0), tz)
                if end == "24:00"
                else datetime.combine(day, _parse(end), tz)
            )
            periods.append((opens, closes))
        return periods


def _parse(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


MAX_DAYS = 3 * 366


def add_business_minutes(start: datetime, minutes: int, calendar: Calendar) -> datetime:
    """The moment `minutes` of open time after `start`."""
    remaining = timedelta(minutes=minutes)
    day = start.astimezone(ZoneInfo(calendar.timezone)).date()
    for _ in range(MAX_DAYS):
        for opens, closes in calendar.open_intervals(day):
            begin = max(opens, start)
            if begin >= closes:
                continue
            available = closes - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        day += timedelta(days=1)
    raise ValueError("the calendar has no open time within three years")


def business_minutes_between(start: datetime, end: datetime, calendar: Calendar) -> int:
    """Open minutes in [start, end); 0 when end is not after start."""
    if end <= start:
        return 0
    total = timedelta()
    day = start.astimezone(ZoneInfo(calendar.timezone)).date()
    last = end.astimezone(ZoneInfo(calendar.timezone)).date()
    while day <= last:
        for opens, closes in calendar.open_intervals(day):
            begin, finish = max(opens, start), min(closes, end)
            if finish > begin:
                total += finish - begin
        day += timedelta(days=1)
    return int(total.total_seconds() // 60)
