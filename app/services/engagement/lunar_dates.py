"""Lunar (农历) months and days on the Gregorian calendar, for care rules, through lunar-python
(docs/decisions.md says why that library).

A lunar month and day recur once a lunar year. Two cases have no such day in a given year, and
resolve by one rule each:
* a day past the month's last day (the 30th of a 29-day month, or a 31st read from a Gregorian date
  that stores a lunar birthday) falls on the month's last day;
* a leap month (闰月) is no occurrence: a month and day stored as a date cannot say "leap", so a
  birthday in a leap month is kept, and celebrated, in the ordinary month of that number."""

from dataclasses import dataclass
from datetime import date, timedelta

from lunar_python import Lunar, LunarMonth, Solar

LAST_LUNAR_DAY = 30
LAST_STORED_DAY = 31


@dataclass(frozen=True, slots=True)
class Occurrence:
    """The lunar `month`/`day` of `lunar_year` falls on the Gregorian day `on`."""

    month: int
    day: int
    on: date
    lunar_year: int


def _days_in(lunar_year: int, month: int) -> int:
    return int(LunarMonth.fromYm(lunar_year, month).getDayCount())


def occurrences(start: date, days: int) -> list[Occurrence]:
    """Every lunar month and day (days 1-31, so any stored date's day has an answer) that falls on
    one of the Gregorian days `start` … `start + days`, resolved by the rules above."""
    found: list[Occurrence] = []
    for offset in range(days + 1):
        on = start + timedelta(days=offset)
        lunar = Solar.fromYmd(on.year, on.month, on.day).getLunar()
        year, month, day = int(lunar.getYear()), int(lunar.getMonth()), int(lunar.getDay())
        if month < 0:  # lunar-python numbers a leap month negatively
            continue
        found.append(Occurrence(month, day, on, year))
        if day == _days_in(year, month):
            found.extend(Occurrence(month, missing, on, year) for missing in range(day + 1, LAST_STORED_DAY + 1))
    return found


def to_gregorian(lunar_year: int, month: int, day: int) -> date:
    """The Gregorian day of a lunar month and day (ordinary month), resolved by the rules above."""
    solar = Lunar.fromYmd(lunar_year, month, min(day, _days_in(lunar_year, month))).getSolar()
    return date(int(solar.getYear()), int(solar.getMonth()), int(solar.getDay()))
