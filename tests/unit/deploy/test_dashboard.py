"""deploy/grafana: the dashboard is generated, every panel queries, every query is valid PromQL on real metrics."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from gateway.metrics import REGISTRY
from gateway.obs.dashboard import dashboard_queries, referenced_metrics, success_table
from tests.unit.deploy.conftest import DASHBOARD, DEPLOY, RULES, Promtool, output


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exported_series_names() -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def _recording_rules() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_committed_json_matches_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboard", DEPLOY / "grafana" / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.render() == DASHBOARD.read_text(), "run: .venv/bin/python deploy/grafana/build_dashboard.py"


def test_every_panel_has_a_query_a_unit_and_the_datasource_variable() -> None:
    panels = _panels()
    assert len(panels) >= 25
    for panel in panels:
        title = panel["title"]
        assert panel["targets"], title
        assert all(t.get("expr", "").strip() for t in panel["targets"]), title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert panel["datasource"]["uid"] == "${datasource}", title
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), title
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["channel"]["includeAll"] and variables["channel"]["allValue"] == ".*"


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (area & cells), f"{panel['title']} overlaps another panel"
        cells |= area


def test_the_dashboard_covers_what_on_call_watches() -> None:
    exprs = " ".join(q.expr for q in dashboard_queries(DASHBOARD))
    for needed in (
        "paygate:channel_success_ratio:rate5m",
        "histogram_quantile(0.99",
        "paygate_routing_decisions_total",
        "paygate_failovers_total",
        "paygate_pending_attempts",
        "paygate_oldest_pending_attempt_age_seconds",
        "paygate_polls_total",
        "paygate_needs_review_flows",
        "paygate_callbacks_total",
        "paygate_discrepancies_total",
        "paygate_outbox_backlog",
        "paygate_outbox_oldest_unpublished_age_seconds",
        "paygate_outbox_published_total",
        "paygate_outbox_publish_errors_total",
        "paygate_position_available_minor_units",
        "paygate_position_reserved_minor_units",
        "paygate_grpc_server_requests_total",
        "paygate_grpc_server_request_duration_seconds_bucket",
    ):
        assert needed in exprs, needed


def test_variables_are_expanded() -> None:
    queries = dashboard_queries(DASHBOARD, rate_interval="2m")
    assert queries
    for query in queries:
        assert "$" not in query.expr and "[[" not in query.expr, query
    assert any("[2m]" in q.expr for q in queries)
    assert any('channel=~".*"' in q.expr for q in queries)


def test_every_query_is_valid_promql(promtool: Promtool, tmp_path: Path) -> None:
    # promtool has no "check query"; a recording rule is checked by the same parser.
    queries = dashboard_queries(DASHBOARD)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q.expr} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, output(result)
    assert f"{len(queries)} rules found" in result.stdout


def test_the_promql_check_can_fail(promtool: Promtool, tmp_path: Path) -> None:
    path = tmp_path / "bad.rules.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum by (channel (rate(x[1m]))"}]}]}
        )
    )
    assert promtool("check", "rules", path).returncode != 0


def test_every_metric_referenced_exists() -> None:
    known = _exported_series_names() | _recording_rules()
    for query in dashboard_queries(DASHBOARD):
        names = referenced_metrics(query.expr)
        assert names, query
        assert names <= known, f"{query.panel_title}: unknown {sorted(names - known)}"


def test_rules_reference_only_exported_metrics() -> None:
    known = _exported_series_names() | _recording_rules() | {"up"}
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        names = referenced_metrics(rule["expr"])
        assert names and names <= known, f"{rule.get('record') or rule.get('alert')}: {sorted(names - known)}"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (channel) (rate(paygate_callbacks_total{result="bad_signature"}[5m]))', {"paygate_callbacks_total"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(a_bucket[1m]))) / ignoring (x) group_left () b",
            {"a_bucket", "b"},
        ),
        ("paygate:x:rate5m > 0.95 and on (channel) c offset 5m", {"paygate:x:rate5m", "c"}),
        ('max(g{s=~"a|b"}) == 1e3', {"g"}),
    ],
)
def test_referenced_metrics(expr: str, expected: set[str]) -> None:
    assert referenced_metrics(expr) == expected


def test_no_metric_name_is_missed_by_the_parser() -> None:
    assert referenced_metrics("rate(paygate_unknown_total[1m])") == {"paygate_unknown_total"}


METRICS_TEXT = """\
# HELP paygate_channel_requests_total Calls to channels by outcome.
# TYPE paygate_channel_requests_total counter
paygate_channel_requests_total{channel="bank_a",operation="withhold",outcome="succeeded"} 9.0
paygate_channel_requests_total{channel="bank_a",operation="withhold",outcome="payer_failure"} 100.0
paygate_channel_requests_total{channel="bank_a",operation="withhold",outcome="channel_failure"} 1.0
paygate_channel_requests_total{channel="bank_a",operation="withhold",outcome="pending"} 50.0
paygate_channel_requests_total{channel="bank_b",operation="payout",outcome="payer_failure"} 4.0
paygate_channel_requests_total{channel="bank_c",operation="withhold",outcome="succeeded"} 3.0
paygate_channel_requests_total{channel="bank_c",operation="withhold",outcome="error"} 1.0
# HELP paygate_pending_attempts Attempts without a definite outcome.
# TYPE paygate_pending_attempts gauge
paygate_pending_attempts 7.0
"""


def test_success_table_excludes_payer_failures_and_pending() -> None:
    table = success_table(METRICS_TEXT)
    lines = table.splitlines()
    assert lines[0].split() == [
        "channel",
        "operation",
        "succeeded",
        "payer_failure",
        "channel_failure",
        "pending",
        "error",
        "success",
    ]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[2:]}
    assert rows[("bank_a", "withhold")] == ["bank_a", "withhold", "9", "100", "1", "50", "0", "90.0%"]
    assert rows[("bank_b", "payout")][-1] == "-"  # payer failures only: no channel-attributable outcome
    assert rows[("bank_c", "withhold")][-1] == "75.0%"
    assert len(rows) == 3


def test_success_table_without_channel_traffic() -> None:
    assert "no channel requests" in success_table(
        "# TYPE paygate_pending_attempts gauge\npaygate_pending_attempts 0.0\n"
    )
