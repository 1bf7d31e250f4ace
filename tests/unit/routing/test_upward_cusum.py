"""The upward CUSUM on look answers (``upward_llr``, off by default): a stale bad record restarts after enough
evidence that the channel is at the leader's level, a failure ends the excursion, and looks chain once it rises."""

from __future__ import annotations

import math

from routing.config import RouterConfig
from routing.exploration import Segment

CONFIG = RouterConfig(upward_llr=3.0, upward_chain_llr=0.5, upward_delta=0.08)


def test_successes_at_the_leaders_level_restart_a_stale_record_after_the_threshold() -> None:
    segment = Segment()
    step = math.log(0.95 / 0.70)  # each success: log(p1 / p0), p0 the record, p1 the leader
    needed = math.ceil(3.0 / step)
    for i in range(needed - 1):
        assert segment.upward("A", True, 0.70 + 0.01 * i, 0.95, CONFIG) is None  # hypotheses stay fixed
    assert segment.upward("A", True, 0.90, 0.95, CONFIG) == (float(needed), 0.0)
    assert "A" not in segment.cusum  # a restart ends the excursion


def test_a_failure_ends_the_excursion_and_the_counts_start_again() -> None:
    segment = Segment()
    for _ in range(3):
        assert segment.upward("A", True, 0.70, 0.95, CONFIG) is None
    assert segment.upward("A", False, 0.70, 0.95, CONFIG) is None  # log(0.05 / 0.30) < -3 * log(0.95 / 0.70)
    assert "A" not in segment.cusum
    needed = math.ceil(3.0 / math.log(0.95 / 0.70))
    results = [segment.upward("A", True, 0.70, 0.95, CONFIG) for _ in range(needed)]
    assert results[-1] == (float(needed), 0.0) and all(r is None for r in results[:-1])


def test_a_thick_accurate_record_close_to_the_leader_needs_far_more_evidence() -> None:
    segment = Segment()
    # B at 0.90 behind A at 0.95: p1 = max(0.95, 0.90 + 0.08) = 0.98, so ~36 successes in a row
    needed = math.ceil(3.0 / math.log(0.98 / 0.90))
    assert needed > 30
    for _ in range(needed - 1):
        assert segment.upward("B", True, 0.90, 0.95, CONFIG) is None
    assert segment.upward("B", False, 0.90, 0.95, CONFIG) is None  # one failure undoes most of it
    assert segment.cusum.get("B", (0.0,))[0] < 3.0


def test_looks_chain_once_the_sum_passes_the_chain_level() -> None:
    segment = Segment()
    segment.chosen_at["A"] = 100.0
    assert segment.upward("A", True, 0.70, 0.95, CONFIG) is None  # 0.305 nats: under 0.5
    assert segment.chosen_at["A"] == 100.0
    assert segment.upward("A", True, 0.70, 0.95, CONFIG) is None  # 0.61 nats: the next decision looks again
    assert segment.chosen_at["A"] == -math.inf
    assert segment.idle_s("A", 200.0) == math.inf


def test_off_by_default_the_streak_rule_answers() -> None:
    segment = Segment()
    assert RouterConfig().upward_llr == 0.0
    assert segment.answer("no-such-look", "A", True, RouterConfig()) is None
    assert segment.cusum == {}
