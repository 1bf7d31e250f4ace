"""Position use cases: sync a channel's float from its balance query, adjust it by hand.

A sync is safe against payouts settling at the same time: it reads the
position (with its ``balance_version``) *before* asking the channel, and the
store writes the channel's figure only if no settlement, adjustment or other
sync changed the balance since (``PositionMoved`` otherwise; the sync asks the
channel again, a few times, then gives up with ABORTED). A position never
changes currency: reservations and settlements match on it, so a channel that
reports its balance in another currency is refused, naming both.

An adjustment never cuts the balance below the float reserved by payouts in
flight (refused naming both figures); a settlement that still takes it below
zero is recorded, counted and logged (gateway/store/positions.py).
"""

from __future__ import annotations

import logging

from channels.contract import ChannelRejected, ChannelUnavailable, Operation
from channels.registry import ChannelRegistry
from gateway.domain import INT64_MAX
from gateway.errors import BalanceOverflow, BelowReserved, Conflict, PositionMoved, PreconditionFailed, Unavailable
from gateway.ports import PositionStore
from gateway.store.rows import PositionRow

log = logging.getLogger(__name__)


class PositionService:
    def __init__(self, store: PositionStore, registry: ChannelRegistry, *, sync_tries: int = 3) -> None:
        self.store = store
        self.registry = registry
        self.sync_tries = sync_tries

    async def resync(self, channel_id: str, *, operator: str = "", reason: str = "") -> PositionRow:
        """Set the channel's balance from its balance query (audited when ``operator`` is given).

        Raises ``PreconditionFailed`` (no balance query; another currency; a balance beyond int64), ``Unavailable``
        (the channel cannot be reached) or ``Conflict`` (payouts kept settling during every
        balance query; try again).
        """
        channel = self.registry.get(channel_id)
        if Operation.BALANCE not in channel.operations:
            raise PreconditionFailed(f"channel: {channel_id} has no balance query")
        for _ in range(self.sync_tries):
            seen = await self.store.get(channel_id)  # before the query: what the write compares with
            try:
                balance = await channel.balance()
            except ChannelUnavailable as exc:
                raise Unavailable(f"channel {channel_id} unavailable; retry") from exc
            except ChannelRejected as exc:
                raise PreconditionFailed(f"channel: {channel_id} refused the balance query ({exc.code})") from exc
            if not -INT64_MAX - 1 <= balance.available <= INT64_MAX:
                raise PreconditionFailed(
                    f"channel: {channel_id} reports a balance of {balance.available} minor units, beyond what a"
                    " position holds (int64)"
                )
            if seen is not None and seen.currency != balance.currency:
                raise PreconditionFailed(
                    f"channel: {channel_id} reports its balance in {balance.currency}, but its position is kept in"
                    f" {seen.currency}; a position never changes currency"
                )
            try:
                return await self.store.sync(
                    channel_id, balance.currency, balance.available, seen=seen, operator=operator, reason=reason
                )
            except PositionMoved:
                log.info("position moved during a balance query; asking again", extra={"channel": channel_id})
        raise Conflict(f"channel: payouts settled during each of {self.sync_tries} balance queries; try again")

    async def sync_missing(self) -> None:
        """Channels that pay out, with a balance query but no position yet, get one (start-up; errors logged)."""
        known = {row.channel for row in await self.store.all()}
        for channel_id, channel in self.registry.items():
            if channel_id in known or not {Operation.PAYOUT, Operation.BALANCE} <= channel.operations:
                continue
            try:
                await self.resync(channel_id)
            except Exception as exc:
                log.warning("position sync failed: %s", type(exc).__name__, extra={"channel": channel_id})

    async def adjust(self, channel_id: str, delta: int, *, operator: str, reason: str) -> PositionRow:
        """Add ``delta`` minor units to the channel's balance, audited.

        Raises ``PreconditionFailed`` when the channel has no position, a cut would take the
        balance below the float reserved by payouts in flight (the message names both figures)
        or a raise would take it beyond int64.
        """
        try:
            row = await self.store.adjust(channel_id, delta, operator, reason)
        except BelowReserved as exc:
            raise PreconditionFailed(
                f"delta: the balance would be {exc.balance + exc.delta} minor units, below the {exc.reserved}"
                " reserved by payouts in flight"
            ) from exc
        except BalanceOverflow as exc:
            raise PreconditionFailed(
                f"delta: the balance would be {exc.balance + exc.delta} minor units, beyond the largest a position"
                f" holds ({INT64_MAX})"
            ) from exc
        if row is None:
            raise PreconditionFailed("channel: has no position; resync it first")
        return row
