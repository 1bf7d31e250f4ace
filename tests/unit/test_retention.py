"""The retention job: which business days it deletes, in how many batches, and how it fails."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime
from typing import Any

import pytest

from gateway import metrics
from gateway.businessday import BusinessCalendar
from gateway.config import ConfigError, from_mapping
from gateway.retention import Retention, RetentionConfig

# 16:30 UTC on 2 December is 00:30 on 3 December in Beijing: the business day is the 3rd.
NOW = datetime(2026, 12, 2, 16, 30)
SHANGHAI = BusinessCalendar.named("Asia/Shanghai")


class FakeTable:
    """card_usage rows as (day, n) and the prune calls made on it."""

    def __init__(self, days: dict[date, int]) -> None:
        self.days = dict(days)
        self.calls: list[tuple[date, int]] = []
        self.fail = 0

    async def prune(self, before: date, limit: int) -> int:
        self.calls.append((before, limit))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database away")
        deleted = 0
        for day in sorted(self.days):
            while day < before and self.days[day] and deleted < limit:
                self.days[day] -= 1
                deleted += 1
        self.days = {d: n for d, n in self.days.items() if n}
        return deleted


def deleted_total() -> float:
    return float(metrics.RETENTION_DELETED.labels(table="card_usage")._value.get())


def job(table: FakeTable, **settings: Any) -> Retention:
    return Retention(RetentionConfig(**settings), SHANGHAI, table.prune, clock=lambda: NOW)


def test_the_cutoff_is_counted_in_business_days_of_the_lenders_timezone() -> None:
    table = FakeTable({})
    assert job(table).card_usage_cutoff() == date(2026, 11, 2)  # 3 Dec (Beijing) - 31 days
    assert job(table, card_usage_days=1).card_usage_cutoff() == date(2026, 12, 2)
    utc = Retention(RetentionConfig(), BusinessCalendar.named("UTC"), table.prune, clock=lambda: NOW)
    assert utc.card_usage_cutoff() == date(2026, 11, 1)  # still the 2nd in UTC


async def test_old_days_go_in_batches_and_the_kept_days_stay() -> None:
    table = FakeTable({date(2026, 10, 1): 5, date(2026, 11, 1): 4, date(2026, 11, 2): 3, date(2026, 12, 3): 2})
    before = deleted_total()
    assert await job(table, batch_size=4).run_once() == 9
    assert table.days == {date(2026, 11, 2): 3, date(2026, 12, 3): 2}
    assert table.calls == [(date(2026, 11, 2), 4)] * 3  # 4, 4, then 1 < 4: done
    assert deleted_total() - before == 9
    table.calls.clear()
    assert await job(table, batch_size=4).run_once() == 0  # nothing left: one call, nothing counted
    assert table.calls == [(date(2026, 11, 2), 4)]
    assert deleted_total() - before == 9


async def test_a_run_is_bounded_and_the_next_one_goes_on() -> None:
    table = FakeTable({date(2026, 1, 1): 25})
    retention = job(table, batch_size=5, max_batches=2)
    assert await retention.run_once() == 10
    assert len(table.calls) == 2 and table.days == {date(2026, 1, 1): 15}
    assert await retention.run_once() == 10
    assert await retention.run_once() == 5
    assert table.days == {}


async def test_the_loop_survives_a_failing_database_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    table = FakeTable({date(2026, 1, 1): 3})
    table.fail = 3
    errors = metrics.RETENTION_ERRORS.labels(table="card_usage")
    before = float(errors._value.get())
    retention = job(table, interval_s=0.01)
    with caplog.at_level(logging.WARNING, logger="gateway.retention"):
        retention.start()
        for _ in range(200):
            if not table.days:
                break
            await asyncio.sleep(0.01)
        await retention.stop()
    assert table.days == {}  # the fourth run deleted the rows
    assert float(errors._value.get()) - before == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("retention of card_usage failed" in m for m in messages) == 1
    assert sum("works again" in m for m in messages) == 1
    assert all("database away" not in m for m in messages)  # the type, not the driver's text


async def test_disabled_means_no_task() -> None:
    table = FakeTable({date(2026, 1, 1): 3})
    retention = job(table, enabled=False, interval_s=0.01)
    retention.start()
    await asyncio.sleep(0.05)
    await retention.stop()
    assert table.calls == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("card_usage_days", 0),
        ("card_usage_days", 4000),
        ("interval_s", 0),
        ("batch_size", 0),
        ("max_batches", 0),
        ("card_usage_days", "a month"),
        ("keep", 3),
    ],
)
def test_bad_settings_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"retention": {key: value}})
    assert err.value.key == f"retention.{key}", err.value


def test_the_defaults() -> None:
    config = from_mapping({}).retention
    assert (config.enabled, config.card_usage_days, config.interval_s) == (True, 31, 3600.0)
    assert (config.batch_size, config.max_batches) == (5000, 100)
