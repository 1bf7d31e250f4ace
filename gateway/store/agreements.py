"""Withholding agreements (签约) in MySQL. Card numbers are stored only masked + keyed hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain import AGREEMENT_FROM, AgreementStatus, new_ulid
from gateway.errors import DuplicateKey
from gateway.store.db import Database
from gateway.store.rows import AgreementRow, Created, Creation, Existing, utcnow


class MySQLAgreementStore:
    """Implements :class:`gateway.ports.AgreementStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        caller: str,
        request_id: str,
        request_hash: str,
        channel: str,
        account_hash: str,
        account_masked: str,
        holder_masked: str,
        bank_code: str,
    ) -> Creation[AgreementRow]:
        """Record a signing AWAITING_CONFIRMATION; ``Existing`` if (caller, request_id) already has one."""
        now = utcnow()
        agreement_no = new_ulid()
        try:
            async with self.db.transaction() as tx:
                row_id = await tx.insert(
                    "INSERT INTO agreements (agreement_no, caller, request_id, request_hash, channel, account_hash,"
                    " account_masked, holder_masked, bank_code, status, created_at, updated_at)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,'AWAITING_CONFIRMATION',%s,%s)",
                    (
                        agreement_no,
                        caller,
                        request_id,
                        request_hash,
                        channel,
                        account_hash,
                        account_masked,
                        holder_masked,
                        bank_code,
                        now,
                        now,
                    ),
                )
                await tx.commit()
        except DuplicateKey as exc:
            if exc.key != "uq_agreements_caller_request":
                raise
            existing = await self.by_request_id(caller, request_id)
            if existing is None:  # pragma: no cover - the row that beat us cannot vanish
                raise
            return Existing(existing)
        row = AgreementRow(
            row_id,
            agreement_no,
            caller,
            request_id,
            request_hash,
            channel,
            account_hash,
            account_masked,
            holder_masked,
            bank_code,
            AgreementStatus.AWAITING_CONFIRMATION,
            "",
            "",
            "",
            now,
            now,
        )
        return Created(row)

    async def by_request_id(self, caller: str, request_id: str) -> AgreementRow | None:
        r = await self.db.fetchone("SELECT * FROM agreements WHERE caller=%s AND request_id=%s", (caller, request_id))
        return AgreementRow.from_row(r) if r else None

    async def by_no(self, caller: str, agreement_no: str) -> AgreementRow | None:
        r = await self.db.fetchone(
            "SELECT * FROM agreements WHERE caller=%s AND agreement_no=%s", (caller, agreement_no)
        )
        return AgreementRow.from_row(r) if r else None

    async def transition(
        self,
        row: AgreementRow,
        target: AgreementStatus,
        *,
        sign_ref: str | None = None,
        agreement_ref: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        """Compare-and-set on status; False if another writer moved it first. Clears ``needs_review``."""
        allowed = AGREEMENT_FROM[target]
        now = utcnow()
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE agreements SET status=%s, sign_ref=COALESCE(%s, sign_ref),"
                " agreement_ref=COALESCE(%s, agreement_ref), failure_code=COALESCE(%s, failure_code),"
                " needs_review=0,"
                f" updated_at=%s, version=version+1 WHERE id=%s AND status IN ({','.join(['%s'] * len(allowed))})",
                (target.value, sign_ref, agreement_ref, failure_code, now, row.id, *[a.value for a in allowed]),
            )
            await tx.commit()
        if n == 1:
            row.status = target
            row.updated_at = now
            row.needs_review = False
            if sign_ref is not None:
                row.sign_ref = sign_ref
            if agreement_ref is not None:
                row.agreement_ref = agreement_ref
            if failure_code is not None:
                row.failure_code = failure_code
        return n == 1

    async def set_sign_ref(self, row: AgreementRow, sign_ref: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE agreements SET sign_ref=%s, updated_at=%s WHERE id=%s AND status='AWAITING_CONFIRMATION'",
                (sign_ref, utcnow(), row.id),
            )
            await tx.commit()
        row.sign_ref = sign_ref

    async def mark_confirm_sent(self, row: AgreementRow) -> None:
        now = utcnow()
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE agreements SET confirm_sent_at=%s, updated_at=%s"
                " WHERE id=%s AND status='AWAITING_CONFIRMATION'",
                (now, now, row.id),
            )
            await tx.commit()
        row.confirm_sent_at = now

    async def clear_confirm_sent(self, row: AgreementRow) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE agreements SET confirm_sent_at=NULL, updated_at=%s"
                " WHERE id=%s AND status='AWAITING_CONFIRMATION'",
                (utcnow(), row.id),
            )
            await tx.commit()
        row.confirm_sent_at = None

    async def unconfirmed_since(self, cutoff: datetime, *, limit: int = 500) -> list[AgreementRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM agreements WHERE status='AWAITING_CONFIRMATION' AND confirm_sent_at <= %s"
            " AND needs_review=0 ORDER BY confirm_sent_at LIMIT %s",
            (cutoff, limit),
        )
        return [AgreementRow.from_row(r) for r in rows]

    async def mark_needs_review(self, row: AgreementRow) -> bool:
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE agreements SET needs_review=1, updated_at=%s, version=version+1"
                " WHERE id=%s AND status='AWAITING_CONFIRMATION' AND needs_review=0",
                (utcnow(), row.id),
            )
            await tx.commit()
        if n == 1:
            row.needs_review = True
        return n == 1

    async def active_refs(self, caller: str, account_hash: str, agreement_no: str = "") -> dict[str, str]:
        """channel -> the channel's agreement ref, for ACTIVE agreements of this account."""
        sql = "SELECT channel, agreement_ref FROM agreements WHERE caller=%s AND account_hash=%s AND status='ACTIVE'"
        args: tuple[Any, ...] = (caller, account_hash)
        if agreement_no:
            sql += " AND agreement_no=%s"
            args += (agreement_no,)
        rows = await self.db.fetchall(sql + " ORDER BY id", args)
        return {r["channel"]: r["agreement_ref"] for r in rows}

    async def list(self, caller: str, *, account_hash: str | None, after_id: int, limit: int) -> list[AgreementRow]:
        sql = "SELECT * FROM agreements WHERE caller=%s AND id > %s"
        args: tuple[Any, ...] = (caller, after_id)
        if account_hash is not None:
            sql += " AND account_hash=%s"
            args += (account_hash,)
        rows = await self.db.fetchall(sql + " ORDER BY id LIMIT %s", (*args, limit))
        return [AgreementRow.from_row(r) for r in rows]
