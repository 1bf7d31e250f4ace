"""Operator-set channel states (enabled / draining / disabled) in MySQL.

The router of each replica holds the live state; this table keeps what
operators set, so a restarted gateway starts from it and every replica
follows each change within ``[replicas] state_sync_s`` (gateway/replicas.py
reads :meth:`MySQLChannelStates.current` that often). Each write bumps the
row's ``version``: a reader sees every change exactly once, by comparing
versions, whatever the writers' clocks say.
"""

from __future__ import annotations

from gateway.store import audit
from gateway.store.db import Database
from gateway.store.rows import ChannelStateRow, utcnow


class MySQLChannelStates:
    """Implements :class:`gateway.ports.ChannelStateStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> dict[str, str]:
        """channel id -> the state an operator last set (a ``ChannelState`` value: enabled / draining / disabled)."""
        return {row.channel: row.state for row in await self.current()}

    async def current(self) -> list[ChannelStateRow]:
        """Every channel's operator state with its version: the whole table (one row per channel)."""
        rows = await self.db.fetchall("SELECT channel, state, version FROM channel_states")
        return [ChannelStateRow(str(r["channel"]), str(r["state"]), int(r["version"])) for r in rows]

    async def set(self, channel: str, state: str, *, operator: str, reason: str) -> ChannelStateRow:
        """Record the state and its audit row in one commit; returns the row as written (its new version)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO channel_states (channel, state, updated_at, version) VALUES (%s,%s,%s,1)"
                " ON DUPLICATE KEY UPDATE state=VALUES(state), updated_at=VALUES(updated_at), version=version+1",
                (channel, state, utcnow()),
            )
            row = await tx.fetchone("SELECT version FROM channel_states WHERE channel=%s", (channel,))
            await audit.record(tx, operator, "set_channel_state", channel, reason, {"state": state})
            await tx.commit()
        assert row is not None  # written just above, in this transaction
        return ChannelStateRow(channel, state, int(row["version"]))
