"""deploy/prometheus: config and rules are valid, the rule unit tests pass, every alert is documented and tested."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from tests.unit.deploy.conftest import DEPLOY, ROOT, RULE_TESTS, RULES, Promtool, output

SEVERITIES = {"critical", "warning"}


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def test_promtool_check_rules(promtool: Promtool) -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


def test_promtool_check_config(promtool: Promtool) -> None:
    result = promtool("check", "config", DEPLOY / "prometheus" / "prometheus.yml")
    assert result.returncode == 0, output(result)
    # the config's rule_files glob must actually find our rules, not match nothing
    assert f"{len(_rules())} rules found" in result.stdout, result.stdout


def test_promtool_rule_unit_tests(promtool: Promtool) -> None:
    assert len(RULE_TESTS) >= 2
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, output(result)
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_rule_tests_catch_payer_failures_counted_against_the_channel(promtool: Promtool, tmp_path: Path) -> None:
    """The rule tests can fail: with payer_failure in the denominator they must."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = RULES.read_text()
    broken = text.replace(
        'outcome=~"succeeded|channel_failure|error"}', 'outcome=~"succeeded|channel_failure|error|payer_failure"}'
    )
    assert broken != text
    (tmp_path / "rules" / RULES.name).write_text(broken)
    for test_file in RULE_TESTS:
        shutil.copy(test_file, tmp_path / "tests" / test_file.name)
    result = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yml")))
    assert result.returncode != 0, output(result)
    assert "FAILED" in output(result)


def test_expected_recording_rules_exist() -> None:
    records = {rule["record"] for rule in _rules() if "record" in rule}
    assert {
        "paygate:channel_success_ratio:rate5m",
        "paygate:channel_requests:rate5m",
        "paygate:channel_decided_requests:rate5m",
        "paygate:channel_request_duration_seconds:p99_5m",
        "paygate:grpc_server_error_ratio:rate5m",
    } <= records
    for name in records:
        assert re.fullmatch(r"paygate:[a-z0-9_]+:[a-z0-9_]+", name), f"{name}: level:metric:operations"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    alerts = _alerts()
    assert len(alerts) >= 9
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: annotation {key} missing"


def test_every_alert_has_a_runbook_section_in_the_docs() -> None:
    docs = (ROOT / "docs" / "OBSERVABILITY.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in docs.splitlines() if line.startswith("#")}
    for alert in _alerts():
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/OBSERVABILITY.md", url
        assert anchor == alert["alert"].lower(), url
        assert anchor in headings, f"docs/OBSERVABILITY.md has no section '{alert['alert']}'"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"
