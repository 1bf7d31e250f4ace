"""Collections in MySQL: the ``collections`` table, one row beside each COLLECT flow.

A collection is created with its flow and its first attempt in one commit
(:meth:`MySQLCollectionStore.create`, through the flow store's
``create_with``): record before call, as for every flow. The cashier the
channel gives is written once (the first one wins: it is what the caller was
handed, and every replay hands out the same); a close is asked for once.
Every status change of the flow and its attempt stays the flow store's
compare-and-set transition.
"""

from __future__ import annotations

from datetime import datetime

from gateway.store.db import Database, Tx
from gateway.store.flows import MySQLFlowStore
from gateway.store.rows import CollectionRow, Creation, FlowRow, NewAttempt, NewCollection, NewFlow, utcnow

_COLUMNS = (
    "flow_id, cashier_kind, expires_at, cashier, cashier_channel, close_requested_at, close_reason,"
    " created_at, updated_at"
)


class MySQLCollectionStore:
    """Implements :class:`gateway.ports.CollectionStore`."""

    def __init__(self, db: Database, flows: MySQLFlowStore) -> None:
        self.db = db
        self.flows = flows

    async def create(self, new: NewFlow, attempt: NewAttempt, collection: NewCollection) -> Creation[FlowRow]:
        """The COLLECT flow, its first attempt (SENDING) and its collection row in one commit.

        ``Existing(flow)`` when (caller, request_id) already has a flow; nothing is written then.
        """

        async def insert(tx: Tx, flow: FlowRow, now: datetime) -> None:
            await tx.execute(
                f"INSERT INTO collections ({_COLUMNS}) VALUES (%s,%s,%s,NULL,'',NULL,'',%s,%s)",
                (flow.id, collection.cashier_kind, collection.expires_at, now, now),
            )

        return await self.flows.create_with(new, attempt, insert)

    async def by_flow(self, flow_id: int) -> CollectionRow | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM collections WHERE flow_id=%s", (flow_id,))
        return CollectionRow.from_row(row) if row else None

    async def by_attempt(self, attempt_id: int) -> CollectionRow | None:
        row = await self.db.fetchone(
            "SELECT c.* FROM collections c JOIN attempts a ON a.flow_id = c.flow_id WHERE a.id=%s", (attempt_id,)
        )
        return CollectionRow.from_row(row) if row else None

    async def record_cashier(self, flow_id: int, channel: str, cashier: str) -> bool:
        """Keep the channel's cashier (``Cashier.to_json()``) unless one is kept already; True when written."""
        n = await self._update(
            "cashier=%s, cashier_channel=%s WHERE flow_id=%s AND cashier IS NULL", (cashier, channel, flow_id)
        )
        return n == 1

    async def request_close(self, flow_id: int, reason: str) -> bool:
        """Note that a close was asked for (``CALLER`` or ``EXPIRED``), once; True when this call noted it."""
        now = utcnow()
        n = await self._update(
            "close_requested_at=%s, close_reason=%s WHERE flow_id=%s AND close_requested_at IS NULL",
            (now, reason, flow_id),
        )
        return n == 1

    async def _update(self, assignments: str, args: tuple[object, ...]) -> int:
        async with self.db.transaction() as tx:
            n = await tx.execute(f"UPDATE collections SET updated_at=%s, {assignments}", (utcnow(), *args))
            await tx.commit()
        return n
