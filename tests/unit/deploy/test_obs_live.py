"""The gateway.obs helpers against a real Prometheus scraping synthetic traffic on every paygate metric.

A child process (``python -m devstack.synthetic``) serves gateway.metrics.REGISTRY on 127.0.0.1 with
every label set the dashboard selects; Prometheus scrapes it every second with our rules loaded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from devstack.processes import free_port
from devstack.prometheus import PrometheusError, PrometheusProcess, start_prometheus
from gateway.obs.dashboard import DashboardQuery, check_queries, dashboard_queries, main
from tests.unit.deploy.conftest import DASHBOARD, ROOT, RULES


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusProcess]:
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "devstack.synthetic", "--port", str(port), "--duration", "90", "--seed", "7"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        with start_prometheus([f"127.0.0.1:{port}"], [RULES]) as server:
            server.wait_for_scrapes(samples=3, timeout=30)
            _wait_for(server, "paygate:channel_success_ratio:rate5m", timeout=10)
            yield server
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)


def _wait_for(server: PrometheusProcess, expr: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.query(expr):
        if time.monotonic() > deadline:
            pytest.fail(f"{expr} returned nothing within {timeout}s")
        time.sleep(0.2)


def test_every_dashboard_query_returns_data(prometheus: PrometheusProcess) -> None:
    queries = dashboard_queries(DASHBOARD)
    results = check_queries(prometheus.url, queries)
    assert len(results) == len(queries) > 0
    failed = [(r.panel, r.expr, r.error) for r in results if not r.ok]
    assert failed == []
    assert all(r.series > 0 and r.error is None for r in results)


def test_recording_rule_gives_a_ratio_per_channel(prometheus: PrometheusProcess) -> None:
    by_channel: dict[str, list[float]] = {}
    for row in prometheus.query("paygate:channel_success_ratio:rate5m"):
        by_channel.setdefault(row["metric"]["channel"], []).append(float(row["value"][1]))
        assert set(row["metric"]) == {"__name__", "channel", "operation"}
    assert set(by_channel) == {"sandbox_a", "sandbox_b"}
    for ratios in by_channel.values():
        assert all(0.0 <= r <= 1.0 for r in ratios), ratios
    # the synthetic sandbox_b fails about a third of its definite answers, sandbox_a about 3%
    assert min(by_channel["sandbox_a"]) > max(by_channel["sandbox_b"])


def test_a_broken_or_empty_query_is_reported(prometheus: PrometheusProcess) -> None:
    results = check_queries(
        prometheus.url,
        [
            DashboardQuery("broken", "sum by (channel (paygate_pending_attempts)"),
            DashboardQuery("empty", 'paygate_channel_state{channel="no_such_channel"}'),
        ],
    )
    assert [r.ok for r in results] == [False, False]
    assert "parse error" in (results[0].error or "")
    assert results[1].error == "no data"
    with pytest.raises(PrometheusError, match="parse error"):
        prometheus.query("rate(")


def test_check_dashboard_command(prometheus: PrometheusProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--prometheus", prometheus.url, "--dashboard", str(DASHBOARD)]) == 0
    printed = capsys.readouterr().out
    assert "FAIL" not in printed
    count = len(dashboard_queries(DASHBOARD))
    assert f"{count}/{count} queries returned data" in printed


def test_prometheus_refuses_a_broken_rule_file(tmp_path) -> None:
    bad = tmp_path / "bad.rules.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - record: x:y\n        expr: rate(\n")
    with pytest.raises(PrometheusError, match="exited"):
        start_prometheus(["127.0.0.1:9"], [bad], ready_timeout=15)
