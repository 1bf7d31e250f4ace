"""Elimination and half-open probing of one channel.

A channel is eliminated when its recent channel outcomes fail too often (a
share over a window, or failures in a row). It then takes no traffic except a
single probe, handed out by a decision; only the answer to *that* probe
counts as a probe result (recognised by its attempt id when the caller gives
one, else as the first answer about an attempt sent after the probe was handed
out). Answers to ordinary attempts still in flight at the elimination are plain
evidence for the estimates and change nothing here.
"""

from __future__ import annotations

import math
from collections import deque

from routing.config import RouterConfig
from routing.estimates import FRESH_S

# a probe's attempt may be stamped a little before the decision that handed it out (clock granularity)
PROBE_SKEW_S = 1.0


class Health:
    """Elimination and half-open probing of one channel."""

    __slots__ = (
        "consecutive",
        "eliminated_at",
        "first_probe_at",
        "good_probes",
        "interval",
        "last_probe_answered",
        "last_probe_handed",
        "newest",
        "next_probe_at",
        "probe_ids",
        "probe_sent_at",
        "readmitted_at",
        "recent",
    )

    def __init__(self, config: RouterConfig) -> None:
        self.recent: deque[tuple[float, bool]] = deque(maxlen=config.elimination_window)
        self.consecutive = 0
        self.eliminated_at: float | None = None
        self.interval = config.probe_interval_s
        self.next_probe_at = math.inf
        self.probe_sent_at: float | None = None  # when the outstanding probe was handed out
        self.first_probe_at: float | None = None  # the first probe handed out since the elimination
        # attempt ids of the probes handed out since the elimination and not answered (the newest ones)
        self.probe_ids: dict[str, float] = {}
        self.last_probe_answered = -math.inf  # send time of the newest probe answered
        self.last_probe_handed = -math.inf  # when the newest probe was handed out
        self.readmitted_at = -math.inf
        self.newest = -math.inf  # the latest send time among the outcomes recorded
        self.good_probes = 0

    def failure_share(self, now: float, window_s: float) -> tuple[int, float]:
        outcomes = [failed for at, failed in self.recent if at >= now - window_s]
        if not outcomes:
            return 0, 0.0
        return len(outcomes), sum(outcomes) / len(outcomes)

    def probe_due(self, now: float, config: RouterConfig) -> bool:
        if self.eliminated_at is None or now < self.next_probe_at:
            return False
        return self.probe_sent_at is None or now - self.probe_sent_at >= config.probe_timeout_s

    def hand_out_probe(self, now: float, attempt_id: str | None, limit: int) -> None:
        self.probe_sent_at = now
        self.last_probe_handed = now
        if self.first_probe_at is None:
            self.first_probe_at = now
        if attempt_id is not None:
            self.probe_ids[attempt_id] = now
            if len(self.probe_ids) > limit:
                del self.probe_ids[next(iter(self.probe_ids))]

    def is_probe_answer(self, at: float, attempt_id: str | None, timeout_s: float) -> bool:
        """True when an answer (about an attempt sent at ``at``) answers a probe (consumes its id).

        A probe that timed out still counts when its answer comes late, unless a newer probe was
        answered first or handed out more than ``timeout_s`` after it. Without ids, the answer
        about any attempt sent once probing began is taken for a probe's.
        """
        if attempt_id is not None and self.probe_ids:
            sent = self.probe_ids.pop(attempt_id, None)
            probe = sent is not None
        else:
            probe = self.first_probe_at is not None and at >= self.first_probe_at - PROBE_SKEW_S
        if not probe or at < self.last_probe_answered or at < self.last_probe_handed - timeout_s:
            return False  # an older probe's answer after a newer one's, or one overtaken: the newer says more
        self.last_probe_answered = at
        return True

    def record(self, failed: bool, at: float, config: RouterConfig, attempt_id: str | None = None) -> bool:
        """Record one channel outcome; returns True when the channel is (re)admitted after a probe."""
        if self.eliminated_at is not None:
            if not self.is_probe_answer(at, attempt_id, config.probe_timeout_s):
                return False  # an ordinary attempt in flight at the elimination: evidence, not a probe result
            self.probe_sent_at = None
            if failed:
                self.good_probes = 0
                self.interval = min(self.interval * 2.0, config.probe_max_interval_s)
                self.next_probe_at = at + self.interval
                return False
            self.good_probes += 1
            if self.good_probes < config.probe_successes:
                self.next_probe_at = at  # half-open: the next probe may go right away
                return False
            self.good_probes = 0
            self.eliminated_at = None
            self.probe_sent_at = None
            self.next_probe_at = math.inf
            self.first_probe_at = None
            self.probe_ids.clear()
            self.readmitted_at = at
            self.recent.clear()
            self.consecutive = 0
            return True
        if at < self.readmitted_at or at < self.newest - FRESH_S:
            # a straggler: elimination judges the channel's latest behaviour, in the order attempts were sent
            return False
        self.newest = max(self.newest, at)
        self.recent.append((at, failed))
        self.consecutive = self.consecutive + 1 if failed else 0
        volume, share = self.failure_share(self.newest, config.elimination_window_s)
        windowed = volume >= config.elimination_min_volume and share >= config.elimination_threshold
        if windowed or self.consecutive >= config.elimination_consecutive:
            self._eliminate(at, config)
        return False

    def _eliminate(self, at: float, config: RouterConfig) -> None:
        # a channel that flaps (eliminated again soon after coming back) keeps its longer probe interval
        if at - self.readmitted_at > config.probe_max_interval_s:
            self.interval = config.probe_interval_s
        self.eliminated_at = at
        self.next_probe_at = at + self.interval
        self.probe_sent_at = None
        self.first_probe_at = None
        self.probe_ids.clear()
        self.last_probe_answered = -math.inf
        self.last_probe_handed = -math.inf
        self.good_probes = 0
