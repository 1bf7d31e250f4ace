"""Fifth pass (each off by default): a chain over unanswered looks only while the excursion's answers are all
good (``upward_chain_clean``), a restart at the CUSUM's alternative instead of the excursion's counts
(``upward_restart_p1``), and late answers about the excursion's own attempts counted (``upward_excursion_late``).
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from channels.contract import Operation
from routing.config import RouterConfig
from routing.engine import Observation, Router
from routing.exploration import Segment
from tests.unit.routing.helpers import NOW, make_router, profile, withhold

ICBC = "ICBC"
PAIR = frozenset({"a", "b"})


def _excursion_with_one_failure(config: RouterConfig) -> Segment:
    """A at 0.70 under a leader at 0.95: 7 successes (2.14 nats), then a failure (-1.79): still chaining."""
    segment = Segment()
    for _ in range(7):
        assert segment.upward("A", True, 0.70, 0.95, config) is None
    assert segment.upward("A", False, 0.70, 0.95, config) is None
    assert segment.cusum["A"][0] >= config.upward_chain_llr
    return segment


def test_after_a_failure_a_clean_chain_waits_for_each_answer() -> None:
    base = RouterConfig(upward_llr=5.0, upward_chain_llr=0.15, upward_chain_pending=3)
    for config, looks_ahead in ((base, True), (RouterConfig(**{**_fields(base), "upward_chain_clean": True}), False)):
        segment = _excursion_with_one_failure(config)
        segment.chosen_at["A"] = 300.0  # the look after the failure was handed out
        segment.hand_out_look("8", "A", 0.70, 0.95, 64)
        segment.keep_chaining("A", 300.0, config)
        assert (segment.chosen_at["A"] == -math.inf) is looks_ahead


def test_a_clean_chain_still_goes_on_over_pending_looks_while_every_answer_is_good() -> None:
    config = RouterConfig(upward_llr=5.0, upward_chain_llr=0.15, upward_chain_pending=3, upward_chain_clean=True)
    segment = Segment()
    assert segment.upward("A", True, 0.70, 0.95, config) is None
    segment.chosen_at["A"] = 100.0
    segment.hand_out_look("0", "A", 0.70, 0.95, 64)
    segment.keep_chaining("A", 100.0, config)
    assert segment.chosen_at["A"] == -math.inf


def test_a_clean_chain_stops_when_an_answer_takes_the_sum_under_the_chain_level() -> None:
    config = RouterConfig(upward_llr=5.0, upward_chain_llr=2.0, upward_chain_pending=3, upward_chain_clean=True)
    segment = Segment()
    for _ in range(7):  # 2.14 nats: chaining
        segment.upward("A", True, 0.70, 0.95, config)
    segment.hand_out_look("0", "A", 0.70, 0.95, 64)
    segment.keep_chaining("A", 400.0, config)
    assert segment.chosen_at["A"] == -math.inf
    segment.upward("A", True, 0.70, 0.95, config)
    segment.upward("A", False, 0.70, 0.95, config)  # 0.66 nats: still an excursion, under the chain level
    assert "A" in segment.cusum and segment.chosen_at["A"] == 400.0


def test_a_restart_starts_from_p1_with_the_excursions_weight() -> None:
    needed = math.ceil(3.0 / math.log(0.95 / 0.70))
    for p1_restart, expected in ((False, (float(needed), 0.0)), (True, (0.95 * needed, 0.05 * needed))):
        config = RouterConfig(upward_llr=3.0, upward_chain_llr=0.5, upward_restart_p1=p1_restart)
        segment = Segment()
        results = [segment.upward("A", True, 0.70, 0.95, config) for _ in range(needed)]
        assert all(r is None for r in results[:-1])
        assert results[-1] == pytest.approx(expected)


def _reliability_after_a_restart(p1_restart: bool) -> float:
    """b's record at 0.75 under a at 0.95; fresh successes from b until its CUSUM restarts the record."""
    router = make_router(
        [profile("a"), profile("b")], upward_llr=3.0, upward_all_answers=True, upward_restart_p1=p1_restart
    )
    for i in range(200):
        router.observe(
            "a", Operation.WITHHOLD, ICBC, Observation.SUCCESS if i % 20 else Observation.CHANNEL_FAILURE, NOW + i
        )
        router.observe(
            "b", Operation.WITHHOLD, ICBC, Observation.SUCCESS if i % 4 else Observation.CHANNEL_FAILURE, NOW + i
        )
    now = NOW + 200
    router.decide(withhold(now=now, agreement_channels=PAIR))  # a leads
    segment = router._segments.get(Operation.WITHHOLD, ICBC)  # the unit under test
    t = 0
    while True:
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now + t)
        t += 1
        if "b" not in segment.cusum:
            break
    assert 5 <= t <= 20  # log(0.95 / 0.75) = 0.24 nats a success: the restart came
    status = next(s for s in router.snapshot(now + t) if s.channel_id == "b")
    return next(e.reliability for e in status.estimates if e.bank_code == ICBC)


def test_a_restart_at_p1_leaves_the_channel_at_the_leaders_level_not_above_it() -> None:
    assert _reliability_after_a_restart(False) > 0.97  # the excursion's counts: all successes
    assert 0.90 < _reliability_after_a_restart(True) < 0.96  # p1 = the leader's 0.95, with the excursion's weight


def test_a_late_answer_about_the_excursions_own_attempt_counts() -> None:
    for late_counts in (False, True):
        router = make_router(
            [profile("a"), profile("b")], upward_llr=5.0, upward_all_answers=True, upward_excursion_late=late_counts
        )
        for i in range(200):
            router.observe("a", Operation.WITHHOLD, ICBC, Observation.SUCCESS, NOW + i)
            kind = Observation.SUCCESS if i % 4 else Observation.CHANNEL_FAILURE
            router.observe("b", Operation.WITHHOLD, ICBC, kind, NOW + i)
        now = NOW + 300
        router.decide(withhold(now=now, agreement_channels=PAIR))  # a leads
        segment = router._segments.get(Operation.WITHHOLD, ICBC)  # the unit under test
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now)  # the excursion begins
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now + 60)  # fresh
        assert segment.cusum["b"][1] == 2.0
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now + 10)  # 50 s behind the newest
        assert segment.cusum["b"][1] == (3.0 if late_counts else 2.0)
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now - 100)  # sent before it began
        assert segment.cusum["b"][1] == (3.0 if late_counts else 2.0)


def test_the_fifth_pass_options_are_off_by_default() -> None:
    config = RouterConfig()
    assert not (config.upward_chain_clean or config.upward_restart_p1 or config.upward_excursion_late)
    assert config.upward_chain_timeout_s is None and config.upward_chain_max == 0 and not config.upward_fallen_only
    assert not config.upward_fallen_back


def _fields(config: RouterConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def test_a_look_unanswered_past_the_timeout_no_longer_holds_the_chain() -> None:
    for timeout, chains in ((None, False), (60.0, True)):
        config = RouterConfig(
            upward_llr=5.0, upward_chain_llr=0.15, upward_chain_pending=3, upward_chain_timeout_s=timeout
        )
        segment = Segment()
        assert segment.upward("A", True, 0.70, 0.95, config) is None
        for i in range(3):
            segment.hand_out_look(str(i), "A", 0.70, 0.95, 64, 100.0 + i)
        segment.chosen_at["A"] = 102.0
        segment.keep_chaining("A", 120.0, config)
        assert segment.chosen_at["A"] == 102.0  # 3 outstanding, none timed out: wait
        segment.keep_chaining("A", 170.0, config)  # 68-70 s without an answer (answers can come hours late)
        assert (segment.chosen_at["A"] == -math.inf) is chains


def test_an_excursion_chains_only_until_it_has_counted_upward_chain_max_answers() -> None:
    for bound, chains in ((0, True), (5, False)):
        config = RouterConfig(upward_llr=50.0, upward_chain_llr=0.15, upward_chain_max=bound)
        segment = Segment()
        for _ in range(4):
            segment.upward("A", True, 0.80, 0.90, config)
        assert segment.chosen_at["A"] == -math.inf  # 4 answers: chaining either way
        segment.chosen_at["A"] = 500.0  # the look was handed out
        segment.upward("A", True, 0.80, 0.90, config)  # the fifth
        assert "A" in segment.cusum  # the excursion goes on, on ordinary answers and re-looks
        assert (segment.chosen_at["A"] == -math.inf) is chains


def _router_after(b_history: str, fallen_only: bool) -> tuple[Router, Segment, float]:
    """a at 0.95; b's answers as given ('S', 'F', one a second); then a leads a decision."""
    router = make_router(
        [profile("a"), profile("b")],
        upward_llr=5.0,
        upward_all_answers=True,
        upward_gap=0.1,
        upward_fallen_only=fallen_only,
    )
    for i, symbol in enumerate(b_history):
        router.observe(
            "a", Operation.WITHHOLD, ICBC, Observation.SUCCESS if i % 20 else Observation.CHANNEL_FAILURE, NOW + i
        )
        kind = Observation.SUCCESS if symbol == "S" else Observation.CHANNEL_FAILURE
        router.observe("b", Operation.WITHHOLD, ICBC, kind, NOW + i)
    now = NOW + len(b_history)
    router.decide(withhold(now=now, agreement_channels=PAIR))  # a leads
    return router, router._segments.get(Operation.WITHHOLD, ICBC), now  # the unit under test


def test_with_fallen_only_a_channel_always_at_its_low_level_starts_no_excursion() -> None:
    steady = "SSSF" * 75  # b always at 0.75, 0.2 under a
    for fallen_only, starts in ((False, True), (True, False)):
        router, segment, now = _router_after(steady, fallen_only)
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now)
        assert ("b" in segment.cusum) is starts


def test_with_fallen_only_a_channel_whose_drop_was_detected_starts_an_excursion() -> None:
    dropped = "SSSSSSSSSSSSSSSSSSSF" * 10 + "F" * 12  # b at 0.95, then a detected drop
    router, segment, now = _router_after(dropped, True)
    evidence = router._channels["b"].evidence[(Operation.WITHHOLD, ICBC)]  # the unit under test
    assert evidence.high == pytest.approx(0.95, abs=0.02)  # what b was before the drop
    router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now)
    assert "b" in segment.cusum


def test_with_fallen_back_a_fallen_channel_is_tested_against_its_old_level() -> None:
    dropped = "SSSSSSSSSSSSSSSSSSSF" * 10 + "F" * 12  # b at 0.95, then a detected drop
    steps = []
    for back in (False, True):
        router, segment, now = _router_after(dropped, True)
        router._config = dataclasses.replace(router.config, upward_fallen_back=back)  # the unit under test
        segment.leader = ("a", 0.90)  # a leader under b's old level
        router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now)
        total, _, _, _, p1, _ = segment.cusum["b"]
        steps.append((p1, total))
    assert steps[0][0] == pytest.approx(0.90)  # the leader's level
    assert steps[1][0] == pytest.approx(0.95, abs=0.02)  # b's level before its drop
    assert steps[1][1] > steps[0][1]
