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
