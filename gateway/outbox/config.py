"""Relay configuration: where events go, how they are encoded, how hard the relay pushes.

:class:`RelayConfig` is the ``[kafka]`` table, read like every table (:mod:`channels.config`):
its fields are the keys, with their types, bounds and defaults; every key is optional except
``bootstrap_servers``. A bad value raises :class:`~channels.config.ConfigError` naming the key
(``kafka.batch_size: must be >= 1``).

Topic choice for one event, first match wins:

1. ``event_topics[event_type]`` (e.g. ``DISCREPANCY = "paygate.ops-alerts"``):
   operational events go to the people who act on them, whoever the caller is;
2. ``caller_topics[caller]`` (e.g. ``loan-servicing = "loans.paygate-results"``);
3. ``default_topic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from channels.config import TABLE, ConfigError, NonBlank, Seconds, Secret, join, read

Encoding = Literal["protobuf", "json"]
Acks = Literal["all", 0, 1]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]

# The event types the schema defines (paygate.v1.EventType without UNSPECIFIED).
EVENT_TYPES = frozenset({"FLOW_RESULT", "FLOW_NEEDS_REVIEW", "DISCREPANCY", "INSTALMENT_OUTCOME", "RECON_DISCREPANCY"})


def _no_topics() -> Mapping[str, str]:
    return MappingProxyType({})


_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def _topic(name: str) -> str:
    # Kafka's own rule: 1..249 characters of [a-zA-Z0-9._-], and not "." or "..".
    if not _TOPIC.fullmatch(name) or name in {".", ".."}:
        raise ValueError(f"{name!r} is not a valid Kafka topic name")
    return name


def _event_types(value: object) -> object:
    for name in value if isinstance(value, Mapping) else ():
        if name not in EVENT_TYPES:
            raise ConfigError(str(name), f"unknown event type (known: {', '.join(sorted(EVENT_TYPES))})")
    return value


def _acks(value: object) -> object:
    # bool is an int subclass (and 1.0 == 1): `acks = true` must not pass as 1.
    if isinstance(value, bool | float):
        raise ValueError("must be one of 'all', 0, 1")
    return value


Topic = Annotated[str, AfterValidator(_topic)]


@dataclass(frozen=True)
class RelayConfig:
    """The ``[kafka]`` table. Durations are seconds (``_s``) or milliseconds (``_ms``) as named."""

    __pydantic_config__ = TABLE

    bootstrap_servers: NonBlank
    default_topic: Topic = "paygate.flow-results"
    caller_topics: Mapping[str, Topic] = field(default_factory=_no_topics)
    event_topics: Annotated[Mapping[str, Topic], BeforeValidator(_event_types)] = field(default_factory=_no_topics)
    # "protobuf" (application/x-protobuf) or "json" (proto3 JSON, application/json).
    encoding: Encoding = "protobuf"
    acks: Annotated[Acks, BeforeValidator(_acks)] = "all"
    # Off only for brokers without InitProducerId (tansu in tests); needs acks="all".
    enable_idempotence: bool = True
    client_id: NonBlank = "paygate-relay"
    # Per produce request; a batch that is not acknowledged in time is retried later.
    request_timeout_ms: Annotated[int, Field(ge=100)] = 10_000
    linger_ms: Annotated[int, Field(ge=0)] = 0
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    # Rows claimed and produced per round; also the number of row locks held at once.
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    # Idle wake-up interval; notify() wakes the relay earlier. Each round that finds nothing doubles
    # the next wait, up to idle_poll_max_s (never below poll_interval_s); a round that publishes, or
    # a notify(), goes back to poll_interval_s. Rows committed in this process wake it at once, so
    # the longer idle wait delays only rows no notify() announced (another process's, a crashed
    # replica's), by at most idle_poll_max_s.
    poll_interval_s: Seconds = 0.2
    idle_poll_max_s: Seconds = 2.0
    # After a notify(), wait this long before claiming, so the results of concurrent requests
    # share one round (one claim, one produce, one commit) instead of one round each. The price is
    # event latency: a result reaches the broker up to this much later (its RPC has answered already).
    # 100 against 20: about 5-9 % less gateway CPU per withhold, a third of the relay's rounds
    # (docs/BENCHMARKS.md, sixth session).
    collect_ms: Annotated[int, Field(ge=0, le=1000)] = 100
    # Backoff between failed rounds (exponential with jitter) while the broker is unreachable.
    backoff_initial_s: Seconds = 0.2
    backoff_max_s: Seconds = 30.0
    # A row that failed this many times with a non-retriable error is parked (left
    # unpublished, counted in the backlog, skipped by claims) for an operator.
    max_attempts: Annotated[int, Field(ge=1)] = 10
    # Published rows older than this are deleted, cleanup_batch_size rows per DELETE.
    retention_s: Seconds = 7 * 86400
    cleanup_interval_s: Seconds = 300.0
    cleanup_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # How often the backlog / oldest-age gauges are refreshed.
    metrics_interval_s: Seconds = 5.0
    # Create the configured topics (idempotently) whenever the producer (re)connects.
    # Off in production, where topics are provisioned with their own settings.
    create_topics: bool = False
    topic_partitions: Annotated[int, Field(ge=1)] = 6
    topic_replication_factor: Annotated[int, Field(ge=1)] = 3
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: NonBlank | None = None
    sasl_password: Secret | None = field(default=None, repr=False)
    ssl_cafile: NonBlank | None = None
    # Whether the gateway runs the relay at all (the composition root reads it; the relay does not).
    enabled: bool = False

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
        """Read a ``[kafka]``-shaped table; ``key`` is its dotted name in error messages. Raises ConfigError."""
        return read(cls, raw, key)

    def check_config(self, key: str) -> None:
        """Rules between settings."""
        if self.enable_idempotence and self.acks != "all":
            raise ConfigError(join(key, "acks"), 'must be "all" when enable_idempotence is true')
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(join(key, "backoff_max_s"), "must be >= backoff_initial_s")
        if self.security_protocol.startswith("SASL") and not (self.sasl_mechanism and self.sasl_username):
            raise ConfigError(
                join(key, "sasl_mechanism"), f"{self.security_protocol} needs sasl_mechanism and sasl_username"
            )
