"""Seed flows and attempts in bulk for reconciliation tests and ``paygate bench recon``.

Rows go through a temporary table in one connection (multi-row INSERTs of a few thousand rows),
then two set-based ``INSERT ... SELECT`` write ``flows`` and their single attempt. Synthetic
data of our own, never input: the SQL here is test and bench scaffolding, not the gateway's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from gateway.store.db import Database

CALLER = "recon-seed"


@dataclass(frozen=True, slots=True)
class SeedAttempt:
    """One flow with one attempt: ``status`` is the attempt's (SENDING / PENDING / SUCCEEDED / FAILED)."""

    order_no: str
    amount: int
    status: str
    finished_at: datetime | None
    fee: int | None = None
    operation: str = "withhold"  # withhold / payout / refund / collect
    needs_review: bool = False


_FLOW_STATUS = {"SENDING": "PROCESSING", "PENDING": "PROCESSING", "SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED"}


def _chunks(items: Iterable[SeedAttempt], size: int) -> Iterator[list[SeedAttempt]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


async def seed(db: Database, channel: str, attempts: Iterable[SeedAttempt], *, created_at: datetime) -> int:
    """Insert the flows and attempts; returns how many. Order numbers must be new."""
    n = 0
    async with db.transaction() as tx:
        top = await tx.fetchone("SELECT COALESCE(MAX(id), 0) AS n FROM flows")
        base = int(top["n"]) if top else 0
        await tx.execute(
            "CREATE TEMPORARY TABLE recon_seed (seq INT UNSIGNED NOT NULL PRIMARY KEY, order_no VARCHAR(40) NOT NULL,"
            " operation VARCHAR(16) NOT NULL, amount BIGINT NOT NULL, fee BIGINT NULL, status VARCHAR(16) NOT NULL,"
            " review TINYINT(1) NOT NULL, finished_at DATETIME(6) NULL) ENGINE=InnoDB"
            " DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )
        for chunk in _chunks(attempts, 5000):
            await tx.executemany(
                "INSERT INTO recon_seed (seq, order_no, operation, amount, fee, status, review, finished_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                [
                    (n + i, a.order_no, a.operation, a.amount, a.fee, a.status, int(a.needs_review), a.finished_at)
                    for i, a in enumerate(chunk)
                ],
            )
            n += len(chunk)
        kind = "UPPER(IF(s.operation='collect', 'COLLECT', s.operation))"
        flow_status = "CASE s.status " + " ".join(f"WHEN '{a}' THEN '{f}'" for a, f in _FLOW_STATUS.items()) + " END"
        await tx.execute(
            "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, request_hash, status, channel,"
            " needs_review, created_at, updated_at, finished_at)"
            f" SELECT CONCAT('01RS', LPAD(%s + s.seq, 22, '0')), %s, s.order_no, {kind}, s.amount, 'CNY',"
            f" SHA2(s.order_no, 256), {flow_status}, %s, s.review, %s, COALESCE(s.finished_at, %s),"
            " IF(s.status IN ('SUCCEEDED', 'FAILED'), s.finished_at, NULL) FROM recon_seed s ORDER BY s.seq",
            (base, CALLER, channel, created_at, created_at),
        )
        await tx.execute(
            "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency, fee,"
            " code, created_at, updated_at, finished_at)"
            " SELECT f.id, 1, %s, s.operation, s.order_no, s.status, s.amount, 'CNY', s.fee,"
            " IF(s.status='FAILED', 'INSUFFICIENT_FUNDS', ''), %s, COALESCE(s.finished_at, %s),"
            " IF(s.status IN ('SUCCEEDED', 'FAILED'), s.finished_at, NULL)"
            " FROM recon_seed s JOIN flows f ON f.caller=%s AND f.request_id=s.order_no ORDER BY s.seq",
            (channel, created_at, created_at, CALLER),
        )
        await tx.execute("DROP TEMPORARY TABLE recon_seed")
        await tx.commit()
    return n
