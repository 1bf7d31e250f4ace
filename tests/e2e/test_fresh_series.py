"""A freshly started gateway process already exports every counter that a rule or a dashboard panel reads.

Without the series, a panel shows "No data" instead of 0 and the first event
after a restart never counts as an increase (its alert stays silent).
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour
from devstack.kafka import KafkaBroker
from gateway.obs.dashboard import DEFAULT_DASHBOARD, dashboard_queries, referenced_metrics
from gateway.store.db import DatabaseConfig, migrate
from tests.support.processes import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def referenced() -> dict[str, set[str]]:
    """metric name -> where it is read (alert/record names, panel titles); recording rules left out."""
    exprs: list[tuple[str, str]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs += [(rule.get("alert") or rule["record"], rule["expr"]) for rule in group["rules"]]
    exprs += [(f"panel {q.panel_title}", q.expr) for q in dashboard_queries(DEFAULT_DASHBOARD)]
    out: dict[str, set[str]] = {}
    for where, expr in exprs:
        for name in referenced_metrics(str(expr)):
            if ":" not in name and name != "up":  # recording rules are checked through their own exprs
                out.setdefault(name, set()).add(where)
    return out


async def test_every_counter_read_by_rules_and_panels_has_a_series_at_start(
    db_config: DatabaseConfig, tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    await migrate(db_config)
    sim = SandboxSimulator(Behaviour(), name="bank-a", secret="bank-a-secret")
    await sim.start()
    gw = GatewayProcess(
        tmp_path,
        db_config,
        [{"id": "bank-a", "adapter": "sandbox", "settings": sim.adapter_settings()}],
        kafka={"bootstrap_servers": kafka_broker.bootstrap, "enable_idempotence": False},
    )
    try:
        await gw.start_async()
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    finally:
        await gw.stop_async()
        await sim.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    wanted = referenced()
    assert "paygate_outbox_publish_errors_total" in wanted and "paygate_grpc_server_requests_total" in wanted
    unknown = sorted(name for name in wanted if _family(name) not in families)
    assert unknown == [], f"read by rules or panels but not exported: {unknown}"
    empty = sorted(
        f"{name} (read by {', '.join(sorted(wanted[name]))})"
        for name in wanted
        if families[_family(name)].type == "counter" and not families[_family(name)].samples
    )
    assert empty == [], "counters without a series on a fresh /metrics:\n" + "\n".join(empty)
    # and the process metrics the memory alerts read
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value > 0
