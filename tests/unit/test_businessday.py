from datetime import UTC, date, datetime, time, timedelta

import pytest

from gateway.businessday import BusinessCalendar, parse_hhmm, zone


def test_a_shanghai_day_starts_at_16_utc_the_evening_before() -> None:
    cal = BusinessCalendar.named()
    assert cal.name == "Asia/Shanghai"
    start, end = cal.bounds(date(2026, 12, 1))
    assert start == datetime(2026, 11, 30, 16, 0)
    assert end == datetime(2026, 12, 1, 16, 0)
    # 00:30 UTC on Dec 1 is 08:30 in Beijing: Dec 1; 16:00 UTC is already Dec 2 there
    assert cal.day_of(datetime(2026, 12, 1, 0, 30)) == date(2026, 12, 1)
    assert cal.day_of(datetime(2026, 12, 1, 15, 59, 59)) == date(2026, 12, 1)
    assert cal.day_of(datetime(2026, 12, 1, 16, 0)) == date(2026, 12, 2)


def test_aware_and_naive_moments_agree() -> None:
    cal = BusinessCalendar.named()
    naive = datetime(2026, 12, 1, 16, 0)
    assert cal.day_of(naive) == cal.day_of(naive.replace(tzinfo=UTC))
    assert cal.today(datetime(2026, 12, 1, 16, 0, tzinfo=UTC)) == date(2026, 12, 2)


def test_time_points_are_local_wall_clock() -> None:
    cal = BusinessCalendar.named()
    assert cal.at(date(2026, 12, 1), time(12, 0)) == datetime(2026, 12, 1, 4, 0)
    assert cal.at(date(2026, 12, 1), time(0, 0)) == datetime(2026, 11, 30, 16, 0)


def test_days_across_dst_are_23_and_25_hours() -> None:
    cal = BusinessCalendar.named("America/New_York")
    spring = cal.bounds(date(2026, 3, 8))
    autumn = cal.bounds(date(2026, 11, 1))
    assert spring[1] - spring[0] == timedelta(hours=23)
    assert autumn[1] - autumn[0] == timedelta(hours=25)


def test_a_skipped_wall_time_runs_after_the_gap_and_an_ambiguous_one_once() -> None:
    cal = BusinessCalendar.named("America/New_York")
    # 02:30 does not exist on 2026-03-08 (clocks jump 02:00 -> 03:00 EDT = 07:00 UTC)
    skipped = cal.at(date(2026, 3, 8), time(2, 30))
    assert skipped == datetime(2026, 3, 8, 7, 30)
    assert cal.day_of(skipped) == date(2026, 3, 8)
    # 01:30 happens twice on 2026-11-01; the first is 05:30 UTC (EDT)
    assert cal.at(date(2026, 11, 1), time(1, 30)) == datetime(2026, 11, 1, 5, 30)


def test_windows_may_cross_midnight() -> None:
    cal = BusinessCalendar.named()
    quiet_start, quiet_end = time(22, 0), time(7, 0)
    assert cal.in_window(cal.at(date(2026, 12, 1), time(23, 0)), quiet_start, quiet_end)
    assert cal.in_window(cal.at(date(2026, 12, 1), time(6, 59)), quiet_start, quiet_end)
    assert not cal.in_window(cal.at(date(2026, 12, 1), time(7, 0)), quiet_start, quiet_end)
    assert cal.in_window(cal.at(date(2026, 12, 1), time(9, 0)), time(9, 0), time(17, 0))
    assert not cal.in_window(cal.at(date(2026, 12, 1), time(17, 0)), time(9, 0), time(17, 0))


@pytest.mark.parametrize("text", ["24:00", "7:00", "12:60", "12:00\n", "１２:00", ""])
def test_bad_time_points_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(text)


def test_unknown_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        zone("Mars/Olympus")
    assert parse_hhmm("18:30") == time(18, 30)
