from __future__ import annotations

import pytest

from channels.config import ConfigError
from gateway.outbox.config import RelayConfig


def test_defaults_are_production_safe() -> None:
    config = RelayConfig.from_mapping("kafka", {"bootstrap_servers": "kafka-1:9092,kafka-2:9092"})
    assert config.acks == "all" and config.enable_idempotence is True
    assert config.encoding == "protobuf" and config.default_topic == "paygate.flow-results"
    assert config.create_topics is False


def test_full_table_is_read() -> None:
    config = RelayConfig.from_mapping(
        "kafka",
        {
            "bootstrap_servers": "127.0.0.1:9092",
            "default_topic": "results",
            "caller_topics": {"loan-servicing": "loans.results"},
            "event_topics": {"DISCREPANCY": "ops.alerts"},
            "encoding": "json",
            "enable_idempotence": False,
            "acks": 1,
            "batch_size": 50,
            "poll_interval_s": 1,
            "retention_s": 3600,
            "sasl_password": "s3cret",
        },
    )
    assert config.encoding == "json" and config.acks == 1 and config.batch_size == 50
    assert config.poll_interval_s == 1.0 and isinstance(config.poll_interval_s, float)
    assert config.topics() == {"results", "loans.results", "ops.alerts"}
    assert "s3cret" not in repr(config)


def test_topic_choice_event_type_then_caller_then_default() -> None:
    config = RelayConfig(
        "b:9092",
        default_topic="results",
        caller_topics={"loans": "loans.results"},
        event_topics={"DISCREPANCY": "ops"},
    )
    assert config.topic_for("loans", "DISCREPANCY") == "ops"
    assert config.topic_for("loans", "FLOW_RESULT") == "loans.results"
    assert config.topic_for("collections", "FLOW_RESULT") == "results"


def test_topic_maps_cannot_be_changed_under_a_running_relay() -> None:
    topics = {"loans": "a"}
    config = RelayConfig("b:9092", caller_topics=topics)
    topics["loans"] = "b"
    assert config.topic_for("loans", "FLOW_RESULT") == "a"
    with pytest.raises(TypeError):
        config.caller_topics["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({}, "kafka.bootstrap_servers"),
        ({"bootstrap_servers": ""}, "kafka.bootstrap_servers"),
        ({"bootstrap_servers": "b", "bacth_size": 10}, "kafka.bacth_size"),
        ({"bootstrap_servers": "b", "batch_size": 0}, "kafka.batch_size"),
        ({"bootstrap_servers": "b", "batch_size": True}, "kafka.batch_size"),
        ({"bootstrap_servers": "b", "batch_size": "10"}, "kafka.batch_size"),
        ({"bootstrap_servers": "b", "poll_interval_s": -1}, "kafka.poll_interval_s"),
        ({"bootstrap_servers": "b", "collect_ms": -1}, "kafka.collect_ms"),
        ({"bootstrap_servers": "b", "collect_ms": 60_000}, "kafka.collect_ms"),
        ({"bootstrap_servers": "b", "retention_s": float("inf")}, "kafka.retention_s"),
        ({"bootstrap_servers": "b", "encoding": "avro"}, "kafka.encoding"),
        ({"bootstrap_servers": "b", "acks": True}, "kafka.acks"),
        ({"bootstrap_servers": "b", "acks": 1}, "kafka.acks"),  # idempotence needs acks=all
        ({"bootstrap_servers": "b", "enable_idempotence": "no"}, "kafka.enable_idempotence"),
        ({"bootstrap_servers": "b", "default_topic": "bad topic"}, "kafka.default_topic"),
        ({"bootstrap_servers": "b", "caller_topics": {"loans": ".."}}, "kafka.caller_topics.loans"),
        ({"bootstrap_servers": "b", "caller_topics": "loans"}, "kafka.caller_topics"),
        ({"bootstrap_servers": "b", "event_topics": {"FLOW_DONE": "x"}}, "kafka.event_topics.FLOW_DONE"),
        ({"bootstrap_servers": "b", "backoff_initial_s": 5, "backoff_max_s": 1}, "kafka.backoff_max_s"),
        ({"bootstrap_servers": "b", "security_protocol": "SASL_SSL"}, "kafka.sasl_mechanism"),
    ],
)
def test_bad_settings_name_their_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        RelayConfig.from_mapping("kafka", raw)
    assert err.value.key == key
    assert str(err.value).startswith(key)
    assert isinstance(err.value, ValueError)
