"""The poll queue in MySQL: every statement that touches ``poll_queue`` is in this module.

A row per attempt without a definite result: when to query it next
(``due_at``), how many scheduled queries were made (``tries``), and the lease
of the poller that claimed it. Rows are added by the transitions that leave an
attempt PENDING (gateway/store/flows.py and flow_batch.py call the statement
builders below inside their own transaction), by start-up recovery and by
expedited queries; removed when the attempt becomes terminal or is sent to
review.

Claiming: ``SELECT ... WHERE due_at <= now ORDER BY due_at LIMIT n FOR UPDATE
SKIP LOCKED`` on the ``ix_poll_due`` index, then push the claimed rows' due
time forward by the lease in the same transaction; a claimer may cap the rows
of one channel it holds (the poller's bulkhead per channel). Replicas therefore never
claim the same row twice while a lease runs, a crashed poller's rows become
due again when its lease ends, and the cost of a claim depends on the batch
size, not on how many rows wait.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.store.db import Database, Tx
from gateway.store.replicas import takeable
from gateway.store.rows import Claim, RecoveryScope, utcnow

# --- inside another transaction (the flow transitions) -----------------------------------


def enqueue_statement(rows: Sequence[tuple[int, str, datetime]], now: datetime) -> tuple[str, list[Any]]:
    """``INSERT IGNORE`` of ``(attempt_id, channel, due_at)`` rows (an attempt already queued keeps its row)."""
    values = [v for attempt_id, channel, due_at in rows for v in (attempt_id, channel, due_at, now)]
    sql = "INSERT IGNORE INTO poll_queue (attempt_id, channel, due_at, created_at) VALUES " + ",".join(
        ["(%s,%s,%s,%s)"] * len(rows)
    )
    return sql, values


def dequeue_statement(attempt_ids: Sequence[int]) -> tuple[str, list[Any]]:
    """``DELETE`` the rows of these attempts (none is fine: a SENDING attempt has no row)."""
    marks = ",".join(["%s"] * len(attempt_ids))
    return f"DELETE FROM poll_queue WHERE attempt_id IN ({marks})", list(attempt_ids)


async def enqueue(tx: Tx, attempt_id: int, channel: str, due_at: datetime, now: datetime) -> None:
    """Queue one attempt for a query at ``due_at``, within ``tx``."""
    await tx.execute(*enqueue_statement([(attempt_id, channel, due_at)], now))


async def dequeue(tx: Tx, attempt_id: int) -> None:
    """Remove one attempt's row, within ``tx``."""
    await tx.execute(*dequeue_statement([attempt_id]))


# --- on its own -------------------------------------------------------------------------


async def claim_due(
    db: Database,
    *,
    owner: str,
    limit: int,
    lease_s: float,
    held: Mapping[str, int] | None = None,
    per_channel: int = 0,
    channels: Sequence[str] = (),
) -> list[Claim]:
    """Claim up to ``limit`` due rows for ``lease_s`` seconds (one transaction, index-driven).

    ``SKIP LOCKED`` lets concurrent claimers pass each other's rows; pushing
    ``due_at`` forward is the lease, so a crashed claimer's rows come back.
    ``per_channel`` (0: no limit): a channel's rows are claimed only while the
    claimer holds fewer than that many of them (``held``: channel -> rows it
    holds now); the others stay due for the next claim, so one channel's slow
    queries cannot take every slot of a poller. Once a channel is full, the rows of the other
    ``channels`` (the configured ones) are read channel by channel on ``ix_poll_channel_due``; a
    claimer that names no channels gets the due-order scan past the full ones instead.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=lease_s)
    counts = Counter(held or {})
    full = {channel for channel, n in counts.items() if per_channel and n >= per_channel}
    async with db.transaction() as tx:
        if full and channels:
            found = await _claim_open_channels(tx, now, channels, full, counts, limit=limit, per_channel=per_channel)
        else:
            skip = f" AND channel NOT IN ({','.join(['%s'] * len(full))})" if full else ""
            found = await tx.fetchall(
                f"SELECT attempt_id, channel, tries, expedited FROM poll_queue WHERE due_at <= %s{skip}"
                " ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, *sorted(full), limit),
            )
        rows = []
        for row in found:
            if per_channel and counts[row["channel"]] >= per_channel:
                continue  # left due (its lock ends with this transaction)
            counts[row["channel"]] += 1
            rows.append(row)
        if not rows:
            return []
        ids = [int(r["attempt_id"]) for r in rows]
        await tx.execute(
            f"UPDATE poll_queue SET due_at=%s, lease_until=%s, lease_owner=%s, expedited=0"
            f" WHERE attempt_id IN ({','.join(['%s'] * len(ids))})",
            (lease_until, lease_until, owner, *ids),
        )
        await tx.commit()
    return [Claim(int(r["attempt_id"]), int(r["tries"]), bool(r["expedited"]), str(r["channel"])) for r in rows]


async def _claim_open_channels(
    tx: Tx,
    now: datetime,
    channels: Sequence[str],
    full: set[str],
    counts: Mapping[str, int],
    *,
    limit: int,
    per_channel: int,
) -> list[dict[str, Any]]:
    """Due rows of the ``channels`` the claimer has room for, oldest first: each channel's read on
    ``ix_poll_channel_due`` (``channel = c AND due_at <= now``, at most its room), so the cost is a few index
    entries per channel, whatever backlog a full channel has (a scan in due order past ``channel NOT IN``
    would walk all of it, at every claim)."""
    room = {c: min(limit, per_channel - counts.get(c, 0)) for c in channels}
    open_channels = sorted(c for c, n in room.items() if c not in full and n > 0)
    if not open_channels:
        return []
    part = (
        "(SELECT attempt_id, channel, due_at, tries, expedited FROM poll_queue FORCE INDEX (ix_poll_channel_due)"
        " WHERE channel = %s AND due_at <= %s ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)"
    )
    args: list[object] = []
    for channel in open_channels:
        args += [channel, now, room[channel]]
    rows = await tx.fetchall(" UNION ALL ".join([part] * len(open_channels)), args)
    return sorted(rows, key=lambda r: (r["due_at"], r["attempt_id"]))[:limit]


class MySQLPollQueue:
    """The poll queue (see the module doc); implements :class:`gateway.ports.PollQueue`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        held: Mapping[str, int] | None = None,
        per_channel: int = 0,
        channels: Sequence[str] = (),
    ) -> list[Claim]:
        return await claim_due(
            self.db, owner=owner, limit=limit, lease_s=lease_s, held=held, per_channel=per_channel, channels=channels
        )

    async def requeue_unresolved(self, cutoff: datetime, scope: RecoveryScope | None = None) -> int:
        """Queue for a query now the attempts without a definite result and without a row that recovery may take.

        SENDING attempts (a crash between record and answer) that ``scope``
        lets recovery take (this process's own created by ``cutoff``, others'
        once their sender is not alive: a live replica is still sending its
        own; without a scope, all created by ``cutoff``), and PENDING ones
        created by ``cutoff`` that lost their row (nobody is working on
        those); neither when their flow waits for review: an operator owns
        those (re-queuing them would restart their poll schedule forever).
        Returns how many rows were added.
        """
        now = utcnow()
        ours, values = takeable("a.incarnation", "a.created_at", cutoff, scope)
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "INSERT IGNORE INTO poll_queue (attempt_id, channel, due_at, created_at)"
                " SELECT a.id, a.channel, %s, %s FROM attempts a JOIN flows f ON f.id = a.flow_id"
                " LEFT JOIN poll_queue q ON q.attempt_id = a.id"
                " WHERE a.status IN ('SENDING','PENDING') AND q.attempt_id IS NULL AND f.needs_review = 0"
                f" AND ((a.status = 'SENDING' AND {ours}) OR (a.status = 'PENDING' AND a.created_at <= %s))",
                (now, now, *values, cutoff),
            )
            await tx.commit()
        return n

    async def expedite(self, attempt_id: int, channel: str, *, min_interval_s: float) -> bool:
        """Make the attempt due now, at most once per ``min_interval_s``; False when rate-limited.

        Marks the row ``expedited`` (its query does not count as a scheduled
        one) and takes it from whoever holds its lease.
        """
        now = utcnow()
        recent = now - timedelta(seconds=min_interval_s)
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "INSERT INTO poll_queue (attempt_id, channel, due_at, created_at, expedited, expedited_at)"
                " VALUES (%s,%s,%s,%s,1,%s) ON DUPLICATE KEY UPDATE"
                " due_at = IF(expedited_at IS NULL OR expedited_at < %s, VALUES(due_at), due_at),"
                " expedited = IF(expedited_at IS NULL OR expedited_at < %s, 1, expedited),"
                " lease_owner = IF(expedited_at IS NULL OR expedited_at < %s, '', lease_owner),"
                " expedited_at = IF(expedited_at IS NULL OR expedited_at < %s, VALUES(expedited_at), expedited_at)",
                (attempt_id, channel, now, now, now, recent, recent, recent, recent),
            )
            await tx.commit()
        return n > 0

    async def reschedule(self, attempt_id: int, *, owner: str, tries: int, due_at: datetime) -> None:
        """Set the next query of a row this ``owner`` holds and release the lease (nothing if it lost the row)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE poll_queue SET tries=%s, due_at=%s, lease_owner='', lease_until=NULL"
                " WHERE attempt_id=%s AND lease_owner=%s",
                (tries, due_at, attempt_id, owner),
            )
            await tx.commit()

    async def remove(self, attempt_id: int) -> None:
        async with self.db.transaction() as tx:
            await dequeue(tx, attempt_id)
            await tx.commit()

    async def due_count(self) -> int:
        """Rows due now (the backlog gauge)."""
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM poll_queue WHERE due_at <= %s", (utcnow(),))
        return int(row["n"]) if row else 0
