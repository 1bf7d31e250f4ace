"""What the split use cases need from storage (implemented by gateway/store/splits.py, faked in tests)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from gateway.store.rows import FlowRow
from gateway.store.splits import Resend, SettlementRow, StatementLine
from gateway.validation import PayoutParams


class SplitStore(Protocol):
    async def claim_settlement(
        self,
        funder_id: str,
        day: date,
        bounds: tuple[datetime, datetime],
        currency: str,
        *,
        pays: bool,
        request_id: str,
    ) -> tuple[SettlementRow, bool]: ...

    async def record_payout(self, funder_id: str, day: date, request_id: str, flow_no: str, status: str) -> bool: ...

    async def begin_resend(
        self,
        funder_id: str,
        day: date,
        *,
        attempt: int,
        flow_no: str,
        request_id: str,
        operator: str,
        reason: str,
    ) -> Resend: ...

    async def settlement(self, funder_id: str, day: date) -> SettlementRow | None: ...

    async def settlements(
        self, *, day: date | None = None, funder_id: str = "", limit: int = 50
    ) -> list[SettlementRow]: ...

    async def paying(self, limit: int = 100) -> list[SettlementRow]: ...

    async def unfinished(self) -> dict[str, tuple[int, datetime]]: ...

    async def statement_lines(self, funder_id: str, bounds: tuple[datetime, datetime]) -> list[StatementLine]: ...


class PayoutPath(Protocol):
    """The normal payout use case (gateway.flows.FlowService.payout)."""

    async def payout(
        self,
        caller: str,
        request_id: str,
        params: PayoutParams,
        wait_s: float,
        *,
        deadline_s: float | None = None,
        prefer: tuple[str, ...] = (),
    ) -> FlowRow: ...
