"""The upward tests weigh a look's answer against reliabilities, and optionally count every answer.

An answer says whether the channel did its part (a payer failure counts as done), so the CUSUM and the
re-look streaks compare it with the channel's reliability a / (a + b), not with its estimate, which also
carries the payer-failure rate. Before the fix the look recorded the estimates (about 0.55 for a channel at
0.90 when payers fail 40 % of the attempts), so a channel answering at exactly its record looked like one
that had risen to the leader's level, and its record restarted again and again.
"""

from __future__ import annotations

import math
import random

import pytest

from channels.contract import Operation
from routing.config import RouterConfig
from routing.engine import Observation, Router
from routing.estimates import Evidence
from routing.exploration import Segment
from tests.unit.routing.helpers import NOW, make_router, profile, withhold

ICBC = "ICBC"
PAIR = frozenset({"a", "b"})


def _payer_rate(router: Router, now: float) -> float:
    status = next(s for s in router.snapshot(now) if s.channel_id == "b")
    return next(e.payer_failure_rate for e in status.estimates if e.bank_code == ICBC)


def _answer(rng: random.Random, reliability: float, payer_share: float) -> Observation:
    if rng.random() >= reliability:
        return Observation.CHANNEL_FAILURE
    return Observation.PAYER_FAILURE if rng.random() < payer_share else Observation.SUCCESS


def _run(
    monkeypatch: pytest.MonkeyPatch, b_reliability: float, payer_share: float, seconds: int = 3000, **config: object
) -> int:
    """a at 0.97 and b at ``b_reliability`` (after a record at 0.90), one transaction a second; b's restarts."""
    router = make_router([profile("a"), profile("b")], seed=3, **config)
    restarts = [0]
    original = Router._recovered

    def recovered(self: Router, *args: object) -> None:
        restarts[0] += 1
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Router, "_recovered", recovered)
    rng = random.Random(11)
    for i in range(400):  # the records: a at 0.97, b at 0.90, both with the payers' failures
        at = NOW + i
        for cid, rate in (("a", 0.97), ("b", 0.90)):
            router.observe(cid, Operation.WITHHOLD, ICBC, _answer(rng, rate, payer_share), at)
    for t in range(seconds):
        now = NOW + 400 + t
        decision = router.decide(withhold(now=now, agreement_channels=PAIR, attempt_id=str(t)))
        chosen = decision.ranked[0].channel_id
        rate = 0.97 if chosen == "a" else b_reliability
        router.observe(chosen, Operation.WITHHOLD, ICBC, _answer(rng, rate, payer_share), now, attempt_id=str(t))
    return restarts[0]


def test_a_look_carries_the_reliabilities_not_the_estimates() -> None:
    router = make_router([profile("a"), profile("b")], upward_llr=3.0)
    rng = random.Random(5)
    for i in range(300):
        for cid, rate in (("a", 0.97), ("b", 0.90)):
            router.observe(cid, Operation.WITHHOLD, ICBC, _answer(rng, rate, 0.4), NOW + i)
    for t in range(300):  # decisions until one looks at b (a re-look or exploration)
        now = NOW + 300 + t
        decision = router.decide(withhold(now=now, agreement_channels=PAIR, attempt_id=str(t)))
        if decision.ranked[0].channel_id == "b":
            break
    assert decision.reason in ("relook", "exploration") and decision.ranked[0].channel_id == "b"
    q = _payer_rate(router, now)
    assert 0.3 < q < 0.5
    segment = router._segments.get(Operation.WITHHOLD, ICBC)  # the unit under test
    channel, reliability, leader = segment.looks[str(t)]
    estimates = {s.channel_id: s.estimate for s in decision.ranked}
    assert channel == "b"
    assert reliability == pytest.approx(estimates["b"] / (1.0 - q), rel=1e-9)
    assert leader == pytest.approx(estimates["a"] / (1.0 - q), rel=1e-9)
    assert 0.85 < reliability < 0.95 and leader > 0.95


@pytest.mark.parametrize("all_answers", [False, True])
def test_frequent_payer_failures_do_not_trigger_the_upward_cusum(
    monkeypatch: pytest.MonkeyPatch, all_answers: bool
) -> None:
    """b answers at exactly its record (0.90) while payers fail 40 %: no restart.

    Before the fix (looks only) b's record restarted 9 times in this run: p0 was its estimate (~0.54) and
    p1 max(the leader's estimate ~0.58, 0.54 + 0.08), so the channel-ok answers (90 %) climbed the sum.
    """
    config = {"upward_llr": 3.0, "upward_all_answers": all_answers, "half_life_s": 1800.0}
    assert _run(monkeypatch, 0.90, 0.4, **config) == 0


@pytest.mark.parametrize("all_answers", [False, True])
def test_a_real_recovery_under_payer_failures_still_restarts_the_record(
    monkeypatch: pytest.MonkeyPatch, all_answers: bool
) -> None:
    """The same stream but b back at 0.995 after its 0.90 record: the CUSUM finds it."""
    config = {"upward_llr": 3.0, "upward_all_answers": all_answers, "half_life_s": 1800.0}
    assert _run(monkeypatch, 0.995, 0.4, **config) >= 1


def test_every_answer_counts_but_the_leaders() -> None:
    config = RouterConfig(upward_llr=3.0, upward_all_answers=True)
    segment = Segment()
    assert segment.any_answer("b", True, 0.70, config) is None  # no decision yet: no leader to compare with
    assert segment.cusum == {}
    segment.leader = ("a", 0.95)
    assert segment.any_answer("a", True, 0.95, config) is None  # the leader is not under itself
    assert segment.cusum == {}
    needed = math.ceil(3.0 / math.log(0.95 / 0.70))
    results = [segment.any_answer("b", True, 0.70, config) for _ in range(needed)]
    assert results[-1] == (float(needed), 0.0) and all(r is None for r in results[:-1])


def test_with_every_answer_a_look_is_not_counted_twice() -> None:
    config = RouterConfig(upward_llr=3.0, upward_all_answers=True)
    segment = Segment()
    segment.hand_out_look("1", "b", 0.70, 0.95, 64)
    assert segment.answer("1", "b", True, config) is None
    assert segment.looks == {} and segment.cusum == {}  # popped, not counted: any_answer counts it


def test_a_late_answer_does_not_feed_the_every_answer_cusum() -> None:
    router = make_router([profile("a"), profile("b")], upward_llr=3.0, upward_all_answers=True)
    for i in range(200):
        router.observe("a", Operation.WITHHOLD, ICBC, Observation.SUCCESS, NOW + i)
        router.observe(
            "b", Operation.WITHHOLD, ICBC, Observation.SUCCESS if i % 4 else Observation.CHANNEL_FAILURE, NOW + i
        )
    now = NOW + 200
    router.decide(withhold(now=now, agreement_channels=PAIR))  # a leads
    segment = router._segments.get(Operation.WITHHOLD, ICBC)  # the unit under test
    assert segment.leader is not None and segment.leader[0] == "a"
    router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now - 600)  # sent 10 minutes ago
    assert segment.cusum == {}
    router.observe("b", Operation.WITHHOLD, ICBC, Observation.SUCCESS, now)  # fresh
    assert segment.cusum["b"][0] > 0.0


def test_a_channel_close_to_the_leader_starts_no_excursion_with_a_gap() -> None:
    config = RouterConfig(upward_llr=3.0, upward_gap=0.1)
    segment = Segment()
    assert segment.upward("C", True, 0.87, 0.95, config) is None  # 0.08 under the leader: not tested
    assert "C" not in segment.cusum
    assert segment.upward("A", True, 0.70, 0.95, config) is None  # 0.25 under: an excursion starts
    assert segment.cusum["A"][0] == pytest.approx(math.log(0.95 / 0.70))
    without = Segment()  # the default (0): any channel under the leader is tested
    assert without.upward("C", True, 0.87, 0.95, RouterConfig(upward_llr=3.0)) is None
    assert without.cusum["C"][0] == pytest.approx(math.log(0.95 / 0.87))


def test_late_answers_weigh_on_their_own_clock() -> None:
    long = RouterConfig(half_life_s=1800.0)
    split = RouterConfig(half_life_s=1800.0, late_half_life_s=300.0)
    for config, weight in ((long, 0.5), (split, 2.0**-6)):
        evidence = Evidence()
        evidence.add(True, False, NOW, config)
        evidence.add(False, False, NOW - 1800.0, config)  # an answer about an attempt sent 30 minutes earlier
        assert evidence.f == pytest.approx(weight)
        assert evidence.s == 1.0  # the memory itself still decays on half_life_s
        assert evidence.factor(NOW + 1800.0, math.log(2.0) / 1800.0) == pytest.approx(0.5)


def test_a_chain_goes_on_while_fewer_than_upward_chain_pending_looks_await_their_answer() -> None:
    config = RouterConfig(upward_llr=5.0, upward_chain_llr=0.15, upward_chain_pending=3)
    segment = Segment()
    assert segment.upward("A", True, 0.70, 0.95, config) is None  # 0.305 nats: at the chain level
    segment.chosen_at["A"] = 100.0  # the next look was handed out (chosen, its clock restarted)
    for i in range(2):
        segment.hand_out_look(str(i), "A", 0.70, 0.95, 64)
        segment.keep_chaining("A", 100.0, config)
        assert segment.chosen_at["A"] == -math.inf  # 1, then 2 outstanding: look again at once
        segment.chosen_at["A"] = 101.0 + i
    segment.hand_out_look("2", "A", 0.70, 0.95, 64)
    segment.keep_chaining("A", 100.0, config)
    assert segment.chosen_at["A"] == 102.0  # 3 outstanding: wait for an answer
    waiting = RouterConfig(upward_llr=5.0, upward_chain_llr=0.15)  # the default, 1: every look waits
    segment.keep_chaining("A", 100.0, waiting)
    assert segment.chosen_at["A"] == 102.0
    segment.cusum.clear()  # no excursion: nothing to chain
    segment.looks.clear()
    segment.keep_chaining("A", 100.0, config)
    assert segment.chosen_at["A"] == 102.0


def test_when_the_excursion_ends_a_chain_without_waiting_stops() -> None:
    config = RouterConfig(upward_llr=5.0, upward_chain_llr=0.15, upward_chain_pending=3)
    segment = Segment()
    assert segment.upward("A", True, 0.70, 0.95, config) is None
    segment.hand_out_look("0", "A", 0.70, 0.95, 64)
    segment.keep_chaining("A", 250.0, config)
    assert segment.chosen_at["A"] == -math.inf
    assert segment.upward("A", False, 0.70, 0.95, config) is None  # a failure: the sum is back at 0
    assert segment.chosen_at["A"] == 250.0 and "A" not in segment.cusum
