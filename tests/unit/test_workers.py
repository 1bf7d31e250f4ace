"""gateway/workers.py without processes: the merged /metrics, each worker's configuration, the port rule."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from channels.config import ConfigError
from gateway.config import Config
from gateway.workers import WorkerRole, check, exposition, role, worker_config


def _worker_text(flows: int, backlog: float, latencies: list[float]) -> str:
    registry = CollectorRegistry()
    counter = Counter("paygate_flows_created", "flows", ["kind"], registry=registry)
    counter.labels(kind="WITHHOLD").inc(flows)
    Gauge("paygate_outbox_backlog", "backlog", registry=registry).set(backlog)
    hist = Histogram("paygate_x_seconds", "x", buckets=(0.1, 1.0), registry=registry)
    for v in latencies:
        hist.observe(v)
    return generate_latest(registry).decode()


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_counters_and_histograms_add_up_gauges_take_the_largest() -> None:
    body = exposition([_worker_text(3, 5, [0.05, 0.5]), _worker_text(4, 2, [2.0])], workers=2)
    got = _samples(body)
    assert got[("paygate_flows_created_total", (("kind", "WITHHOLD"),))] == 7
    assert got[("paygate_outbox_backlog", ())] == 5
    assert got[("paygate_x_seconds_count", ())] == 3
    assert got[("paygate_x_seconds_bucket", (("le", "0.1"),))] == 1
    assert got[("paygate_x_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("paygate_x_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("paygate_x_seconds_sum", ())] == pytest.approx(2.55)
    assert got[("paygate_workers", ())] == 2 and got[("paygate_workers_scraped", ())] == 2
    assert b"# TYPE paygate_flows_created_total counter" in body


def test_a_worker_that_did_not_answer_is_counted_as_missing() -> None:
    got = _samples(exposition([_worker_text(3, 1, [])], workers=2))
    assert got[("paygate_workers_scraped", ())] == 1
    assert got[("paygate_flows_created_total", (("kind", "WITHHOLD"),))] == 3


def _config(**server: object) -> Config:
    base = Config()
    return dataclasses.replace(base, server=dataclasses.replace(base.server, **server))  # type: ignore[arg-type]


def test_each_worker_is_a_replica_of_its_own_with_a_private_metrics_port() -> None:
    config = _config(workers=2, replica_id="gw-a")
    w0, w1 = (worker_config(config, WorkerRole(i, 9000 + i, 4242)) for i in (0, 1))
    assert (w0.server.replica_id, w1.server.replica_id) == ("gw-a-w0", "gw-a-w1")
    assert (w0.server.metrics_port, w1.server.metrics_port) == (9000, 9001)
    assert w0.server.grpc_port == w1.server.grpc_port == config.server.grpc_port
    unnamed = worker_config(_config(workers=2), WorkerRole(1, 9001, 4242))
    assert unnamed.server.replica_id.endswith("-4242-w1") and len(unnamed.server.replica_id) <= 64
    assert worker_config(config, None) is config or role() is not None


def test_the_console_runs_in_worker_zero_only() -> None:
    base = _config(workers=2)
    config = dataclasses.replace(base, console=dataclasses.replace(base.console, enabled=True))
    assert worker_config(config, WorkerRole(0, 1, 1)).console.enabled
    assert not worker_config(config, WorkerRole(1, 2, 1)).console.enabled


def test_shared_ports_must_be_fixed() -> None:
    check(_config(workers=1, grpc_port=0))
    with pytest.raises(ConfigError) as err:
        check(_config(workers=2, grpc_port=0))
    assert err.value.key == "server.grpc_port"


def test_role_reads_the_supervisors_variable() -> None:
    assert role({}) is None
    assert role({"PAYGATE_WORKER": "1:9001:77"}) == WorkerRole(1, 9001, 77)
