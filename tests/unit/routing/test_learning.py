"""Estimates, elimination and probing, exploration, delayed feedback, determinism, warm start."""

from __future__ import annotations

import json

from channels.contract import Operation, Outcome, OutcomeStatus
from routing.engine import EstimateStatus, Observation, Router
from tests.unit.routing.helpers import NOW, feed, make_router, profile, withhold


def estimate(router: Router, channel_id: str, now: float, bank: str = "ICBC") -> float:
    for status in router.snapshot(now):
        if status.channel_id == channel_id:
            for e in status.estimates:
                if e.bank_code == bank:
                    return e.estimate
    raise AssertionError(f"no estimate for {channel_id}/{bank}")


def greedy_router(**config: object) -> Router:
    return make_router(exploration=0.0, **config)


def status(router: Router, channel_id: str, now: float, bank: str = "ICBC") -> EstimateStatus:
    for s in router.snapshot(now):
        if s.channel_id == channel_id:
            return next(e for e in s.estimates if e.bank_code == bank)
    raise AssertionError(f"no estimate for {channel_id}/{bank}")


def test_estimate_follows_channel_outcomes_and_models_payer_failures() -> None:
    """Payer failures leave the channel's reliability intact and show as a payer-failure rate.

    Issue 15 (5): the main engine dropped them, so a channel with half its attempts failed by payers
    still promised the success rate of a channel without any (fails there: payer_failure_rate absent).
    """
    with_payer, without = greedy_router(), greedy_router()
    end = feed(with_payer, "a", "SP" * 40)  # insufficient funds etc. are not the channel's fault
    feed(without, "a", "S" * 80)
    payer, clean = status(with_payer, "a", end), status(without, "a", end)
    assert abs(payer.reliability - clean.reliability) < 1e-9
    assert 0.4 < payer.payer_failure_rate < 0.6
    assert clean.payer_failure_rate == 0.0
    assert abs(payer.estimate - payer.reliability * (1 - payer.payer_failure_rate)) < 1e-9
    assert not with_payer.eliminated("a", end)
    before = estimate(with_payer, "a", end)
    end = feed(with_payer, "a", "F" * 3, start=end)
    assert estimate(with_payer, "a", end) < before
    assert not with_payer.eliminated("a", end)


def test_payer_failures_never_eliminate() -> None:
    router = greedy_router()
    end = feed(router, "a", "P" * 100)
    assert not router.eliminated("a", end)
    assert router.decide(withhold(now=end)).rejected == []


def test_best_estimate_wins_without_exploration() -> None:
    router = greedy_router()
    feed(router, "a", "SSSSSSSSSF" * 5)
    end = feed(router, "b", "S" * 50)
    feed(router, "c", "SSSSF" * 10)
    decision = router.decide(withhold(now=end))
    assert [s.channel_id for s in decision.ranked] == ["b", "a", "c"]
    assert decision.reason == "best_score"
    assert [s.reason for s in decision.ranked] == ["best_score", "failover", "failover"]
    assert decision.ranked[0].score > decision.ranked[1].score > decision.ranked[2].score


def test_cold_start_uses_the_prior_and_bank_falls_back_to_channel_level() -> None:
    router = greedy_router(prior_mean=0.8)
    assert abs(estimate_of_unseen(router) - 0.8) < 1e-9
    end = feed(router, "a", "F" * 5 + "S" * 5, bank="CCB")  # channel-level evidence, through another bank
    icbc = router.decide(withhold(now=end, bank="ICBC"))
    a = next(s for s in icbc.ranked if s.channel_id == "a")
    assert a.estimate < 0.8  # the unseen bank leans on the channel's (operation) estimate
    assert a.observations == 0.0


def test_an_idle_bad_channel_stays_bad_for_a_while_then_becomes_uncertain_again() -> None:
    """Issue 15 (1): the prior regains its weight with idleness (``prior_half_life_s``).

    On the main engine the faded prior never came back: after an hour idle the estimate was still the
    old ratio (about 0.67), so a channel that recovered while idle was never looked at again.
    """
    router = greedy_router()
    end = feed(router, "a", "SSF" * 100)
    assert estimate(router, "a", end + 300) < 0.7  # a recent bad record holds
    assert estimate(router, "a", end + 3600) > 0.9  # an hour without news: back near the prior
    fresh = greedy_router()
    feed(fresh, "a", "SSF")  # a channel we barely know still leans on the prior
    assert estimate(fresh, "a", NOW + 3) > 0.8


def estimate_of_unseen(router: Router) -> float:
    return router.decide(withhold()).ranked[0].estimate


def test_cost_term_prefers_the_cheaper_of_equal_channels() -> None:
    from routing.config import FeeSchedule

    router = make_router(
        [profile("a", fee=FeeSchedule(rate_ppm=10_000)), profile("b", fee=FeeSchedule(fixed=100))],
        exploration=0.0,
        cost_weight=2.0,
    )
    end = feed(router, "a", "S" * 30)
    feed(router, "b", "S" * 30)
    decision = router.decide(withhold(amount=100_000, now=end))
    assert [s.channel_id for s in decision.ranked] == ["b", "a"]
    b, a = decision.ranked
    assert (a.cost, b.cost) == (1000, 100)
    assert abs(a.score - a.estimate * (1 - 2.0 * 1000 / 100_000)) < 1e-12
    small = router.decide(withhold(amount=5_000, now=end))  # the fixed fee dominates small amounts
    assert small.ranked[0].channel_id == "a"


def test_elimination_and_half_open_probe() -> None:
    router = greedy_router(elimination_consecutive=5, probe_interval_s=30, probe_max_interval_s=120)
    feed(router, "b", "S" * 20)
    end = feed(router, "a", "S" * 20 + "F" * 5)
    eliminated_at = end - 1
    assert router.eliminated("a", end)
    decision = router.decide(withhold(now=end))
    assert "a" not in [s.channel_id for s in decision.ranked]
    assert any(r.channel_id == "a" and r.filter == "eliminated" for r in decision.rejected)

    probe_time = eliminated_at + 30
    probe = router.decide(withhold(now=probe_time))
    assert probe.reason == "probe" and probe.ranked[0].channel_id == "a"
    assert [s.channel_id for s in probe.ranked[1:]] == ["b", "c"] or probe.ranked[1].channel_id == "b"
    # a single probe: the next decision does not probe again while the first is unanswered
    assert router.decide(withhold(now=probe_time + 1)).reason != "probe"
    # the probe fails: back off (interval doubles to 60 s)
    router.observe("a", Operation.WITHHOLD, "ICBC", Observation.CHANNEL_FAILURE, probe_time)
    assert router.decide(withhold(now=probe_time + 59)).reason != "probe"
    second = probe_time + 60
    assert router.decide(withhold(now=second)).reason == "probe"
    router.observe("a", Operation.WITHHOLD, "ICBC", Observation.SUCCESS, second)
    # one good probe is not enough (probe_successes = 2): the next probe may go at once
    assert router.eliminated("a", second + 1)
    third = router.decide(withhold(now=second + 1))
    assert third.reason == "probe" and third.ranked[0].channel_id == "a"
    router.observe("a", Operation.WITHHOLD, "ICBC", Observation.SUCCESS, second + 1)
    assert not router.eliminated("a", second + 2)
    back = next(s for s in router.decide(withhold(now=second + 2)).ranked if s.channel_id == "a")
    # evidence from the outage forgotten (the estimate leans on the prior and on the bank across channels)
    assert back.observations == 0.0 and back.estimate > 0.9
    status = {s.channel_id: s for s in router.snapshot(second + 2)}["a"]
    assert not status.eliminated and not status.probing
    json.dumps([s.to_dict() for s in router.snapshot(second + 2)])


def test_one_good_probe_readmits_when_configured() -> None:
    router = greedy_router(elimination_consecutive=3, probe_successes=1)
    end = feed(router, "a", "FFF")
    assert router.decide(withhold(now=end + 30)).reason == "probe"
    router.observe("a", Operation.WITHHOLD, "ICBC", Observation.PAYER_FAILURE, end + 30)  # reached the bank
    assert not router.eliminated("a", end + 31)


def test_stragglers_do_not_eliminate() -> None:
    router = greedy_router(elimination_consecutive=3)
    end = feed(router, "a", "S" * 10, start=NOW + 600)
    for i in range(5):  # answers about attempts sent ten minutes earlier
        router.observe("a", Operation.WITHHOLD, "ICBC", Observation.CHANNEL_FAILURE, NOW + i)
    assert not router.eliminated("a", end)


def test_windowed_failure_share_eliminates() -> None:
    router = greedy_router(elimination_window=10, elimination_min_volume=10, elimination_threshold=0.5)
    end = feed(router, "a", "SFSFSFSFSF")
    assert router.eliminated("a", end)


def test_unanswered_probe_is_retried_after_the_probe_timeout() -> None:
    router = greedy_router(elimination_consecutive=3, probe_interval_s=10, probe_timeout_s=50)
    end = feed(router, "a", "FFF")
    first = end + 10
    assert router.decide(withhold(now=first)).reason == "probe"
    assert router.decide(withhold(now=first + 49)).reason != "probe"
    assert router.decide(withhold(now=first + 50)).reason == "probe"


def test_late_answers_from_before_the_elimination_do_not_readmit() -> None:
    router = greedy_router(elimination_consecutive=3)
    end = feed(router, "a", "FFF")
    router.observe("a", Operation.WITHHOLD, "ICBC", Observation.SUCCESS, NOW - 100)  # sent long before
    assert router.eliminated("a", end)


def test_all_eliminated_falls_back_or_not() -> None:
    for fallback in (True, False):
        router = make_router(
            [profile("a"), profile("b")], exploration=0.0, elimination_consecutive=3, elimination_fallback=fallback
        )
        feed(router, "a", "FFF")
        end = feed(router, "b", "FFF")
        decision = router.decide(withhold(now=end))
        if fallback:
            assert decision.reason == "eliminated_fallback" and len(decision.ranked) == 2
        else:
            assert decision.ranked == [] and {r.filter for r in decision.rejected} == {"eliminated"}


def test_exploration_keeps_measuring_non_leaders() -> None:
    router = make_router([profile("a"), profile("b")], seed=3)
    at = NOW
    reasons: dict[str, int] = {}
    chosen: dict[str, int] = {}
    for _ in range(600):
        decision = router.decide(withhold(now=at))
        first = decision.ranked[0].channel_id
        chosen[first] = chosen.get(first, 0) + 1
        reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
        ok = (at * 7919) % 100 < (95 if first == "a" else 85)
        router.observe(
            first, Operation.WITHHOLD, "ICBC", Observation.SUCCESS if ok else Observation.CHANNEL_FAILURE, at
        )
        at += 1
    assert chosen["a"] > chosen["b"] > 0
    assert reasons.get("exploration", 0) > 0
    assert reasons.get("exploration", 0) < 0.15 * 600  # bounded by max_exploration_share


def test_no_exploration_when_disabled() -> None:
    router = greedy_router()
    feed(router, "a", "S" * 30)
    end = feed(router, "b", "SSF" * 10)
    reasons = {router.decide(withhold(now=end + i)).reason for i in range(200)}
    assert reasons == {"best_score"}


def test_delayed_feedback_counts_when_it_arrives() -> None:
    router = greedy_router(elimination_consecutive=100, elimination_window=40, elimination_min_volume=40)
    end = feed(router, "a", "S" * 100)
    feed(router, "b", "S" * 100)
    assert router.decide(withhold(now=end)).ranked[0].channel_id == "a"
    # twenty attempts on "a" sent a few minutes ago resolve now as failures
    for i in range(20):
        router.observe("a", Operation.WITHHOLD, "ICBC", Observation.CHANNEL_FAILURE, end - 300 + i)
    later = end + 1
    assert estimate(router, "a", later) < estimate(router, "b", later)
    assert router.decide(withhold(now=later)).ranked[0].channel_id == "b"


def test_a_sudden_drop_is_followed_within_a_few_observations() -> None:
    router = greedy_router(elimination_consecutive=100, elimination_threshold=1.0)
    end = feed(router, "a", "SSSSSSSSSSSSSSSSSSSF" * 10)  # 95 %
    end = feed(router, "a", "SFSFFSFSFF", start=end)  # now 40 %
    assert estimate(router, "a", end) < 0.8


def test_decisions_are_deterministic_for_a_seed() -> None:
    def run(seed: int, **config: object) -> list[str]:
        router = make_router(seed=seed, **config)
        out = []
        for i in range(300):
            decision = router.decide(withhold(now=NOW + i))
            first = decision.ranked[0].channel_id
            out.append(first)
            ok = (i * 31) % 10 != 0 if first == "a" else (i * 17) % 4 != 0
            router.observe(
                first, Operation.WITHHOLD, "ICBC", Observation.SUCCESS if ok else Observation.CHANNEL_FAILURE, NOW + i
            )
        return out

    assert run(11) == run(11)
    assert run(11) != run(12)  # the Thompson draws follow the seed
    # the value-of-information rule (exploration_value > 0) draws nothing
    assert run(11, exploration_value=0.05) == run(12, exploration_value=0.05)


def test_warm_start_rebuilds_the_same_state_as_live_feedback() -> None:
    history = [
        ("a", Operation.WITHHOLD, "ICBC", Observation.SUCCESS if i % 7 else Observation.CHANNEL_FAILURE, NOW + i)
        for i in range(200)
    ]
    history += [
        ("b", Operation.WITHHOLD, "ICBC", Observation.SUCCESS if i % 3 else Observation.CHANNEL_FAILURE, NOW + i)
        for i in range(200)
    ]
    live = greedy_router()
    for item in sorted(history, key=lambda h: h[4]):
        live.observe(*item)
    warm = greedy_router()
    warm.warm_start(reversed(history))  # any order in, oldest first applied
    now = NOW + 300
    assert [s.to_dict() for s in warm.snapshot(now)] == [s.to_dict() for s in live.snapshot(now)]
    assert warm.decide(withhold(now=now)).to_dict() == live.decide(withhold(now=now)).to_dict()


def test_observation_from_outcome() -> None:
    assert Observation.from_outcome(Outcome(OutcomeStatus.SUCCEEDED, "OK")) is Observation.SUCCESS
    assert Observation.from_outcome(Outcome(OutcomeStatus.FAILED, "BUSY")) is Observation.CHANNEL_FAILURE
    payer = Outcome(OutcomeStatus.FAILED, "INSUFFICIENT_FUNDS", payer_attributable=True)
    assert Observation.from_outcome(payer) is Observation.PAYER_FAILURE
    assert Observation.from_outcome(Outcome(OutcomeStatus.PENDING, "PROCESSING")) is None


def test_unknown_channels_are_ignored_by_observe_and_rejected_elsewhere() -> None:
    import pytest

    router = greedy_router()
    router.observe("gone", Operation.WITHHOLD, "ICBC", Observation.SUCCESS, NOW)
    with pytest.raises(KeyError):
        router.profile("gone")
    assert router.profile("a").channel_id == "a"


def test_late_answers_from_the_outage_do_not_bury_a_readmitted_channel() -> None:
    """After a re-admission, answers about attempts sent during the outage are not evidence any more.

    Before: the re-admitted channel's fresh record took them in (late results can come hours later),
    here 5 failures against 0 outcomes since: its estimate fell to 0.46.
    """
    router = greedy_router(elimination_consecutive=3, probe_successes=1, half_life_s=1800)
    feed(router, "b", "S" * 20)
    end = feed(router, "a", "S" * 20 + "FFF")
    probe_time = end + 30
    assert router.decide(withhold(now=probe_time)).reason == "probe"
    router.observe("a", Operation.WITHHOLD, "ICBC", Observation.SUCCESS, probe_time)
    assert not router.eliminated("a", probe_time + 1)
    for i in range(5):  # sent during the outage, answered after the re-admission
        router.observe("a", Operation.WITHHOLD, "ICBC", Observation.CHANNEL_FAILURE, end + i)
    back = next(s for s in router.decide(withhold(now=probe_time + 2)).ranked if s.channel_id == "a")
    assert back.observations == 0.0 and back.estimate > 0.9, back
