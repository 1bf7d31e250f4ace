"""Adversarial probe: money booked in the last microsecond of a business day and at the first instant of
the next (Asia/Shanghai; 23:59:59.999999 and 00:00:00 in Beijing are 15:59:59.999999 and 16:00:00 UTC).

On real MariaDB (DATETIME(6), nothing rounded): a funder's settlement of a day takes the small order of
its last microsecond and leaves the next instant's to the next day; reconciliation's own side of a day
counts the success of the last microsecond and not the one at midnight.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from gateway.store.recon import MySQLReconStore
from paygate.v1 import gateway_pb2
from tests.fakes.clock import FakeClock
from tests.integration.test_splits_acceptance import CAL, ppm, split_stack, withhold
from tests.support.harness import Harness

pytestmark = pytest.mark.integration

MICROSECOND = timedelta(microseconds=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(tzinfo=None))


async def at_moment(h: Harness, flow_no: str, moment: datetime) -> None:
    """Date the flow, its attempt and its small orders at ``moment`` (naive UTC)."""
    async with h.gateway.db.transaction() as tx:
        row = await tx.fetchone("SELECT id FROM flows WHERE flow_no=%s", (flow_no,))
        assert row is not None
        await tx.execute("UPDATE flows SET finished_at=%s WHERE id=%s", (moment, row["id"]))
        await tx.execute("UPDATE attempts SET finished_at=%s WHERE flow_id=%s", (moment, row["id"]))
        await tx.execute("UPDATE splits SET succeeded_at=%s WHERE flow_id=%s", (moment, row["id"]))
        await tx.commit()


async def two_at_midnight(h: Harness, day: date) -> tuple[datetime, datetime]:
    """Two 50 : 50 split withholds (100.00 and 300.00), dated at the last microsecond of ``day`` and the
    first instant of the day after; returns those two moments."""
    card = luhn_card()
    await h.bind_card(card, ["bank-a"])
    end = CAL.bounds(day)[1]
    moments = (end - MICROSECOND, end)
    for i, (amount, moment) in enumerate(zip((10_000, 30_000), moments, strict=True)):
        flow = await h.stub.Withhold(
            withhold(f"edge-{i}", card, amount, ppm(xd=500_000, bank=500_000)), metadata=h.md()
        )
        assert flow.status == gateway_pb2.SUCCEEDED
        await at_moment(h, flow.flow_no, moment)
    stored = await h.gateway.db.fetchall("SELECT DISTINCT succeeded_at FROM splits ORDER BY succeeded_at")
    assert [r["succeeded_at"] for r in stored] == list(moments)  # kept to the microsecond
    return moments


async def test_a_settlement_takes_its_days_last_microsecond_and_not_the_next_instant(
    db_config: DatabaseConfig, clock: FakeClock
) -> None:
    async with split_stack(db_config, clock, lookback_days=1) as h:
        day = CAL.today(datetime.now(UTC))
        last, first = await two_at_midnight(h, day)
        assert CAL.day_of(last) == day and CAL.day_of(first) == day + timedelta(days=1)
        clock.set(CAL.at(day + timedelta(days=2), time(1, 0)))
        await h.gateway.settlement.settle_through(day + timedelta(days=1))  # settles day, then the day after
        rows = await h.gateway.db.fetchall("SELECT funder_id, business_day, withheld, orders FROM settlements")
        got = {(r["funder_id"], r["business_day"]): (r["withheld"], r["orders"]) for r in rows}
        for funder in ("xd", "bank"):
            assert got[(funder, day)] == (5_000, 1), got
            assert got[(funder, day + timedelta(days=1))] == (15_000, 1), got


async def test_reconciliations_side_of_a_day_ends_before_midnight(db_config: DatabaseConfig, clock: FakeClock) -> None:
    async with split_stack(db_config, clock, lookback_days=0) as h:
        day = CAL.today(datetime.now(UTC))
        await two_at_midnight(h, day)
        store = MySQLReconStore(h.gateway.db)
        for on, amount in ((day, 10_000), (day + timedelta(days=1), 30_000)):
            lone, totals = await store.day_successes(0, "bank-a", CAL.bounds(on), ["withhold"], None)
            assert len(lone) == 1 and totals["withhold"].count == 1 and totals["withhold"].amount == amount, on
