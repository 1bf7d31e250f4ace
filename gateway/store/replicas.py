"""The runs of gateway processes (``replicas``): who is alive, by heartbeat, for recovery to respect.

Every process start registers an *incarnation* (a ULID) under its
``replica_id`` and beats a heartbeat (``last_seen``); the attempts it records
carry the incarnation (gateway/store/flows.py). An incarnation is alive while
it has not stopped, has not been replaced by a newer start of the same
``replica_id``, and was seen within ``dead_after_s``. All three are judged by
the database's clock (``UTC_TIMESTAMP``), never a replica's, so replicas'
clocks need not agree.

:func:`takeable` is the condition recovery adds to its statements
(gateway/store/poll_queue.py, flows.py): work whose incarnation is not alive,
or the recovering process's own once it is old enough.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.store.db import Database
from gateway.store.rows import RecoveryScope, ReplicaRow

# Rows of incarnations gone for this long are deleted at each start (their attempts, if any are still
# open, have no row and so count as not alive: exactly what recovery should think of them).
PRUNE_AFTER_DAYS = 7


def takeable(
    incarnation: str, recorded_at: str, cutoff: datetime, scope: RecoveryScope | None
) -> tuple[str, list[Any]]:
    """SQL condition (and its values): recovery under ``scope`` may take the work in these columns now.

    ``incarnation`` and ``recorded_at`` name the columns holding who recorded
    the work and when. This process's own work is taken once recorded by
    ``cutoff``; anyone else's as soon as its incarnation has no live row
    (never registered, stopped, replaced, or silent longer than
    ``scope.dead_after_s``): nobody is working on it any more. ``scope`` None:
    everything recorded by ``cutoff``.
    """
    if scope is None:
        return f"{recorded_at} <= %s", [cutoff]
    condition = (
        f"(({incarnation} = %s AND {recorded_at} <= %s) OR ({incarnation} <> %s AND NOT EXISTS"
        f" (SELECT 1 FROM replicas r WHERE r.incarnation = {incarnation} AND r.stopped_at IS NULL"
        " AND r.last_seen >= UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND)))"
    )
    return condition, [scope.incarnation, cutoff, scope.incarnation, int(scope.dead_after_s * 1_000_000)]


class MySQLReplicas:
    """Implements :class:`gateway.ports.ReplicaStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def register(self, incarnation: str, replica_id: str) -> int:
        """Record this process's start; earlier incarnations of ``replica_id`` count as stopped from now.

        Returns how many earlier incarnations were still marked running (a
        restart after a crash: 1; 2 or more, or a replacement that keeps
        beating, means two processes share one ``replica_id``).
        """
        async with self.db.transaction() as tx:
            superseded = await tx.execute(
                "UPDATE replicas SET stopped_at = UTC_TIMESTAMP(6) WHERE replica_id=%s AND stopped_at IS NULL",
                (replica_id,),
            )
            await tx.execute(
                "INSERT INTO replicas (incarnation, replica_id, started_at, last_seen)"
                " VALUES (%s, %s, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                (incarnation, replica_id),
            )
            await tx.execute(
                "DELETE FROM replicas WHERE last_seen < UTC_TIMESTAMP(6) - INTERVAL %s DAY", (PRUNE_AFTER_DAYS,)
            )
            await tx.commit()
        return superseded

    async def heartbeat(self, incarnation: str) -> bool:
        """Mark the incarnation seen now. False when it is stopped or unknown (another start took it over)."""
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE replicas SET last_seen = UTC_TIMESTAMP(6) WHERE incarnation=%s AND stopped_at IS NULL",
                (incarnation,),
            )
            await tx.commit()
        return n == 1

    async def stop(self, incarnation: str) -> None:
        """A clean stop: what this incarnation left unfinished may be taken by others at once."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE replicas SET stopped_at = UTC_TIMESTAMP(6) WHERE incarnation=%s AND stopped_at IS NULL",
                (incarnation,),
            )
            await tx.commit()

    async def alive(self, dead_after_s: float) -> list[ReplicaRow]:
        """Incarnations alive now (see the module doc), oldest start first."""
        rows = await self.db.fetchall(
            "SELECT incarnation, replica_id, started_at, last_seen, stopped_at FROM replicas"
            " WHERE stopped_at IS NULL AND last_seen >= UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"
            " ORDER BY started_at",
            (int(dead_after_s * 1_000_000),),
        )
        return [
            ReplicaRow(
                incarnation=str(r["incarnation"]),
                replica_id=str(r["replica_id"]),
                started_at=r["started_at"],
                last_seen=r["last_seen"],
                stopped_at=r["stopped_at"],
            )
            for r in rows
        ]
