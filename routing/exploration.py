"""Exploration per segment: the exploration budget and the forced re-look at idle channels.

A segment is one (operation, bank) pair: the traffic that shares a set of
estimates. Each segment keeps

* its own running share of exploration decisions, so a small bank's traffic
  is not spent exploring because a big bank explored little (and the other way
  round), capped at ``max_exploration_share``, and the running mean of the
  score it gives up (best mean score minus the explored channel's), capped at
  ``max_exploration_cost`` of the best mean score (1, off, by default): exploring a channel known
  to be far behind uses up the budget quickly, a close rival costs little, so
  the budget goes where a mistake is cheap and a discovery likely;
* per channel, when it was last chosen first, and a re-look interval: a
  candidate not chosen for ``relook_after_s`` takes one transaction
  (``reason = "relook"``) whatever its score, so a channel that recovered while
  idle is measured within bounded time. Each re-look doubles the interval up to
  ``relook_max_after_s``; the interval starts over when the channel is chosen
  on its merits or its estimate has moved by ``relook_change_ratio`` since the
  last re-look. Optionally (``relook_burst_gap < 1``) a channel far under
  the leader is looked at again after each good answer to a look, and a
  streak worth ``relook_burst_llr`` nats of evidence restarts its record
  (:meth:`Segment.look_answered`).

At most ``max_segments`` segments are kept (least recently used goes first).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from channels.contract import Operation
from routing.config import RouterConfig

# how quickly the running share of exploration decisions forgets (about the last 200 decisions of a segment)
EXPLORATION_SHARE_ALPHA = 1.0 / 200.0


class Segment:
    __slots__ = (
        "backoff",
        "best",
        "chained",
        "chosen_at",
        "cost",
        "cusum",
        "leader",
        "looked_at",
        "looks",
        "merit_at",
        "reference",
        "share",
        "streak",
    )

    def __init__(self) -> None:
        self.share = 0.0
        self.cost = 0.0  # running mean of the score given up per decision by exploring
        self.best = 1.0  # the best mean score at the last decision
        self.chosen_at: dict[str, float] = {}  # channel -> when last chosen first (or first seen)
        self.merit_at: dict[str, float] = {}  # channel -> when last chosen first by its mean score
        self.backoff: dict[str, float] = {}  # channel -> current re-look interval
        self.reference: dict[str, float] = {}  # channel -> its estimate at the last re-look
        # looks awaiting their answer: attempt id -> (channel, its reliability, the leader's reliability)
        self.looks: dict[str, tuple[str, float, float]] = {}
        self.looked_at: dict[str, float] = {}  # attempt id -> when the look was handed out
        # the channel chosen first on its mean score at the last decision and its reliability a / (a + b)
        self.leader: tuple[str, float] | None = None
        # channel -> when its last look was handed out, while a chain goes on without waiting (keep_chaining)
        self.chained: dict[str, float] = {}
        self.streak: dict[str, int] = {}  # channel -> successful re-look answers in a row
        # channel -> (upward CUSUM in nats, successes and failures since it last left 0, p0, p1, the send time
        # of the first answer counted since it left 0)
        self.cusum: dict[str, tuple[float, float, float, float, float, float]] = {}

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

    def may_explore(self, config: RouterConfig) -> bool:
        """True while both budgets have room: the share of decisions and the value given up."""
        return self.share < config.max_exploration_share and self.cost <= config.max_exploration_cost * self.best

    def hand_out_look(
        self, attempt_id: str, channel_id: str, reliability: float, leader: float, limit: int, at: float = -math.inf
    ) -> None:
        """Remember a look's attempt with the reliabilities (not the estimates) its answer is tested against."""
        self.looks[attempt_id] = (channel_id, reliability, leader)
        self.looked_at[attempt_id] = at
        if len(self.looks) > limit:
            oldest = next(iter(self.looks))
            del self.looks[oldest]
            self.looked_at.pop(oldest, None)

    def _pop_look(self, attempt_id: str) -> tuple[str, float, float] | None:
        self.looked_at.pop(attempt_id, None)
        return self.looks.pop(attempt_id, None)

    def answer(self, attempt_id: str, channel_id: str, ok: bool, config: RouterConfig) -> tuple[float, float] | None:
        """Count the answer to a look; (successes, failures) to restart the channel's record from, else None.

        With ``upward_llr > 0`` the upward CUSUM decides (:meth:`upward`), else the re-look streak
        (:meth:`look_answered`). With ``upward_all_answers`` the CUSUM counts every answer instead
        (:meth:`any_answer`) and looks only chain.
        """
        if config.upward_llr <= 0:
            streak = self.look_answered(attempt_id, channel_id, ok, config)
            return (float(streak), 0.0) if streak else None
        look = self._pop_look(attempt_id)
        if look is None or look[0] != channel_id or config.upward_all_answers:
            return None
        return self.upward(channel_id, ok, look[1], look[2], config)

    def in_excursion(self, channel_id: str, at: float) -> bool:
        """True when an excursion of the channel is under way and began no later than ``at`` (a send time)."""
        entry = self.cusum.get(channel_id)
        return entry is not None and at >= entry[5]

    def any_answer(
        self,
        channel_id: str,
        ok: bool,
        reliability: float,
        config: RouterConfig,
        at: float = -math.inf,
        back_to: float = -1.0,
    ) -> tuple[float, float] | None:
        """``upward_all_answers``: every fresh answer from a channel other than the last leader feeds its CUSUM.

        ``reliability`` is the channel's a / (a + b) before the answer; the leader's is the one remembered
        at the last decision. The leader's own answers do not count (it is not under itself). ``back_to``: a
        level to test against when it is above the leader's (``upward_fallen_back``: the channel's before its drop).
        """
        if self.leader is None or self.leader[0] == channel_id:
            return None
        return self.upward(channel_id, ok, reliability, max(self.leader[1], back_to), config, at)

    def upward(
        self, channel_id: str, ok: bool, reliability: float, leader: float, config: RouterConfig, at: float = -math.inf
    ) -> tuple[float, float] | None:
        """One step of the upward CUSUM of a channel under the leader; the counts to restart from, or None.

        The test is "the channel is now at ``p1`` = max(leader, reliability + upward_delta) (capped at 0.99)"
        against "it is at its record ``p0``", both fixed when the sum leaves 0 (the channel's reliability
        a / (a + b) and the leader's at that look, not the estimates: an answer says whether the channel did
        its part, and a payer failure counts as done; the record moves as the looks come in): a success adds
        ``log(p1 / p0)``, a failure ``log((1 - p1) / (1 - p0))``, and the sum never goes under 0. While
        it is at least ``upward_chain_llr`` the next decision looks at the channel again, so the test is
        decided in a run of consecutive looks; at ``upward_llr`` the record is stale and the caller
        restarts it from the looks counted since the sum last left 0. A channel whose reliability is
        less than ``upward_gap`` under the leader's starts no excursion (exploration measures it).
        """
        total, s, f, p0, p1, since = self.cusum.get(channel_id, (0.0, 0.0, 0.0, 0.0, 0.0, at))
        if total <= 0.0:  # a new excursion: the hypotheses are fixed at its start
            since = at
            p0 = min(max(reliability, 0.01), 0.98)
            p1 = min(max(leader, p0 + config.upward_delta), 0.99)
            if p1 <= p0 or (config.upward_gap > 0 and leader - p0 < config.upward_gap):
                return None  # not under the leader, or too close to it for looks in a row to pay
        total += math.log(p1 / p0) if ok else math.log((1.0 - p1) / (1.0 - p0))
        s, f = (s + 1.0, f) if ok else (s, f + 1.0)
        if total <= 0.0 or total >= config.upward_llr:
            self.cusum.pop(channel_id, None)
            self._unchain(channel_id)  # the excursion ended: no more looks in a row
            if total <= 0.0:
                return None
            if config.upward_restart_p1:  # the alternative the test accepted, with the excursion's weight
                return p1 * (s + f), (1.0 - p1) * (s + f)
            return s, f
        self.cusum[channel_id] = (total, s, f, p0, p1, since)
        if total >= config.upward_chain_llr and self._may_chain(channel_id, config):
            self.chosen_at[channel_id] = -math.inf  # the next decision looks again
        elif config.upward_chain_clean:
            self._unchain(channel_id)  # under the chain level: a look handed out ahead of this answer is enough
        return None

    def _may_chain(self, channel_id: str, config: RouterConfig) -> bool:
        """``upward_chain_max``: an excursion chains its looks until it has counted that many answers (0: no bound)."""
        if config.upward_chain_max == 0:
            return True
        entry = self.cusum.get(channel_id)
        return entry is None or entry[1] + entry[2] < config.upward_chain_max

    def _unchain(self, channel_id: str) -> None:
        """Stop a chain that went on without waiting (:meth:`keep_chaining`): the re-look clock goes back."""
        looked = self.chained.pop(channel_id, None)
        if looked is not None and self.chosen_at.get(channel_id) == -math.inf:
            self.chosen_at[channel_id] = looked

    def keep_chaining(self, channel_id: str, now: float, config: RouterConfig) -> None:
        """After a look at a channel whose CUSUM is at the chain level: look again at the next decision while
        fewer than ``upward_chain_pending`` of its looks await their answer (1: only once an answer came).
        With ``upward_chain_clean`` only while no failure was counted in the excursion: a channel that
        answers badly is not looked at over unanswered looks (delayed answers chain a good channel only).
        With ``upward_chain_timeout_s`` a look unanswered for that long no longer holds the chain back.

        When the excursion ends (:meth:`upward`) the channel's re-look clock goes back to ``now``.
        """
        entry = self.cusum.get(channel_id)
        if entry is None or entry[0] < config.upward_chain_llr:
            return
        limit = config.upward_chain_pending
        if config.upward_chain_clean and entry[2] > 0.0:
            limit = 1  # a failure in this excursion: the chain waits for each answer again
        timeout = config.upward_chain_timeout_s
        pending = sum(
            1
            for attempt_id, look in self.looks.items()
            if look[0] == channel_id and (timeout is None or now - self.looked_at.get(attempt_id, now) < timeout)
        )
        if pending < limit and self._may_chain(channel_id, config):
            self.chosen_at[channel_id] = -math.inf
            self.chained[channel_id] = now

    def look_answered(self, attempt_id: str, channel_id: str, ok: bool, config: RouterConfig) -> int:
        """Count the answer to a re-look; returns the streak of good answers once it proves a recovery, else 0.

        A channel re-looked at while its reliability was at least ``relook_burst_gap`` under the leader's
        is looked at again right away after each good answer: a sequential test of "it is now as good
        as the leader" (each success adds ``log(leader / reliability)``) against "it is what its record
        says" (a failure ends the streak). When the evidence reaches ``relook_burst_llr`` nats the
        channel has recovered: the caller restarts its estimates from the streak.
        """
        look = self._pop_look(attempt_id)
        if look is None or look[0] != channel_id:
            return 0
        _, reliability, leader = look
        if not ok:
            self.streak.pop(channel_id, None)
            return 0
        if leader - reliability < config.relook_burst_gap or reliability <= 0.0:
            return 0
        streak = self.streak[channel_id] = self.streak.get(channel_id, 0) + 1
        if streak * math.log(leader / reliability) >= config.relook_burst_llr:
            del self.streak[channel_id]
            return streak
        self.chosen_at[channel_id] = -math.inf  # the next decision looks again
        return 0

    def count_decision(self, explored: bool, best: float, given_up: float = 0.0) -> None:
        """Count one decision: ``best`` mean score; ``given_up``: ``best`` minus the chosen one's (exploring)."""
        self.best = best
        self.share += EXPLORATION_SHARE_ALPHA * (float(explored) - self.share)
        self.cost += EXPLORATION_SHARE_ALPHA * (max(given_up, 0.0) - self.cost)


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

    def peek(self, operation: Operation, bank_code: str) -> Segment | None:
        """The segment if it exists, without touching its recency."""
        return self._table.get((operation, bank_code))

    def __len__(self) -> int:
        return len(self._table)
