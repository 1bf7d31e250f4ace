"""Joint-loan splits in MySQL: the small orders (``splits``, ``refund_splits``) and ``settlements``.

Written inside the flow store's terminal transaction (:mod:`gateway.store.flows`):

* a split withhold that SUCCEEDS gets one ``splits`` row per funder
  (:func:`record_parts`), allocated by :mod:`gateway.splits.allocation`;
* a refund of one that SUCCEEDS locks the original's ``splits`` rows (after
  the flows: the store's lock order, rows that hang off flows come after
  them), splits the refund against what each funder still holds, inserts its
  ``refund_splits`` and adds to ``splits.refunded``.

Settlement rows are claimed by their unique (funder_id, business_day): the
first writer computes the day's totals in the same transaction; every other
replica or re-run reads the row it wrote (:meth:`MySQLSplitStore.claim_settlement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway.errors import DuplicateKey
from gateway.splits.allocation import Part, is_refund_marker, shares_from_json, split_amount, split_refund
from gateway.store import audit
from gateway.store.db import Database, Tx
from gateway.store.rows import FlowRow, utcnow


async def record_parts(tx: Tx, flow: FlowRow, now: datetime) -> list[Part]:
    """The funders' parts of a split flow that has just SUCCEEDED, written in the caller's transaction."""
    assert flow.split_shares is not None
    if is_refund_marker(flow.split_shares):
        return await _record_refund(tx, flow, now)
    parts = split_amount(flow.amount, shares_from_json(flow.split_shares))
    await tx.execute(
        "INSERT INTO splits (flow_id, seq, funder_id, amount, refunded, currency, succeeded_at) VALUES "
        + ",".join(["(%s,%s,%s,%s,0,%s,%s)"] * len(parts)),
        [v for seq, p in enumerate(parts) for v in (flow.id, seq, p.funder_id, p.amount, flow.currency, now)],
    )
    return [Part(p.funder_id, p.amount) for p in parts]


async def _record_refund(tx: Tx, refund: FlowRow, now: datetime) -> list[Part]:
    assert refund.original_flow_id is not None
    rows = await tx.fetchall(
        "SELECT id, funder_id, amount, refunded FROM splits WHERE flow_id=%s ORDER BY seq FOR UPDATE",
        (refund.original_flow_id,),
    )
    if not rows:  # the original has not got its parts (cannot happen: a refund needs a SUCCEEDED original)
        return []
    held = [Part(str(r["funder_id"]), int(r["amount"]) - int(r["refunded"])) for r in rows]
    parts = split_refund(refund.amount, held)
    await tx.execute(
        "INSERT INTO refund_splits (refund_flow_id, original_flow_id, seq, funder_id, amount, currency, succeeded_at)"
        " VALUES " + ",".join(["(%s,%s,%s,%s,%s,%s,%s)"] * len(parts)),
        [
            v
            for seq, p in enumerate(parts)
            for v in (refund.id, refund.original_flow_id, seq, p.funder_id, p.amount, refund.currency, now)
        ],
    )
    for row, part in zip(rows, parts, strict=True):
        if part.amount:
            await tx.execute(
                "UPDATE splits SET refunded = refunded + %s WHERE id=%s AND refunded + %s <= amount",
                (part.amount, row["id"], part.amount),
            )
    return [Part(p.funder_id, p.amount) for p in parts]


async def parts_of(db: Database, flow: FlowRow) -> list[Part]:
    """The parts written for a split flow (none before it SUCCEEDED)."""
    if is_refund_marker(flow.split_shares):
        rows = await db.fetchall(
            "SELECT funder_id, amount FROM refund_splits WHERE refund_flow_id=%s ORDER BY seq", (flow.id,)
        )
        return [Part(str(r["funder_id"]), int(r["amount"])) for r in rows]
    rows = await db.fetchall("SELECT funder_id, amount, refunded FROM splits WHERE flow_id=%s ORDER BY seq", (flow.id,))
    return [Part(str(r["funder_id"]), int(r["amount"]), int(r["refunded"])) for r in rows]


# --- settlements ------------------------------------------------------------------------


@dataclass
class SettlementRow:
    funder_id: str
    business_day: date
    currency: str
    withheld: int
    refunded: int
    carried_in: int
    net: int
    paid: int
    carried_out: int
    orders: int
    refund_orders: int
    status: str
    payout_request_id: str = ""
    payout_flow_no: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    payout_attempt: int = 0  # 0: the first payout; n: the n-th re-send (request id ...:r<n>)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SettlementRow:
        return cls(
            funder_id=str(row["funder_id"]),
            business_day=row["business_day"],
            currency=str(row["currency"]),
            withheld=int(row["withheld"]),
            refunded=int(row["refunded"]),
            carried_in=int(row["carried_in"]),
            net=int(row["net"]),
            paid=int(row["paid"]),
            carried_out=int(row["carried_out"]),
            orders=int(row["orders"]),
            refund_orders=int(row["refund_orders"]),
            status=str(row["status"]),
            payout_request_id=str(row["payout_request_id"]),
            payout_flow_no=str(row["payout_flow_no"]),
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
            payout_attempt=int(row.get("payout_attempt") or 0),
        )


@dataclass(frozen=True)
class StatementLine:
    """One small order of a funder's day: a withhold's part, or a refund's part (negative side)."""

    kind: str  # WITHHOLD / REFUND
    flow_no: str
    original_flow_no: str
    caller: str
    request_id: str
    flow_amount: int
    part: int
    refunded_so_far: int
    succeeded_at: datetime


_SETTLEMENT_COLUMNS = (
    "funder_id, business_day, currency, withheld, refunded, carried_in, net, paid, carried_out, orders,"
    " refund_orders, status, payout_request_id, payout_flow_no, created_at, updated_at"
)
_SELECT_COLUMNS = _SETTLEMENT_COLUMNS + ", payout_attempt"


@dataclass(frozen=True)
class Resend:
    """What a re-send of a failed settlement payout found: the settlement now PAYING, or why not."""

    row: SettlementRow | None
    refused: str = ""  # why nothing was changed (the row is then None)


async def _may_have_paid(tx: Tx, funder_id: str, day: date, flow_id: int) -> str:
    """Why a payout of the settlement (its current FAILED one, or one a re-send replaced) may have paid; "" if none.

    An attempt that is not FAILED, a discrepancy (a later conflicting channel result), or an OPEN
    item of a current reconciliation run naming the flow or one of its channel order numbers.
    """
    earlier = await tx.fetchall(
        "SELECT f.id FROM settlement_payouts p JOIN flows f ON f.flow_no = p.flow_no"
        " WHERE p.funder_id=%s AND p.business_day=%s",
        (funder_id, day),
    )
    ids = [flow_id, *(int(r["id"]) for r in earlier)]
    marks = ",".join(["%s"] * len(ids))
    found = await tx.fetchone(
        "SELECT f.flow_no FROM attempts a JOIN flows f ON f.id = a.flow_id"
        f" WHERE a.flow_id IN ({marks}) AND a.status <> 'FAILED' LIMIT 1",
        ids,
    )
    if found:
        return f"payout flow {found['flow_no']} has an attempt that did not fail: it may have paid"
    found = await tx.fetchone(
        f"SELECT f.flow_no FROM discrepancies d JOIN flows f ON f.id = d.flow_id WHERE d.flow_id IN ({marks}) LIMIT 1",
        ids,
    )
    if found:
        return f"payout flow {found['flow_no']} has a recorded discrepancy: it may have paid"
    found = await tx.fetchone(
        "SELECT i.channel_order_no FROM recon_items i JOIN recon_runs r ON r.id = i.run_id"
        f" WHERE i.resolution='OPEN' AND r.superseded_by IS NULL AND (i.flow_id IN ({marks})"
        f" OR i.channel_order_no IN (SELECT channel_order_no FROM attempts WHERE flow_id IN ({marks}))) LIMIT 1",
        [*ids, *ids],
    )
    if found:
        return f"payout order {found['channel_order_no']} has an open reconciliation item: resolve it first"
    return ""


class MySQLSplitStore:
    """Implements :class:`gateway.splits.ports.SplitStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim_settlement(
        self,
        funder_id: str,
        day: date,
        bounds: tuple[datetime, datetime],
        currency: str,
        *,
        pays: bool,
        request_id: str,
    ) -> tuple[SettlementRow, bool]:
        """The settlement of (funder, day), computed and written now if nobody has; (row, written_now).

        The day's totals are read in the writing transaction, with the carry of the
        funder's latest earlier settlement. ``pays``: a channel-settled funder (a
        positive net becomes PAYING with ``request_id``); otherwise REPORTED.
        """
        existing = await self.settlement(funder_id, day)
        if existing is not None:
            return existing, False
        start, end = bounds
        now = utcnow()
        try:
            async with self.db.transaction() as tx:
                got = await tx.fetchone(
                    "SELECT COALESCE(SUM(amount),0) AS total, COUNT(*) AS n FROM splits"
                    " WHERE funder_id=%s AND succeeded_at >= %s AND succeeded_at < %s",
                    (funder_id, start, end),
                )
                back = await tx.fetchone(
                    "SELECT COALESCE(SUM(amount),0) AS total, COUNT(*) AS n FROM refund_splits"
                    " WHERE funder_id=%s AND succeeded_at >= %s AND succeeded_at < %s",
                    (funder_id, start, end),
                )
                prior = await tx.fetchone(
                    "SELECT carried_out FROM settlements WHERE funder_id=%s AND business_day < %s"
                    " ORDER BY business_day DESC LIMIT 1",
                    (funder_id, day),
                )
                assert got is not None and back is not None
                withheld, refunded = int(got["total"]), int(back["total"])
                carried_in = int(prior["carried_out"]) if prior else 0
                net = withheld - refunded + carried_in
                paid = max(net, 0) if pays else 0
                carried_out = min(net, 0)
                if pays and paid > 0:
                    status = "PAYING"
                elif pays:
                    status = "CARRIED"
                else:
                    status = "REPORTED"
                values = (
                    funder_id,
                    day,
                    currency,
                    withheld,
                    refunded,
                    carried_in,
                    net,
                    paid,
                    carried_out,
                    int(got["n"]),
                    int(back["n"]),
                    status,
                    request_id if paid > 0 else "",
                    "",
                    now,
                    now,
                )
                await tx.execute(
                    f"INSERT INTO settlements ({_SETTLEMENT_COLUMNS}) VALUES ({','.join(['%s'] * len(values))})",
                    values,
                )
                await tx.commit()
            written_now = True
        except DuplicateKey as exc:
            # another replica or run wrote it first: its row stands (rolled back here). The store's
            # errors are ours only outside the unit of work (gateway/store/db.py translates there).
            if exc.key != "ux_settlements_funder_day":
                raise
            written_now = False
        written = await self.settlement(funder_id, day)
        assert written is not None
        return written, written_now

    async def record_payout(self, funder_id: str, day: date, request_id: str, flow_no: str, status: str) -> bool:
        """The settlement's payout flow and where it stands (PAYING → PAID / PAYOUT_FAILED; forward only).

        Only for the payout the settlement is waiting for (``request_id``): a late answer about a
        payout a re-send has replaced changes nothing.
        """
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE settlements SET payout_flow_no=%s, status=%s, updated_at=%s"
                " WHERE funder_id=%s AND business_day=%s AND status='PAYING' AND payout_request_id=%s",
                (flow_no, status, utcnow(), funder_id, day, request_id),
            )
            await tx.commit()
        return n == 1

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
    ) -> Resend:
        """PAYOUT_FAILED → PAYING under ``request_id`` (the payout of attempt ``attempt + 1``), audited, or refused.

        ``attempt`` and ``flow_no`` are what the caller read: the row must still be there. In the
        one transaction: the settlement row locked; its current payout flow re-read (locked) and
        FAILED; nothing saying that payout, or one an earlier re-send replaced, may have paid
        after all (:func:`_may_have_paid`); then the conditional UPDATE (status, attempt and flow
        as read), the replaced payout kept in ``settlement_payouts`` and the audit row. The caller
        sends the new payout after the commit, through the normal payout path (a crash in between
        leaves it PAYING with the new request id, which the scheduler's follow-up sends).
        """
        async with self.db.transaction() as tx:
            got = await tx.fetchone(
                f"SELECT {_SELECT_COLUMNS} FROM settlements WHERE funder_id=%s AND business_day=%s FOR UPDATE",
                (funder_id, day),
            )
            if got is None:
                return Resend(None, f"{funder_id} has no settlement for {day}")
            row = SettlementRow.from_row(got)
            if row.status != "PAYOUT_FAILED":
                return Resend(None, f"the settlement is {row.status}: only a PAYOUT_FAILED one can be re-sent")
            if row.payout_attempt != attempt or row.payout_flow_no != flow_no:
                return Resend(None, "the settlement changed while the re-send was prepared: read it again")
            flow = await tx.fetchone("SELECT id, status FROM flows WHERE flow_no=%s FOR UPDATE", (flow_no,))
            if flow is None or flow["status"] != "FAILED":
                state = flow["status"] if flow else "missing"
                return Resend(None, f"its payout flow {flow_no or '-'} is {state}, not FAILED: it may still pay")
            doubt = await _may_have_paid(tx, funder_id, day, int(flow["id"]))
            if doubt:
                return Resend(None, doubt)
            now = utcnow()
            n = await tx.execute(
                "UPDATE settlements SET status='PAYING', payout_attempt=%s, payout_request_id=%s, payout_flow_no='',"
                " updated_at=%s WHERE funder_id=%s AND business_day=%s AND status='PAYOUT_FAILED'"
                " AND payout_attempt=%s AND payout_flow_no=%s",
                (attempt + 1, request_id, now, funder_id, day, attempt, flow_no),
            )
            if n != 1:
                return Resend(None, "the settlement changed while the re-send was prepared: read it again")
            await tx.execute(
                "INSERT INTO settlement_payouts (funder_id, business_day, attempt, request_id, flow_no, replaced_by,"
                " operator, reason, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (funder_id, day, attempt, row.payout_request_id, flow_no, request_id, operator, reason[:512], now),
            )
            await audit.record(
                tx,
                operator,
                "resend_settlement_payout",
                f"settlement:{funder_id}:{day.isoformat()}",
                reason,
                {
                    "failed_request_id": row.payout_request_id,
                    "failed_flow_no": flow_no,
                    "request_id": request_id,
                    "attempt": attempt + 1,
                    "amount": row.paid,
                    "currency": row.currency,
                },
            )
            await tx.commit()
        again = await self.settlement(funder_id, day)
        assert again is not None
        return Resend(again)

    async def replaced_payouts(self, funder_id: str, day: date) -> list[dict[str, Any]]:
        """The payouts re-sends replaced for (funder, day), oldest first."""
        return await self.db.fetchall(
            "SELECT attempt, request_id, flow_no, replaced_by, operator, reason, created_at FROM settlement_payouts"
            " WHERE funder_id=%s AND business_day=%s ORDER BY attempt",
            (funder_id, day),
        )

    async def unfinished(self) -> dict[str, tuple[int, datetime]]:
        """PAYING and PAYOUT_FAILED settlements: status -> (how many, the oldest one's last change)."""
        rows = await self.db.fetchall(
            "SELECT status, COUNT(*) AS n, MIN(updated_at) AS oldest FROM settlements"
            " WHERE status IN ('PAYING', 'PAYOUT_FAILED') GROUP BY status"
        )
        return {str(r["status"]): (int(r["n"]), r["oldest"]) for r in rows}

    async def settlement(self, funder_id: str, day: date) -> SettlementRow | None:
        row = await self.db.fetchone(
            f"SELECT {_SELECT_COLUMNS} FROM settlements WHERE funder_id=%s AND business_day=%s", (funder_id, day)
        )
        return SettlementRow.from_row(row) if row else None

    async def settlements(
        self, *, day: date | None = None, funder_id: str = "", limit: int = 50
    ) -> list[SettlementRow]:
        where: list[str] = []
        args: list[Any] = []
        if day is not None:
            where.append("business_day=%s")
            args.append(day)
        if funder_id:
            where.append("funder_id=%s")
            args.append(funder_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.fetchall(
            f"SELECT {_SELECT_COLUMNS} FROM settlements{clause} ORDER BY business_day DESC, funder_id LIMIT %s",
            (*args, limit),
        )
        return [SettlementRow.from_row(r) for r in rows]

    async def paying(self, limit: int = 100) -> list[SettlementRow]:
        """Settlements whose payout has no final result recorded yet."""
        rows = await self.db.fetchall(
            f"SELECT {_SELECT_COLUMNS} FROM settlements WHERE status='PAYING' ORDER BY business_day LIMIT %s",
            (limit,),
        )
        return [SettlementRow.from_row(r) for r in rows]

    async def statement_lines(self, funder_id: str, bounds: tuple[datetime, datetime]) -> list[StatementLine]:
        """Every small order of the funder in ``bounds`` (withhold parts, then refund parts), in time order."""
        start, end = bounds
        withholds = await self.db.fetchall(
            "SELECT f.flow_no, f.caller, f.request_id, f.amount AS flow_amount, s.amount, s.refunded, s.succeeded_at"
            " FROM splits s JOIN flows f ON f.id = s.flow_id"
            " WHERE s.funder_id=%s AND s.succeeded_at >= %s AND s.succeeded_at < %s ORDER BY s.succeeded_at, s.id",
            (funder_id, start, end),
        )
        refunds = await self.db.fetchall(
            "SELECT f.flow_no, o.flow_no AS original_flow_no, f.caller, f.request_id, f.amount AS flow_amount,"
            " r.amount, r.succeeded_at FROM refund_splits r JOIN flows f ON f.id = r.refund_flow_id"
            " JOIN flows o ON o.id = r.original_flow_id"
            " WHERE r.funder_id=%s AND r.succeeded_at >= %s AND r.succeeded_at < %s ORDER BY r.succeeded_at, r.id",
            (funder_id, start, end),
        )
        out = [
            StatementLine(
                "WITHHOLD",
                str(r["flow_no"]),
                "",
                str(r["caller"]),
                str(r["request_id"]),
                int(r["flow_amount"]),
                int(r["amount"]),
                int(r["refunded"]),
                r["succeeded_at"],
            )
            for r in withholds
        ]
        out += [
            StatementLine(
                "REFUND",
                str(r["flow_no"]),
                str(r["original_flow_no"]),
                str(r["caller"]),
                str(r["request_id"]),
                int(r["flow_amount"]),
                int(r["amount"]),
                0,
                r["succeeded_at"],
            )
            for r in refunds
        ]
        return out

    async def days_with_activity(self, funder_id: str, since: datetime, until: datetime) -> list[datetime]:
        """Success times of the funder's first part in the window (to find unsettled days cheaply)."""
        rows = await self.db.fetchall(
            "SELECT MIN(succeeded_at) AS t FROM splits WHERE funder_id=%s AND succeeded_at >= %s AND succeeded_at < %s"
            " UNION ALL SELECT MIN(succeeded_at) FROM refund_splits"
            " WHERE funder_id=%s AND succeeded_at >= %s AND succeeded_at < %s",
            (funder_id, since, until, funder_id, since, until),
        )
        return [r["t"] for r in rows if r["t"] is not None]
