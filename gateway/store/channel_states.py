"""Operator-set channel states (enabled / draining / disabled) in MySQL.

The router holds the live state; this table keeps what operators set so a
restarted gateway (and every replica) starts from it.
"""

from __future__ import annotations

from gateway.store import audit
from gateway.store.db import Database
from gateway.store.rows import utcnow


class MySQLChannelStates:
    """Implements :class:`gateway.ports.ChannelStateStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> dict[str, str]:
        """channel id -> the state an operator last set (``ENABLED`` / ``DRAINING`` / ``DISABLED`` values)."""
        rows = await self.db.fetchall("SELECT channel, state FROM channel_states")
        return {str(r["channel"]): str(r["state"]) for r in rows}

    async def set(self, channel: str, state: str, *, operator: str, reason: str) -> None:
        """Record the state and its audit row in one commit."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO channel_states (channel, state, updated_at) VALUES (%s,%s,%s)"
                " ON DUPLICATE KEY UPDATE state=VALUES(state), updated_at=VALUES(updated_at)",
                (channel, state, utcnow()),
            )
            await audit.record(tx, operator, "set_channel_state", channel, reason, {"state": state})
            await tx.commit()
