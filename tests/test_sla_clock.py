"""The SLA clock across business hours, weekends, holidays and overnight gaps (fixed times)."""

from datetime import UTC, date, datetime

import pytest

from app.services.service_desk.sla_clock import ALWAYS_OPEN, Calendar, add_business_minutes, business_minutes_between

SHANGHAI = Calendar(timezone="Asia/Shanghai", holidays=frozenset({date(2026, 10, 1), date(2026, 10, 2)}))


def cst(text: str) -> datetime:
    """A Shanghai wall-clock time (UTC+8) as an aware UTC datetime."""
    local = datetime.fromisoformat(text + "+08:00")
    return local.astimezone(UTC)


@pytest.mark.parametrize(
    ("start", "minutes", "due"),
    [
        ("2026-11-23T10:00", 60, "2026-11-23T11:00"),  # Monday, inside hours
        ("2026-11-23T17:30", 60, "2026-11-24T09:30"),  # crosses the night
        ("2026-11-23T20:00", 30, "2026-11-24T09:30"),  # opened after hours
        ("2026-11-27T17:00", 120, "2026-11-30T10:00"),  # Friday → the weekend is closed → Monday
        ("2026-11-28T12:00", 60, "2026-11-30T10:00"),  # opened on Saturday
        ("2026-09-30T17:00", 120, "2026-10-05T10:00"),  # holidays Thu/Fri, weekend, then Monday
        ("2026-11-23T09:00", 9 * 60 * 2, "2026-11-24T18:00"),  # exactly two working days
    ],
)
def test_due_times(start: str, minutes: int, due: str) -> None:
    assert add_business_minutes(cst(start), minutes, SHANGHAI) == cst(due)


@pytest.mark.parametrize(
    ("start", "end", "minutes"),
    [
        ("2026-11-23T10:00", "2026-11-23T11:30", 90),
        ("2026-11-23T17:00", "2026-11-24T10:00", 120),
        ("2026-11-27T17:00", "2026-11-30T10:00", 120),
        ("2026-09-30T17:00", "2026-10-05T10:00", 120),
        ("2026-11-23T12:00", "2026-11-23T11:00", 0),
    ],
)
def test_business_minutes_between(start: str, end: str, minutes: int) -> None:
    assert business_minutes_between(cst(start), cst(end), SHANGHAI) == minutes


def test_always_open_calendar_counts_wall_time() -> None:
    always = Calendar(timezone="UTC", weekly=ALWAYS_OPEN)
    start = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert add_business_minutes(start, 120, always) == datetime(2026, 11, 29, 1, 0, tzinfo=UTC)


def test_a_pause_keeps_what_was_left() -> None:
    """Paused at 16:00 Monday with the deadline 11:00 Tuesday, resumed 10:00 Wednesday."""
    due = cst("2026-11-24T11:00")
    left = business_minutes_between(cst("2026-11-23T16:00"), due, SHANGHAI)
    assert left == 120 + 120
    assert add_business_minutes(cst("2026-11-25T10:00"), left, SHANGHAI) == cst("2026-11-25T14:00")


# 2026's Spring Festival: Saturday 14 February is worked, Sunday 15 to Monday 23 are holidays.
SPRING_2026 = Calendar(
    timezone="Asia/Shanghai",
    holidays=frozenset(date(2026, 2, day) for day in range(15, 24)),
    workdays=frozenset({date(2026, 2, 14)}),
)


@pytest.mark.parametrize(
    ("start", "minutes", "due"),
    [
        ("2026-02-13T17:00", 120, "2026-02-14T10:00"),  # Friday → the make-up Saturday is open
        ("2026-02-14T08:00", 60, "2026-02-14T10:00"),  # opened before the Saturday's hours
        ("2026-02-14T17:00", 120, "2026-02-24T10:00"),  # holiday weekdays count nothing
    ],
)
def test_make_up_working_days(start: str, minutes: int, due: str) -> None:
    assert add_business_minutes(cst(start), minutes, SPRING_2026) == cst(due)


def test_a_make_up_day_has_the_first_working_days_hours() -> None:
    late_week = Calendar(
        weekly={"1": [["10:00", "12:00"]], "2": [["08:00", "18:00"]]}, workdays=frozenset({date(2026, 2, 14)})
    )
    assert late_week.hours_of(date(2026, 2, 14)) == [["10:00", "12:00"]]
    assert business_minutes_between(cst("2026-02-14T00:00"), cst("2026-02-15T00:00"), late_week) == 120
