"""The benchmark's CPU-budget line: what 0.4 x the echo floor leaves per withhold, and who spent it."""

from __future__ import annotations

from bench.run import Stage, budget_line


def _stage(completed: int, **cpu_s: float) -> Stage:
    return Stage("s", 64, completed=completed, seconds=10.0, cpu_s=dict(cpu_s))


def test_budget_is_the_machine_divided_by_the_target_rate() -> None:
    echo = _stage(50_000)  # 5000/s -> target 2000/s -> 2 cores give 1.00 ms per withhold
    full = _stage(1000, gateway=2.0, mariadb=1.5, sandbox=0.5, loadgen0=0.25, loadgen1=0.25)
    line = budget_line(echo, full, cores=2)
    assert "(2000/s on 2 cores, nothing else running): 1.00 ms;" in line
    assert "load generators): 2.50 ms (over budget before the gateway spends anything); gateway: 2.00 ms" in line


def test_what_is_left_for_the_gateway_when_the_rest_fits() -> None:
    echo = _stage(10_000)  # 1000/s -> target 400/s -> 5.00 ms
    full = _stage(1000, gateway=3.0, mariadb=1.0, loadgen0=0.5)
    line = budget_line(echo, full, cores=2)
    assert ": 5.00 ms;" in line
    assert "1.50 ms (leaves the gateway 3.50 ms); gateway: 3.00 ms" in line
