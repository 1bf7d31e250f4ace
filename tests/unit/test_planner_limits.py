"""The planner reads a card's usage and hands out its limits for the lender's business day, not the UTC date."""

from __future__ import annotations

from datetime import UTC, date, datetime

from channels.contract import Operation
from gateway.businessday import BusinessCalendar
from gateway.planner import Plan, Planner
from gateway.store.rows import CardLimit
from tests.fakes import FakeObservations, FakePositionStore, Tables
from tests.unit.routing.helpers import make_router, profile

# 23:30 UTC on 1 December is 07:30 on 2 December in Beijing: a different day
LATE_UTC = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)


class FixedCalendar(BusinessCalendar):
    def today(self, now: datetime | None = None) -> date:
        return self.day_of(LATE_UTC)


async def withhold(planner: Planner) -> Plan:
    return await planner.plan(
        Operation.WITHHOLD,
        1_000,
        "CNY",
        "ICBC",
        account_hash="acct",
        agreement_channels=frozenset({"a", "b"}),
        exclude=frozenset(),
    )


async def test_limits_and_usage_are_those_of_the_business_day() -> None:
    tables = Tables()
    router = make_router([profile("a", per_card_daily_attempts=2), profile("b")])
    calendar = FixedCalendar.named("Asia/Shanghai")
    planner = Planner(router, FakePositionStore(tables), FakeObservations(tables), calendar=calendar)
    tables.card_usage[("acct", "a", date(2026, 12, 1))] = (2, 2_000)  # yesterday's, in Beijing: not counted
    plan = await withhold(planner)
    assert set(plan.candidates) == {"a", "b"}
    assert plan.card_limits == {"a": CardLimit(date(2026, 12, 2), 2, None)}  # b has no limits: nothing counted
    tables.card_usage[("acct", "a", date(2026, 12, 2))] = (2, 2_000)  # today's usage fills the limit
    again = await withhold(planner)
    assert again.candidates == ["b"] and ("a", "card_attempts") in {(c, f) for c, f, _ in again.rejected}
