"""The routing benchmark in short mode: the targets of issue #3 hold."""

from __future__ import annotations

import copy
import re

import pytest

from routing import bench


@pytest.fixture(scope="module")
def result() -> bench.BenchResult:
    return bench.run(short=True, seed=1)


def test_ours_is_within_two_percent_of_the_oracle_everywhere(result: bench.BenchResult) -> None:
    assert result.worst_ratio >= 0.98, [(s.name, round(s.ratio, 4)) for s in result.scenarios]


def test_ours_beats_every_baseline_when_things_change(result: bench.BenchResult) -> None:
    non_stationary = result.non_stationary
    assert len(non_stationary) == 5
    assert result.beats == len(non_stationary), [s.name for s in non_stationary if not s.beats_baselines]


def test_ours_moves_off_a_failing_channel_quickly(result: bench.BenchResult) -> None:
    recoveries = {s.name: s.recovery_tx for s in result.scenarios if s.recovery_tx is not None}
    assert len(recoveries) >= 3
    assert result.max_recovery_tx <= 200, recoveries


def test_oracle_is_an_upper_bound_on_success(result: bench.BenchResult) -> None:
    for s in result.scenarios:
        if s.name != "cost_tradeoff":  # there the oracle gives up success rate for lower fees
            assert all(s.stats["oracle"].success_rate >= p.success_rate - 1e-9 for p in s.stats.values()), s.name
        assert all(s.stats["oracle"].mean_value >= p.mean_value - 1e-9 for p in s.stats.values()), s.name


def test_main_prints_the_table_and_the_machine_readable_last_line(
    result: bench.BenchResult, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[bool, int]] = []

    def fake_run(short: bool, seed: int) -> bench.BenchResult:  # the same run, not a second one
        calls.append((short, seed))
        return result

    monkeypatch.setattr(bench, "run", fake_run)
    assert bench.main(["--short", "--seed", "1"]) == 0
    assert calls == [(True, 1)]
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(any(line.startswith(s.name) for line in lines) for s in result.scenarios)
    pattern = r"routing: worst_ratio=\d\.\d{4} beats_baselines=\d+/\d+ max_recovery_tx=\d+ decision_p99_us=\d+"
    assert re.fullmatch(pattern, lines[-1]), lines[-1]
    assert lines[-1] == result.last_line()


def test_main_fails_when_a_target_is_missed(
    result: bench.BenchResult, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    worse = copy.deepcopy(result)
    drop = next(s for s in worse.scenarios if s.name == "sudden_drop")
    drop.stats["window"].value = drop.stats["ours"].value + 1.0
    drop.recovery_tx = 500
    monkeypatch.setattr(bench, "run", lambda short, seed: worse)
    assert bench.main(["--short"]) == 1
    out = capsys.readouterr().out
    assert "target missed: sudden_drop: a baseline did as well as ours" in out
    assert "target missed: sudden_drop: recovery took 500 transactions" in out


def test_same_seed_same_result() -> None:
    scenario = bench.SCENARIOS[1]
    assert bench.simulate(scenario, 800, 5) == bench.simulate(scenario, 800, 5)
