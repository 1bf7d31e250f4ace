"""What the console reads through: the store's read model, as a ``typing.Protocol``.

gateway/app.py hands the console :class:`gateway.store.console_queries.MySQLConsoleQueries`; the
pages never see SQL or a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from gateway.store.console_rows import (
    ChannelOutcomes,
    DayPoint,
    FlowListItem,
    FlowQuery,
    FlowRecords,
    KindStatusTotal,
    OutboxBacklog,
    OutboxEntry,
)


class ConsoleReads(Protocol):
    async def totals(self, start: datetime, end: datetime) -> list[KindStatusTotal]: ...

    async def trend(self, bounds: Sequence[tuple[datetime, datetime]]) -> list[DayPoint]: ...

    async def channel_outcomes(self, since: datetime) -> list[ChannelOutcomes]: ...

    async def discrepancies_since(self, since: datetime) -> int: ...

    async def search_flows(self, query: FlowQuery) -> list[FlowListItem]:
        """Newest first; raises QueryTooBroad when the search runs past the time limit."""
        ...

    async def flow_records(self, flow_id: int, flow_no: str, attempt_ids: Sequence[int]) -> FlowRecords: ...

    async def outbox_backlog(self, max_attempts: int) -> OutboxBacklog: ...

    async def outbox_unpublished(
        self, *, parked: bool, max_attempts: int, after_id: int, limit: int
    ) -> list[OutboxEntry]: ...
