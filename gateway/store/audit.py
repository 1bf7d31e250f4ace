"""The audit log in MySQL: who changed what, when and why (every operator action writes one row).

:func:`record` writes inside the caller's transaction, so an audited change
and its audit row commit together; :class:`MySQLAuditLog` writes one on its
own, for actions that change nothing else (a re-query).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.store.db import Database, Tx


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
