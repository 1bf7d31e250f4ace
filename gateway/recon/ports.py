"""What reconciliation needs from the store: implemented by :class:`gateway.store.recon.MySQLReconStore`
and, for the unit tests, by ``tests/fakes/recon.py``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Protocol

from channels.statement import StatementLine
from gateway.recon.model import (
    Carry,
    DayFigure,
    Item,
    ItemRow,
    KindTotals,
    LineSide,
    LocalSide,
    Resolution,
    RunRow,
    RunTotals,
)
from routing.config import FeeSchedule


class ReconStore(Protocol):
    async def start_run(
        self, channel: str, day: date, *, trigger: str, operator: str, format: str, source: str, sha256: str
    ) -> RunRow: ...

    async def run(self, run_id: int) -> RunRow | None: ...

    async def runs(
        self, *, channel: str = "", day: date | None = None, current_only: bool = False, limit: int = 100
    ) -> list[RunRow]: ...

    async def fail_run(self, run_id: int, error: str) -> None: ...

    async def last_success(self) -> dict[str, datetime]: ...

    async def stage_lines(self, run_id: int, lines: Sequence[StatementLine]) -> None: ...

    async def repeated_line(self, run_id: int) -> tuple[str, int, int] | None: ...

    async def unmatched_pairs(
        self, run_id: int, channel: str, schedule: FeeSchedule | None
    ) -> list[tuple[str, LineSide, LocalSide | None]]: ...

    async def day_successes(
        self,
        run_id: int,
        channel: str,
        bounds: tuple[datetime, datetime],
        operations: Iterable[str],
        schedule: FeeSchedule | None,
    ) -> tuple[list[tuple[str, LocalSide]], dict[str, KindTotals]]: ...

    async def local_side(self, order_no: str, schedule: FeeSchedule | None) -> LocalSide | None: ...

    async def local_totals(
        self, channel: str, bounds: tuple[datetime, datetime], operations: Iterable[str], attempt_ids: Sequence[int]
    ) -> dict[str, KindTotals]: ...

    async def finish(
        self,
        run: RunRow,
        *,
        items: Sequence[Item],
        carry: Sequence[Carry],
        lines: int,
        matched: int,
        totals: RunTotals,
        schedule: FeeSchedule | None,
    ) -> RunRow: ...

    async def items(
        self,
        *,
        run_id: int | None = None,
        day: date | None = None,
        channel: str = "",
        open_only: bool = False,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[ItemRow]: ...

    async def item(self, item_id: int) -> ItemRow | None: ...

    async def mark(self, item_id: int, resolution: Resolution, operator: str, reason: str) -> ItemRow | None: ...

    async def claim(self, channel: str, day: date, owner: str, *, lease_s: float) -> bool: ...

    async def release_claim(self, channel: str, day: date, owner: str) -> None: ...

    async def record_claim_run(self, channel: str, day: date, run_id: int) -> None: ...

    async def day_figures(self, bounds: tuple[datetime, datetime]) -> list[DayFigure]: ...

    async def day_discrepancies(self, day: date) -> dict[tuple[str, str], int]: ...
