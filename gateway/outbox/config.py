"""Relay configuration: where events go, how they are encoded, how hard the relay pushes.

Loaded once in the composition root from the ``[kafka]`` table with
:meth:`RelayConfig.from_mapping`; every key is optional except
``bootstrap_servers``. A bad value raises :class:`OutboxConfigError` naming the
key (``kafka.batch_size: must be an integer >= 1``).

Topic choice for one event, first match wins:

1. ``event_topics[event_type]`` (e.g. ``DISCREPANCY = "paygate.ops-alerts"``):
   operational events go to the people who act on them, whoever the caller is;
2. ``caller_topics[caller]`` (e.g. ``loan-servicing = "loans.paygate-results"``);
3. ``default_topic``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, get_args

Encoding = Literal["protobuf", "json"]
Acks = Literal["all", 0, 1]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]

# The event types the schema defines (paygate.v1.EventType without UNSPECIFIED).
EVENT_TYPES = frozenset({"FLOW_RESULT", "FLOW_NEEDS_REVIEW", "DISCREPANCY", "INSTALMENT_OUTCOME"})


def _no_topics() -> Mapping[str, str]:
    return MappingProxyType({})


_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class OutboxConfigError(ValueError):
    """A relay setting is missing or wrong; ``key`` is its full dotted name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class RelayConfig:
    """Typed relay settings. Durations are seconds (``_s``) or milliseconds (``_ms``) as named."""

    bootstrap_servers: str
    default_topic: str = "paygate.flow-results"
    caller_topics: Mapping[str, str] = field(default_factory=_no_topics)
    event_topics: Mapping[str, str] = field(default_factory=_no_topics)
    # "protobuf" (application/x-protobuf) or "json" (proto3 JSON, application/json).
    encoding: Encoding = "protobuf"
    acks: Acks = "all"
    # Off only for brokers without InitProducerId (tansu in tests); needs acks="all".
    enable_idempotence: bool = True
    client_id: str = "paygate-relay"
    # Per produce request; a batch that is not acknowledged in time is retried later.
    request_timeout_ms: int = 10_000
    linger_ms: int = 0
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    # Rows claimed and produced per round; also the number of row locks held at once.
    batch_size: int = 200
    # Idle wake-up interval; notify() wakes the relay earlier.
    poll_interval_s: float = 0.2
    # After a notify(), wait this long before claiming, so the results of concurrent requests
    # share one round (one claim, one produce, one commit) instead of one round each.
    collect_ms: int = 5
    # Backoff between failed rounds (exponential with jitter) while the broker is unreachable.
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    # A row that failed this many times with a non-retriable error is parked (left
    # unpublished, counted in the backlog, skipped by claims) for an operator.
    max_attempts: int = 10
    # Published rows older than this are deleted, cleanup_batch_size rows per DELETE.
    retention_s: float = 7 * 86400
    cleanup_interval_s: float = 300.0
    cleanup_batch_size: int = 1000
    # How often the backlog / oldest-age gauges are refreshed.
    metrics_interval_s: float = 5.0
    # Create the configured topics (idempotently) whenever the producer (re)connects.
    # Off in production, where topics are provisioned with their own settings.
    create_topics: bool = False
    topic_partitions: int = 6
    topic_replication_factor: int = 3
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # secret
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        # Freeze the maps so a shared config cannot be changed under a running relay.
        object.__setattr__(self, "caller_topics", MappingProxyType(dict(self.caller_topics)))
        object.__setattr__(self, "event_topics", MappingProxyType(dict(self.event_topics)))

    def topic_for(self, caller: str, event_type: str) -> str:
        """The topic an event of ``event_type`` for ``caller`` is published to."""
        return self.event_topics.get(event_type) or self.caller_topics.get(caller) or self.default_topic

    def topics(self) -> frozenset[str]:
        """Every topic this configuration can publish to."""
        return frozenset({self.default_topic, *self.caller_topics.values(), *self.event_topics.values()})

    @classmethod
    def from_mapping(cls, key: str, raw: Mapping[str, Any]) -> RelayConfig:
        """Validate a config table (TOML types) and build the config.

        ``key`` is the table's dotted name, used in error messages. Unknown keys
        are errors: a typo must not silently fall back to a default.
        """
        if not isinstance(raw, Mapping):
            raise OutboxConfigError(key, "must be a table")
        known = {f.name for f in fields(cls)}
        for name in raw:
            if name not in known:
                raise OutboxConfigError(f"{key}.{name}", f"unknown setting (known: {', '.join(sorted(known))})")
        r = _Reader(key, raw)
        values: dict[str, Any] = {
            "bootstrap_servers": r.string("bootstrap_servers", required=True),
            "encoding": r.choice("encoding", get_args(Encoding)),
            "acks": r.choice("acks", get_args(Acks)),
            "enable_idempotence": r.boolean("enable_idempotence"),
            "client_id": r.string("client_id"),
            "request_timeout_ms": r.integer("request_timeout_ms", minimum=100),
            "linger_ms": r.integer("linger_ms", minimum=0),
            "compression_type": r.choice("compression_type", ("gzip", "snappy", "lz4", "zstd")),
            "batch_size": r.integer("batch_size", minimum=1, maximum=10_000),
            "poll_interval_s": r.seconds("poll_interval_s"),
            "collect_ms": r.integer("collect_ms", minimum=0, maximum=1000),
            "backoff_initial_s": r.seconds("backoff_initial_s"),
            "backoff_max_s": r.seconds("backoff_max_s"),
            "max_attempts": r.integer("max_attempts", minimum=1),
            "retention_s": r.seconds("retention_s"),
            "cleanup_interval_s": r.seconds("cleanup_interval_s"),
            "cleanup_batch_size": r.integer("cleanup_batch_size", minimum=1, maximum=100_000),
            "metrics_interval_s": r.seconds("metrics_interval_s"),
            "create_topics": r.boolean("create_topics"),
            "topic_partitions": r.integer("topic_partitions", minimum=1),
            "topic_replication_factor": r.integer("topic_replication_factor", minimum=1),
            "security_protocol": r.choice("security_protocol", get_args(SecurityProtocol)),
            "sasl_mechanism": r.choice("sasl_mechanism", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
            "sasl_username": r.string("sasl_username"),
            "sasl_password": r.string("sasl_password"),
            "ssl_cafile": r.string("ssl_cafile"),
            "default_topic": r.topic("default_topic"),
            "caller_topics": r.topic_map("caller_topics"),
            "event_topics": r.topic_map("event_topics", allowed_keys=EVENT_TYPES),
        }
        config = cls(**{name: value for name, value in values.items() if value is not None})
        config._check(key)
        return config

    def _check(self, key: str) -> None:
        """Rules between settings."""
        if self.enable_idempotence and self.acks != "all":
            raise OutboxConfigError(f"{key}.acks", 'must be "all" when enable_idempotence is true')
        if self.backoff_max_s < self.backoff_initial_s:
            raise OutboxConfigError(f"{key}.backoff_max_s", "must be >= backoff_initial_s")
        if self.security_protocol.startswith("SASL") and not (self.sasl_mechanism and self.sasl_username):
            raise OutboxConfigError(
                f"{key}.sasl_mechanism", f"{self.security_protocol} needs sasl_mechanism and sasl_username"
            )


class _Reader:
    """Typed access to one raw table; each getter returns None when the key is absent."""

    def __init__(self, key: str, raw: Mapping[str, Any]) -> None:
        self.key = key
        self.raw = raw

    def _fail(self, name: str, problem: str) -> OutboxConfigError:
        return OutboxConfigError(f"{self.key}.{name}", problem)

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise self._fail(name, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(name, "must be a non-empty string")
        return value.strip()

    def boolean(self, name: str) -> bool | None:
        value = self.raw.get(name)
        if value is not None and not isinstance(value, bool):
            raise self._fail(name, "must be true or false")
        return value

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(name, f"must be an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise self._fail(name, f"must be an integer <= {maximum}")
        return value

    def seconds(self, name: str) -> float | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise self._fail(name, "must be a number of seconds > 0")
        return float(value)

    def choice(self, name: str, allowed: tuple[Any, ...]) -> Any:
        value = self.raw.get(name)
        if value is None:
            return None
        # bool is an int subclass: `acks = true` must not pass as 1.
        if isinstance(value, bool) or value not in allowed:
            raise self._fail(name, f"must be one of {', '.join(repr(a) for a in allowed)}")
        return value

    def topic(self, name: str) -> str | None:
        value = self.string(name)
        if value is not None:
            _check_topic(self._fail, name, value)
        return value

    def topic_map(self, name: str, *, allowed_keys: frozenset[str] | None = None) -> dict[str, str] | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._fail(name, "must be a table of name = topic")
        result: dict[str, str] = {}
        for item, topic in value.items():
            item_name = f"{name}.{item}"
            if allowed_keys is not None and item not in allowed_keys:
                raise self._fail(item_name, f"unknown event type (known: {', '.join(sorted(allowed_keys))})")
            if not isinstance(topic, str):
                raise self._fail(item_name, "must be a topic name")
            _check_topic(self._fail, item_name, topic)
            result[str(item)] = topic
        return result


def _check_topic(fail: Callable[[str, str], OutboxConfigError], name: str, topic: str) -> None:
    # Kafka's own rule: 1..249 characters of [a-zA-Z0-9._-], and not "." or "..".
    if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
        raise fail(name, f"{topic!r} is not a valid Kafka topic name")
