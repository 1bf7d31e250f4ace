"""The settlement gauges on MariaDB: unfinished payouts counted by status, the oldest one's age."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from gateway import metrics
from gateway.businessday import BusinessCalendar
from gateway.splits.funders import Funders, SettlementConfig
from gateway.splits.settlement import SettlementService
from gateway.store.db import Database
from gateway.store.splits import MySQLSplitStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 2, 0)


async def seed(db: Database, rows: list[tuple[str, date, str, datetime]]) -> None:
    async with db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO settlements (funder_id, business_day, currency, withheld, refunded, carried_in, net, paid,"
            " carried_out, orders, refund_orders, status, created_at, updated_at)"
            " VALUES (%s,%s,'CNY',100,0,0,100,100,0,1,0,%s,%s,%s)",
            [(f, d, s, at, at) for f, d, s, at in rows],
        )
        await tx.commit()


def gauges() -> dict[str, tuple[float, float]]:
    def value(metric: Any, status: str) -> float:
        return float(metric.labels(status=status)._value.get())

    return {
        s: (value(metrics.SETTLEMENTS_UNFINISHED, s), value(metrics.SETTLEMENT_OLDEST_AGE, s))
        for s in ("PAYING", "PAYOUT_FAILED")
    }


def service(db: Database, now: datetime) -> SettlementService:
    return SettlementService(
        store=MySQLSplitStore(db),
        payouts=None,  # type: ignore[arg-type]  # sampling never pays
        funders=Funders({}),
        calendar=BusinessCalendar.named("Asia/Shanghai"),
        config=SettlementConfig(),
        now=lambda: now,
    )


async def test_unfinished_settlements_by_status_and_age(database: Database) -> None:
    day = date(2026, 12, 1)
    await seed(
        database,
        [
            ("xd", day, "PAYOUT_FAILED", NOW - timedelta(hours=3)),
            ("yt", day, "PAYOUT_FAILED", NOW - timedelta(hours=1)),
            ("zh", day, "PAYING", NOW - timedelta(minutes=20)),
            ("xd", day - timedelta(days=1), "PAID", NOW - timedelta(days=1)),
            ("yt", day - timedelta(days=1), "CARRIED", NOW - timedelta(days=1)),
        ],
    )
    SettlementService.declare_series()
    assert gauges() == {"PAYING": (0, 0), "PAYOUT_FAILED": (0, 0)}
    settlements = service(database, NOW)
    await settlements.sample_metrics()
    assert gauges() == {"PAYING": (1, 1200), "PAYOUT_FAILED": (2, 3 * 3600)}

    # within the sampling interval nothing is read again; forced (or 30 s later) it is
    async with database.transaction() as tx:
        await tx.execute("DELETE FROM settlements WHERE status='PAYING'")
        await tx.commit()
    await settlements.sample_metrics()
    assert gauges()["PAYING"] == (1, 1200)
    await settlements.sample_metrics(force=True)
    assert gauges() == {"PAYING": (0, 0), "PAYOUT_FAILED": (2, 3 * 3600)}
