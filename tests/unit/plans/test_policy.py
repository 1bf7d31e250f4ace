"""Schedules and policies: time points in the business timezone, retries, stops, windows, quiet hours, lag."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from gateway.businessday import BusinessCalendar
from gateway.plans.model import ATTEMPTS_EXHAUSTED
from gateway.plans.policy import Policy, QuietWindow, Retry, Schedule, Stop, check_policy, projected_lag_s

SHANGHAI = BusinessCalendar.named("Asia/Shanghai")
DAY = date(2026, 12, 1)


def schedule(**kw: object) -> Schedule:
    base: dict[str, object] = {
        "name": "default",
        "time_points": (time(12, 0), time(18, 0)),
        "attempts_per_day": 2,
        "retry_days": 1,
        "quiet": QuietWindow(time(22, 0), time(7, 0)),
    }
    base.update(kw)
    return Schedule(Policy(**base), SHANGHAI)  # type: ignore[arg-type]


def utc(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute)


def test_time_points_are_local_wall_clock_times_in_utc() -> None:
    s = schedule()
    assert s.moments(DAY) == [("12:00", utc(4)), ("18:00", utc(10))]
    assert s.first_due(DAY) == utc(4)
    assert s.last_day(DAY) == date(2026, 12, 2)


def test_insufficient_funds_retries_at_the_next_time_point_then_the_next_day_then_stops() -> None:
    s = schedule()
    noon = s.after_failure(
        "INSUFFICIENT_FUNDS", day=DAY, time_point="12:00", attempts_on_day=1, attempts=1, last_day=date(2026, 12, 2)
    )
    assert noon == Retry(DAY, "18:00", utc(10))
    evening = s.after_failure(
        "INSUFFICIENT_FUNDS", day=DAY, time_point="18:00", attempts_on_day=2, attempts=2, last_day=date(2026, 12, 2)
    )
    assert evening == Retry(date(2026, 12, 2), "12:00", utc(4, day=date(2026, 12, 2)))
    last = s.after_failure(
        "INSUFFICIENT_FUNDS",
        day=date(2026, 12, 2),
        time_point="18:00",
        attempts_on_day=2,
        attempts=4,
        last_day=date(2026, 12, 2),
    )
    assert last == Stop(ATTEMPTS_EXHAUSTED, "INSUFFICIENT_FUNDS")


def test_attempts_per_day_moves_the_retry_to_the_next_day() -> None:
    s = schedule(time_points=(time(9, 0), time(12, 0), time(18, 0)), attempts_per_day=1)
    decision = s.after_failure(
        "INSUFFICIENT_FUNDS", day=DAY, time_point="09:00", attempts_on_day=1, attempts=1, last_day=date(2026, 12, 5)
    )
    assert decision == Retry(date(2026, 12, 2), "09:00", utc(1, day=date(2026, 12, 2)))


def test_stop_codes_and_unknown_codes_stop_at_once() -> None:
    s = schedule()
    assert s.after_failure(
        "ACCOUNT_FROZEN", day=DAY, time_point="12:00", attempts_on_day=1, attempts=1, last_day=DAY
    ) == Stop("ACCOUNT_FROZEN", "ACCOUNT_FROZEN")
    assert s.after_failure(
        "WHATEVER", day=DAY, time_point="12:00", attempts_on_day=1, attempts=1, last_day=DAY
    ) == Stop("WHATEVER", "WHATEVER")
    retrying = schedule(retry_unknown=True)
    assert isinstance(
        retrying.after_failure("WHATEVER", day=DAY, time_point="12:00", attempts_on_day=1, attempts=1, last_day=DAY),
        Retry,
    )


def test_max_attempts_caps_the_total() -> None:
    s = schedule(max_attempts=1, retry_days=5)
    assert s.after_failure(
        "INSUFFICIENT_FUNDS", day=DAY, time_point="12:00", attempts_on_day=1, attempts=1, last_day=date(2026, 12, 6)
    ) == Stop(ATTEMPTS_EXHAUSTED, "INSUFFICIENT_FUNDS")


def test_windows_end_at_the_next_time_point_or_the_quiet_window() -> None:
    s = schedule()
    noon = s.window(DAY, "12:00")
    assert (noon.start, noon.deadline) == (utc(4), utc(10))
    evening = s.window(DAY, "18:00")
    assert (evening.start, evening.deadline) == (utc(10), utc(14))  # 22:00 Shanghai, not tomorrow's noon
    loud = schedule(quiet=None).window(DAY, "18:00")
    assert loud.deadline == utc(4, day=date(2026, 12, 2))


def test_current_window_and_the_quiet_window() -> None:
    s = schedule()
    assert s.current(utc(3, 59)) is None  # 11:59: before the first time point (yesterday's window ended at 22:00)
    window = s.current(utc(4, 30))
    assert window is not None and window.time_point == "12:00"
    assert s.current(utc(13, 59)) is not None
    assert s.in_quiet(utc(14, 0)) and s.current(utc(14, 0)) is None  # 22:00 Shanghai
    assert s.in_quiet(utc(22, 59)) and not s.in_quiet(utc(23, 0))  # 06:59 and 07:00 Shanghai


def test_check_policy_names_the_key() -> None:
    bad = Policy("p", (time(12, 0), time(23, 0)), quiet=QuietWindow(time(22, 0), time(7, 0)))
    assert check_policy(bad, "plans.policies.p") == [
        ("plans.policies.p.time_points[1]", "23:00 lies inside the quiet window 22:00-07:00")
    ]
    too_many = Policy("p", (time(12, 0),), attempts_per_day=2)
    assert check_policy(too_many, "k")[0][0] == "k.attempts_per_day"
    both = Policy("p", (time(12, 0),), attempts_per_day=1, retry_codes=frozenset({"X"}), stop_codes=frozenset({"X"}))
    assert check_policy(both, "k") == [("k.stop_codes", "X is also in retry_codes")]
    unsorted = Policy("p", (time(18, 0), time(12, 0)))
    assert check_policy(unsorted, "k")[0] == ("k.time_points", "must be in increasing order")


@pytest.mark.parametrize(
    ("minutes", "attempted", "remaining", "expected"),
    [
        (0.1, 0, 100, 0.0),  # too early to tell
        (30, 300, 0, 0.0),  # done
        (30, 300, 300, 0.0),  # 30 more minutes of a 360-minute window: on time
        (300, 100, 200, 540 * 60),  # 600 more minutes from minute 300 of a 360-minute window
        (30, 0, 10, 30 * 60),  # stalled: behind by at least the time it stood still
    ],
)
def test_projected_lag(minutes: float, attempted: int, remaining: int, expected: float) -> None:
    start = utc(4)
    now = start + timedelta(minutes=minutes)
    lag = projected_lag_s(now=now, started_at=start, deadline=utc(10), attempted=attempted, remaining=remaining)
    assert lag == pytest.approx(expected)
