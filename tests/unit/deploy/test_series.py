"""gateway.obs.series: alert-relevant series exist at zero before the first event."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import CALLBACKS, REGISTRY
from gateway.obs.dashboard import success_table
from gateway.obs.series import declare_channel_series


def _samples(channel: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(REGISTRY).decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "channel"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("channel") == channel and not s.name.endswith("_created")
    }


def test_declared_series_start_at_zero_and_keep_their_values() -> None:
    channel = "series-test-bank"
    assert _samples(channel) == {}
    CALLBACKS.labels(channel=channel, result="verified").inc(3)
    declare_channel_series([channel], operations=["withhold"])
    declare_channel_series([channel], operations=["withhold"])  # idempotent
    samples = _samples(channel)
    assert samples[("paygate_callbacks_total", (("result", "verified"),))] == 3
    assert samples[("paygate_callbacks_total", (("result", "bad_signature"),))] == 0
    assert samples[("paygate_discrepancies_total", (("source", "callback"),))] == 0
    assert samples[("paygate_channel_unmapped_codes_total", ())] == 0
    assert samples[("paygate_poll_exhausted_total", ())] == 0
    outcomes = {dict(labels)["outcome"] for name, labels in samples if name == "paygate_channel_requests_total"}
    assert outcomes == {"succeeded", "payer_failure", "channel_failure", "pending", "error"}
    assert not any(dict(labels).get("operation") == "payout" for _, labels in samples)
    # a declared channel shows in the success table with no ratio yet
    row = next(line for line in success_table(generate_latest(REGISTRY).decode()).splitlines() if channel in line)
    assert row.split()[-1] == "-"


def test_process_and_gc_metrics_are_in_our_registry() -> None:
    names = {family.name for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())}
    assert {"process_resident_memory_bytes", "process_open_fds", "python_gc_objects_collected", "python_info"} <= names


def test_declare_series_covers_every_grpc_method_and_keeps_values() -> None:
    from gateway.metrics import GRPC_REQUESTS
    from gateway.obs.series import declare_series, grpc_methods

    assert {"Withhold", "GetFlow", "ListAgreements", "SetChannelState", "ResolveFlow"} <= set(grpc_methods())
    GRPC_REQUESTS.labels(method="RequeryFlow", code="OK").inc(2)
    declare_series(["series-test-bank-2"], topics=["paygate.flow-results"])
    declare_series(["series-test-bank-2"], topics=["paygate.flow-results"])
    value = REGISTRY.get_sample_value
    assert value("paygate_grpc_server_requests_total", {"method": "RequeryFlow", "code": "OK"}) >= 2
    assert value("paygate_grpc_server_requests_total", {"method": "Withhold", "code": "DEADLINE_EXCEEDED"}) is not None
    assert value("paygate_outbox_published_total", {"topic": "paygate.flow-results"}) is not None
    assert value("paygate_outbox_publish_errors_total", {"error": "KafkaConnectionError"}) is not None
