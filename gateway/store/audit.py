"""The audit log in MySQL: who changed what, when and why (every operator action writes one row).

:func:`record` writes inside the caller's transaction, so an audited change
and its audit row commit together; :class:`MySQLAuditLog` writes one on its
own, for actions that change nothing else (a re-query), and reads them back
(:meth:`MySQLAuditLog.entries`: filtered by target, operator and time, newest
first, paged by id).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.store.db import Database, Tx
from gateway.store.rows import AuditQuery, AuditRow


async def record(tx: Tx, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None:
    """One audit row within ``tx``; ``reason`` is cut to 512 characters."""
    await tx.execute(
        "INSERT INTO audit_log (operator, action, target, reason, detail, created_at)"
        " VALUES (%s,%s,%s,%s,%s,UTC_TIMESTAMP(6))",
        (operator, action, target, reason[:512], json.dumps(detail)),
    )


class MySQLAuditLog:
    """Implements :class:`gateway.ports.AuditLog`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None:
        async with self.db.transaction() as tx:
            await record(tx, operator, action, target, reason, detail)
            await tx.commit()

    async def entries(self, query: AuditQuery) -> list[AuditRow]:
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("target = %s", query.target),
            ("operator = %s", query.operator),
            ("created_at >= %s", query.since),
            ("created_at < %s", query.until),
            ("id < %s", query.before_id),
        ):
            if value:
                where.append(clause)
                args.append(value)
        sql = "SELECT * FROM audit_log" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = await self.db.fetchall(f"{sql} ORDER BY id DESC LIMIT %s", (*args, query.limit))
        return [
            AuditRow(
                id=int(r["id"]),
                operator=r["operator"],
                action=r["action"],
                target=r["target"],
                reason=r["reason"],
                detail=_detail(r["detail"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]


def _detail(raw: object) -> dict[str, Any]:
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw[:512]}
    return value if isinstance(value, dict) else {"value": value}
