"""The daily withhold report (代扣日报): per channel and kind, counts, amounts, success rate, fees, discrepancies.

Counts are of attempts that ended on the business day (the lender's timezone); amounts and fees are
of the successes, in minor units, printed in yuan. Discrepancies are those of the day's current
reconciliation runs (a re-run supersedes). Headers are bilingual (Chinese / English).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date

from gateway.recon.model import DISCREPANCIES, DayFigure
from gateway.recon.service import Reconciler

HEADERS = (
    "渠道 channel",
    "类型 kind",
    "成功笔数 succeeded",
    "失败笔数 failed",
    "成功率 success rate",
    "成功金额(元) amount (CNY)",
    "手续费(元) fees (CNY)",
    "差异 discrepancies",
)


@dataclass(frozen=True)
class ReportRow:
    figure: DayFigure
    discrepancies: int


@dataclass(frozen=True)
class DailyReport:
    day: date
    rows: list[ReportRow]
    unassigned: dict[str, int]  # channel -> discrepancies of channels with no attempts that day


def yuan(minor: int) -> str:
    """Minor units as a yuan string, exactly (no float)."""
    sign = "-" if minor < 0 else ""
    whole, fen = divmod(abs(minor), 100)
    return f"{sign}{whole}.{fen:02d}"


async def daily_report(recon: Reconciler, day: date, *, channel: str = "") -> DailyReport:
    figures = await recon.store.day_figures(recon.calendar.bounds(day))
    found = await recon.store.day_discrepancies(day)
    per_channel: dict[str, int] = {}
    for (ch, cls), n in found.items():
        if cls in DISCREPANCIES:
            per_channel[ch] = per_channel.get(ch, 0) + n
    rows = []
    seen = set()
    for figure in figures:
        if channel and figure.channel != channel:
            continue
        first = figure.channel not in seen  # a channel's discrepancies are shown on its first row
        seen.add(figure.channel)
        rows.append(ReportRow(figure, per_channel.get(figure.channel, 0) if first else 0))
    unassigned = {ch: n for ch, n in per_channel.items() if ch not in seen and (not channel or ch == channel)}
    return DailyReport(day, rows, unassigned)


def _cells(row: ReportRow) -> list[str]:
    f = row.figure
    rate = f.success_rate
    return [
        f.channel,
        f.kind,
        str(f.succeeded),
        str(f.failed),
        "-" if rate is None else f"{rate * 100:.2f}%",
        yuan(f.amount),
        yuan(f.fee),
        str(row.discrepancies),
    ]


def render_text(report: DailyReport) -> str:
    table = [list(HEADERS), *(_cells(r) for r in report.rows)]
    table += [[ch, "-", "0", "0", "-", "0.00", "0.00", str(n)] for ch, n in sorted(report.unassigned.items())]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [f"代扣日报 daily withhold report {report.day.isoformat()}"]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]
    return "\n".join(lines)


def render_csv(report: DailyReport, path: str) -> None:
    """Write the report as CSV (UTF-8 with BOM, so spreadsheet programs read the Chinese headers)."""
    with open(path, "w", newline="", encoding="utf-8-sig") as out:
        writer = csv.writer(out)
        writer.writerow(["日期 day", *HEADERS])
        for row in report.rows:
            writer.writerow([report.day.isoformat(), *_cells(row)])
        for ch, n in sorted(report.unassigned.items()):
            writer.writerow([report.day.isoformat(), ch, "-", 0, 0, "-", "0.00", "0.00", n])
