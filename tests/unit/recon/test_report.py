"""The daily withhold report (代扣日报): exact yuan, success rate, discrepancies per channel, bilingual CSV."""

from __future__ import annotations

import csv
from datetime import date, datetime
from pathlib import Path
from typing import Any

from gateway.businessday import BusinessCalendar
from gateway.recon.config import ReconConfig
from gateway.recon.model import DayFigure
from gateway.recon.report import HEADERS, daily_report, render_csv, render_text, yuan
from gateway.recon.service import Reconciler

DAY = date(2026, 3, 5)


class FiguresOnly:
    """The two store reads the report makes (the rest of the port is not used)."""

    def __init__(self) -> None:
        self.bounds: tuple[datetime, datetime] | None = None

    async def day_figures(self, bounds: tuple[datetime, datetime]) -> list[DayFigure]:
        self.bounds = bounds
        return [
            DayFigure("bank-a", "payout", 2, 0, 1_000_000, 300),
            DayFigure("bank-a", "withhold", 3, 1, 30_001, 18),
            DayFigure("bank-b", "withhold", 0, 2, 0, 0),
        ]

    async def day_discrepancies(self, day: date) -> dict[tuple[str, str], int]:
        assert day == DAY
        return {
            ("bank-a", "channel_only"): 1,
            ("bank-a", "fee_mismatch"): 2,
            ("bank-a", "resolved_by_statement"): 5,  # not a discrepancy
            ("bank-c", "local_only"): 1,  # a channel with no attempts that day
        }


def reconciler(store: Any) -> Reconciler:
    return Reconciler(store, None, {}, BusinessCalendar.named("Asia/Shanghai"), ReconConfig())  # type: ignore[arg-type]


def test_yuan_is_exact() -> None:
    assert [yuan(v) for v in (0, 1, 99, 100, 30_001, -250)] == ["0.00", "0.01", "0.99", "1.00", "300.01", "-2.50"]


async def test_the_report_per_channel_and_kind(tmp_path: Path) -> None:
    store = FiguresOnly()
    report = await daily_report(reconciler(store), DAY)
    assert store.bounds == (datetime(2026, 3, 4, 16), datetime(2026, 3, 5, 16))  # the Shanghai day, in UTC
    text = render_text(report)
    lines = text.splitlines()
    assert lines[0] == "代扣日报 daily withhold report 2026-03-05"
    assert "渠道 channel" in lines[1] and "成功率 success rate" in lines[1]
    assert lines[2].split() == ["bank-a", "payout", "2", "0", "100.00%", "10000.00", "3.00", "3"]
    assert lines[3].split() == ["bank-a", "withhold", "3", "1", "75.00%", "300.01", "0.18", "0"]
    assert lines[4].split() == ["bank-b", "withhold", "0", "2", "0.00%", "0.00", "0.00", "0"]
    assert lines[5].split() == ["bank-c", "-", "0", "0", "-", "0.00", "0.00", "1"]
    out = tmp_path / "report.csv"
    render_csv(report, str(out))
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # spreadsheets read the Chinese headers
    rows = list(csv.reader(out.open(encoding="utf-8-sig")))
    assert rows[0] == ["日期 day", *HEADERS]
    assert rows[2] == ["2026-03-05", "bank-a", "withhold", "3", "1", "75.00%", "300.01", "0.18", "0"]
    assert len(rows) == 5


async def test_the_report_of_one_channel() -> None:
    report = await daily_report(reconciler(FiguresOnly()), DAY, channel="bank-b")
    assert [(r.figure.channel, r.discrepancies) for r in report.rows] == [("bank-b", 0)]
    assert report.unassigned == {}
