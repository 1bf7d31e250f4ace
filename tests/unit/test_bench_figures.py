"""``make bench``'s last line: every ratio from the stage it names, in the format the issue asks for."""

from __future__ import annotations

import re

import pytest

from bench.stages import Paired, Stage, figures, last_line, verdicts


def _stage(name: str, completed: int, *, latencies: list[float] | None = None, **cpu_s: float) -> Stage:
    return Stage(name, 64, completed=completed, seconds=10.0, cpu_s=dict(cpu_s), latencies_ms=latencies or [])


def _stages() -> dict[str, Stage]:
    zero = _stage("paygate-zero-latency", 1000, gateway=3.0, mariadb=1.2, sandbox=0.4)
    zero.commits = {"per_request": 0.8}
    c1 = _stage("paygate-ch120-c1", 50, gateway=1.0)
    c1.added_ms = [float(v) for v in range(1, 101)]  # p50 50, p99 99
    stages = [
        _stage("echo", 20_000, echo=4.0),  # 0.2 ms per call, 2000/s
        _stage("echo-c1", 500, latencies=[1.0, 2.0, 3.0], echo=0.5),
        _stage("http", 10_000, httpfloor=3.0, sandbox=2.0),  # 0.3 ms
        _stage("db", 2_000, dbfloor=1.0, mariadb=2.0),  # 0.5 ms client, 1.0 ms MariaDB per pair
        _stage("db-c1", 100, latencies=[4.0, 5.0, 6.0], dbfloor=0.1),
        zero,
        c1,
        _stage("paygate-ch120-c8", 200, gateway=0.9),  # 4.5 ms
    ]
    return {s.name: s for s in stages}


def test_ratios_come_from_the_stages_they_name() -> None:
    f = figures(_stages(), Paired((0.95, 0.90, 1.02)))
    assert f.floor_cpu_ms == pytest.approx(0.2 + 0.3 + 0.5)
    assert f.gw_cpu_ms == pytest.approx(3.0)
    assert f.cpu_vs_floor == pytest.approx(3.0)
    assert f.db_cpu_vs_floor == pytest.approx(1.2)  # 1.2 ms per withhold / 1.0 ms per floor pair
    assert f.low_load_cpu_ratio == pytest.approx(1.5)  # 4.5 / 3.0
    assert f.floor_c1_ms == pytest.approx(2.0 + 5.0)  # echo p50 + db p50 at concurrency 1
    assert (f.added_p50_c1_ms, f.added_p99_c1_ms) == (50.0, 99.0)
    assert f.ratio_to_echo == pytest.approx(100 / 2000)
    assert f.big_table is not None and f.big_table.median == pytest.approx(0.95)


def test_the_last_line_has_every_field_in_order() -> None:
    line = last_line(figures(_stages(), Paired((0.95, 0.90, 1.02))))
    assert line == (
        "bench: cpu_vs_floor=3.00 db_cpu_vs_floor=1.20 low_load_cpu_ratio=1.50 gw_cpu_ms=3.00 floor_cpu_ms=1.00"
        " added_p50_c1_ms=50.0 floor_c1_ms=7.0 tps=100 echo_tps=2000 ratio_to_echo=0.050"
        " commits_per_request=0.80 big_table_ratio=0.950"
    )


def test_without_the_big_table_stage_the_ratio_says_so() -> None:
    line = last_line(figures(_stages(), None))
    assert re.search(r" big_table_ratio=na$", line)
    assert not any("big_table" in v for v in verdicts(figures(_stages(), None)))


def test_verdicts_name_what_is_missed() -> None:
    lines = verdicts(figures(_stages(), Paired((0.5,))))
    by_name = {line.split()[0]: line for line in lines}
    assert by_name["cpu_vs_floor"].endswith("MISSED")
    assert by_name["commits_per_request"].endswith("met")
    assert by_name["added_p50_c1_ms"].endswith("MISSED") and "<= 8.0 (floor + 1)" in by_name["added_p50_c1_ms"]
    assert by_name["big_table_ratio"].endswith("MISSED")


def test_paired_median_and_spread() -> None:
    paired = Paired((1.2, 0.6, 0.9, 1.0))
    assert paired.median == pytest.approx(0.95)
    assert (paired.low, paired.high) == (0.6, 1.2)
    assert "median 0.950 of 4 pairs (spread 0.600-1.200" in paired.describe()
