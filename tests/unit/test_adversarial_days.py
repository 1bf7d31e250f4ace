"""Adversarial probe: the last microsecond and the first instant of a lender's business day (Asia/Shanghai).

23:59:59.999999 on 1 December in Beijing is 15:59:59.999999 UTC: still 1 December; 00:00:00 on
2 December is 16:00:00 UTC. Days, card limits and plan time points put each on its own day.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time, timedelta

import pytest

from channels.contract import Operation
from gateway.businessday import BusinessCalendar
from gateway.planner import Plan, Planner
from gateway.plans.policy import Policy, QuietWindow, Retry, Schedule
from gateway.store.rows import CardLimit
from tests.fakes import FakeObservations, FakePositionStore, Tables
from tests.unit.routing.helpers import make_router, profile

SHANGHAI = BusinessCalendar.named("Asia/Shanghai")
D1, D2 = date(2026, 12, 1), date(2026, 12, 2)
LAST = datetime(2026, 12, 1, 15, 59, 59, 999_999)  # 23:59:59.999999 of D1 in Beijing, naive UTC
FIRST = datetime(2026, 12, 1, 16, 0, 0)  # 00:00:00 of D2 in Beijing


def test_the_last_microsecond_and_the_first_instant_fall_on_their_own_days() -> None:
    assert SHANGHAI.day_of(LAST) == D1 and SHANGHAI.day_of(LAST.replace(tzinfo=UTC)) == D1
    assert SHANGHAI.day_of(FIRST) == D2 and SHANGHAI.day_of(FIRST.replace(tzinfo=UTC)) == D2
    start, end = SHANGHAI.bounds(D1)
    assert (start, end) == (FIRST - timedelta(days=1), FIRST)
    assert start <= LAST < end and not start <= FIRST < end  # [start, end): the first instant is the next day's
    assert SHANGHAI.bounds(D2)[0] == FIRST


class At(BusinessCalendar):
    """A calendar whose "now" is fixed (the planner asks ``today()`` with no argument)."""

    moment: datetime = LAST

    def today(self, now: datetime | None = None) -> date:
        return self.day_of(self.moment)


async def test_a_cards_daily_limit_is_the_day_of_the_moment_it_is_planned() -> None:
    tables = Tables()
    router = make_router([profile("a", per_card_daily_attempts=1)])
    calendar = At.named("Asia/Shanghai")
    planner = Planner(router, FakePositionStore(tables), FakeObservations(tables), calendar=calendar)
    tables.card_usage[("acct", "a", D1)] = (1, 1_000)  # D1's one attempt is used up

    async def plan() -> Plan:
        return await planner.plan(
            Operation.WITHHOLD,
            1_000,
            "CNY",
            "ICBC",
            account_hash="acct",
            agreement_channels=frozenset({"a"}),
            exclude=frozenset(),
        )

    At.moment = LAST
    last = await plan()
    assert last.candidates == [] and ("a", "card_attempts") in {(c, f) for c, f, _ in last.rejected}
    At.moment = FIRST
    first = await plan()
    assert first.candidates == ["a"]
    assert first.card_limits == {"a": CardLimit(D2, 1, None)}


def midnight_schedule() -> Schedule:
    policy = Policy("edges", (time(0, 0), time(12, 0), time(23, 59)), attempts_per_day=3, retry_days=1)
    return Schedule(policy, SHANGHAI)


def test_time_points_at_midnight_and_a_minute_before_are_on_the_right_day() -> None:
    s = midnight_schedule()
    assert s.moment(D2, "00:00") == FIRST and s.moment(D1, "23:59") == FIRST - timedelta(minutes=1)
    at_last, at_first = s.current(LAST), s.current(FIRST)
    assert at_last is not None and (at_last.business_day, at_last.time_point) == (D1, "23:59")
    assert at_last.deadline == FIRST  # D1's last time point ends where D2 begins
    assert at_first is not None and (at_first.business_day, at_first.time_point) == (D2, "00:00")
    # a failure at D1's last time point is tried again at D2's first, at the first instant of D2
    retried = s.after_failure(
        "INSUFFICIENT_FUNDS", day=D1, time_point="23:59", attempts_on_day=1, attempts=1, last_day=D2
    )
    assert retried == Retry(D2, "00:00", FIRST)
    assert s.first_due(D2) == FIRST and s.last_day(D1) == D2


def test_a_quiet_window_across_midnight_holds_both_edges() -> None:
    policy = Policy("quiet", (time(8, 0), time(20, 0)), quiet=QuietWindow(time(23, 0), time(7, 0)))
    s = Schedule(policy, SHANGHAI)
    assert s.in_quiet(LAST) and s.in_quiet(FIRST)
    assert s.current(LAST) is None and s.current(FIRST) is None
    window = s.window(D1, "20:00")
    assert window.deadline == SHANGHAI.at(D1, time(23, 0))  # D1's 20:00 run stops at the quiet window


@pytest.mark.parametrize("text", ["2026-W49-2", "2026-336", "20261202", "9999-12-31"])
def test_the_recon_command_takes_a_day_as_the_api_does(text: str) -> None:
    from gateway.recon.cli import _day

    with pytest.raises(argparse.ArgumentTypeError):
        _day(text)
    assert _day("2026-12-02") == D2
