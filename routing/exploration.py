"""Exploration per segment: the exploration budget and the forced re-look at idle channels.

A segment is one (operation, bank) pair: the traffic that shares a set of
estimates. Each segment keeps

* its own running share of exploration decisions, so a small bank's traffic
  is not spent exploring because a big bank explored little (and the other way
  round), capped at ``max_exploration_share``;
* per channel, when it was last chosen first, and a re-look interval: a
  candidate not chosen for ``relook_after_s`` takes one transaction
  (``reason = "relook"``) whatever its score, so a channel that recovered while
  idle is measured within bounded time. Each re-look doubles the interval up to
  ``relook_max_after_s``; the interval starts over when the channel is chosen
  on its merits or its estimate has moved by ``relook_change_ratio`` since the
  last re-look.

At most ``max_segments`` segments are kept (least recently used goes first).
"""

from __future__ import annotations

from collections import OrderedDict

from channels.contract import Operation
from routing.config import RouterConfig

# how quickly the running share of exploration decisions forgets (about the last 200 decisions of a segment)
EXPLORATION_SHARE_ALPHA = 1.0 / 200.0


class Segment:
    __slots__ = ("backoff", "chosen_at", "merit_at", "reference", "share")

    def __init__(self) -> None:
        self.share = 0.0
        self.chosen_at: dict[str, float] = {}  # channel -> when last chosen first (or first seen)
        self.merit_at: dict[str, float] = {}  # channel -> when last chosen first by its mean score
        self.backoff: dict[str, float] = {}  # channel -> current re-look interval
        self.reference: dict[str, float] = {}  # channel -> its estimate at the last re-look

    def idle_s(self, channel_id: str, now: float) -> float:
        return now - self.chosen_at.setdefault(channel_id, now)

    def unmerited_s(self, channel_id: str, now: float) -> float:
        """How long since the channel was last chosen on its merits (re-looks and exploration do not count)."""
        return now - self.merit_at.setdefault(channel_id, now)

    def relook_due(self, channel_id: str, estimate: float, now: float, config: RouterConfig) -> float:
        """How far past its re-look time the channel is (< 0: not due)."""
        idle = self.idle_s(channel_id, now)
        backoff = self.backoff.get(channel_id, config.relook_after_s)
        reference = self.reference.get(channel_id)
        if reference is not None and abs(estimate - reference) >= config.relook_change_ratio * reference:
            backoff = self.backoff[channel_id] = config.relook_after_s  # its estimate moved: look again soon
            del self.reference[channel_id]
        return idle - backoff

    def chose(
        self, channel_id: str, now: float, config: RouterConfig, *, relook: bool, merit: bool, estimate: float
    ) -> None:
        self.chosen_at[channel_id] = now
        if merit:
            self.merit_at[channel_id] = now
        if relook:
            backoff = self.backoff.get(channel_id, config.relook_after_s)
            self.backoff[channel_id] = min(2.0 * backoff, config.relook_max_after_s)
            self.reference[channel_id] = estimate
        else:
            self.backoff.pop(channel_id, None)
            self.reference.pop(channel_id, None)

    def count_decision(self, explored: bool) -> None:
        self.share += EXPLORATION_SHARE_ALPHA * (float(explored) - self.share)


class Segments:
    """The bounded table of :class:`Segment` by (operation, bank)."""

    __slots__ = ("_limit", "_table")

    def __init__(self, config: RouterConfig) -> None:
        self._limit = config.max_segments
        self._table: OrderedDict[tuple[Operation, str], Segment] = OrderedDict()

    def get(self, operation: Operation, bank_code: str) -> Segment:
        key = (operation, bank_code)
        segment = self._table.get(key)
        if segment is None:
            segment = self._table[key] = Segment()
            if len(self._table) > self._limit:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(key)
        return segment

    def __len__(self) -> int:
        return len(self._table)
