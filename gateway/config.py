"""Typed configuration, loaded once in the composition root.

Sources, later wins: built-in defaults, a TOML file, ``PAYGATE_*`` environment
variables. An environment variable names a path with double underscores:
``PAYGATE_DATABASE__HOST=db`` sets ``database.host`` (names without a double
underscore are not overrides); its value is parsed as a
TOML value when it parses (numbers, booleans, arrays) and taken as a string
otherwise. Unknown keys and bad values stop start-up with a
:class:`ConfigError` naming the key. Secrets (tokens, keys, passwords) are
wrapped in :class:`Secret` so they never show in a repr or a log line.

The README's configuration section and ``examples/paygate.toml`` list every key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.plans.config import PlanConfigError, PlansConfig, parse_plans
from gateway.store.db import DatabaseConfig


class ConfigError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error at {key}: {problem}")
        self.key = key


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class _Section:
    """Reads one table, remembering which keys were used, so leftovers are errors."""

    def __init__(self, raw: Any, key: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a table")
        self.raw: Mapping[str, Any] = raw
        self.key = key
        self.used: set[str] = set()

    def _get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.raw.get(name, default)

    def string(self, name: str, default: str | None = None, *, max_len: int = 512) -> str:
        value = self._get(name, default)
        if value is None:
            raise ConfigError(f"{self.key}.{name}", "is required")
        if not isinstance(value, str):
            raise ConfigError(f"{self.key}.{name}", f"must be a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise ConfigError(f"{self.key}.{name}", f"longer than {max_len} characters")
        return value

    def secret(self, name: str, default: str | None = None) -> Secret:
        return Secret(self.string(name, default, max_len=16384))

    def integer(self, name: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self._get(name, default)
        if value is None:
            raise ConfigError(f"{self.key}.{name}", "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key}.{name}", f"must be an integer, got {value!r}")
        if lo is not None and value < lo:
            raise ConfigError(f"{self.key}.{name}", f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"{self.key}.{name}", f"must be <= {hi}, got {value}")
        return value

    def number(self, name: str, default: float, *, lo: float | None = None, hi: float | None = None) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.key}.{name}", f"must be a number, got {value!r}")
        if lo is not None and value < lo:
            raise ConfigError(f"{self.key}.{name}", f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"{self.key}.{name}", f"must be <= {hi}, got {value}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key}.{name}", f"must be true or false, got {value!r}")
        return value

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in options:
            raise ConfigError(f"{self.key}.{name}", f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def table(self, name: str) -> Mapping[str, Any]:
        value = self._get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.key}.{name}", "must be a table")
        return value

    def done(self) -> None:
        extra = sorted(set(self.raw) - self.used)
        if extra:
            raise ConfigError(f"{self.key}.{extra[0]}", "unknown key")


@dataclass(frozen=True)
class ServerConfig:
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"  # channel callbacks
    http_port: int = 8080
    public_callback_base: str = ""  # what channels use to reach http_port; default http://http_host:http_port
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    grace_s: float = 10.0  # in-flight RPCs get this long on shutdown
    default_wait_ms: int = 5000  # wait budget when a request sets none
    max_wait_ms: int = 60000
    replica_id: str = ""  # lease owner name; default hostname-pid

    @property
    def callback_base(self) -> str:
        return self.public_callback_base or f"http://{self.http_host}:{self.http_port}"


@dataclass(frozen=True)
class PollerConfig:
    enabled: bool = True
    interval_s: float = 0.5  # how often an idle poller looks for due rows
    batch: int = 50
    concurrency: int = 16
    lease_s: float = 60.0
    # first delay, then (interval_s, count) steps: ~2 days in all
    schedule: tuple[tuple[float, int], ...] = ((5, 3), (30, 4), (120, 5), (600, 6), (3600, 12), (21600, 6))
    first_delay_s: float = 2.0
    not_found_close_after_s: float = 120.0  # an order the channel never saw is closed after this


@dataclass(frozen=True)
class ChannelEntry:
    channel_id: str
    adapter: str
    settings: Mapping[str, Any]
    routing: Mapping[str, Any]
    poll_schedule: tuple[tuple[float, int], ...] | None
    poll_first_delay_s: float | None
    key: str


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "json"
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    callers: Mapping[str, Secret] = field(default_factory=dict)  # caller name -> token
    operators: Mapping[str, Secret] = field(default_factory=dict)
    account_hash_key: Secret = field(default_factory=lambda: Secret("paygate-dev-only-change-me"))
    channels: tuple[ChannelEntry, ...] = ()
    routing: Mapping[str, Any] = field(default_factory=dict)
    kafka: Mapping[str, Any] = field(default_factory=dict)
    kafka_enabled: bool = False
    poller: PollerConfig = field(default_factory=PollerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    plans: PlansConfig = field(default_factory=PlansConfig)  # [plans]: gateway/plans/config.py


# --- loading -------------------------------------------------------------------


def _schedule(raw: Any, key: str) -> tuple[tuple[float, int], ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(key, "must be a non-empty array of [interval_s, count] pairs")
    steps: list[tuple[float, int]] = []
    for i, step in enumerate(raw):
        ok = isinstance(step, list) and len(step) == 2
        interval, count = (step[0], step[1]) if ok else (None, None)
        if not ok or isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ConfigError(f"{key}[{i}]", "must be [interval_s > 0, count >= 1]")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"{key}[{i}]", "count must be an integer >= 1")
        steps.append((float(interval), count))
    return tuple(steps)


def _tokens(raw: Mapping[str, Any], key: str) -> dict[str, Secret]:
    out: dict[str, Secret] = {}
    seen: dict[str, str] = {}
    for name, entry in raw.items():
        if not _NAME.match(name):
            raise ConfigError(f"{key}.{name}", "names are 1-64 chars of a-z 0-9 . _ -")
        section = _Section(entry, f"{key}.{name}")
        token = section.secret("token")
        section.done()
        if len(token.reveal()) < 16:
            raise ConfigError(f"{key}.{name}.token", "must be at least 16 characters")
        if token.reveal() in seen:
            raise ConfigError(f"{key}.{name}.token", f"same token as {seen[token.reveal()]}")
        seen[token.reveal()] = name
        out[name] = token
    return out


def _parse(raw: Mapping[str, Any]) -> Config:
    root = _Section(raw, "config")

    s = _Section(root.table("server"), "server")
    server = ServerConfig(
        grpc_host=s.string("grpc_host", "127.0.0.1"),
        grpc_port=s.integer("grpc_port", 50051, lo=0, hi=65535),
        http_host=s.string("http_host", "127.0.0.1"),
        http_port=s.integer("http_port", 8080, lo=0, hi=65535),
        public_callback_base=s.string("public_callback_base", ""),
        metrics_host=s.string("metrics_host", "127.0.0.1"),
        metrics_port=s.integer("metrics_port", 9464, lo=0, hi=65535),
        grace_s=s.number("grace_s", 10.0, lo=0, hi=600),
        default_wait_ms=s.integer("default_wait_ms", 5000, lo=1, hi=600_000),
        max_wait_ms=s.integer("max_wait_ms", 60000, lo=1, hi=600_000),
        replica_id=s.string("replica_id", "", max_len=64),
    )
    s.done()

    d = _Section(root.table("database"), "database")
    database = DatabaseConfig(
        host=d.string("host", "127.0.0.1"),
        port=d.integer("port", 3306, lo=1, hi=65535),
        user=d.string("user", "root"),
        password=d.secret("password", "").reveal(),
        database=d.string("database", "paygate", max_len=64),
        pool_min=d.integer("pool_min", 2, lo=0, hi=500),
        pool_max=d.integer("pool_max", 20, lo=1, hi=500),
        connect_timeout_s=d.number("connect_timeout_s", 5.0, lo=0.1, hi=120),
        pool_recycle_s=d.integer("pool_recycle_s", 3600, lo=-1),
        group_commit=d.boolean("group_commit", True),
        group_commit_workers=d.integer("group_commit_workers", 1, lo=1, hi=64),
        group_commit_max_batch=d.integer("group_commit_max_batch", 64, lo=1, hi=1000),
    )
    d.done()
    if database.pool_min > database.pool_max:
        raise ConfigError("database.pool_min", "must be <= database.pool_max")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", database.database):
        raise ConfigError("database.database", "letters, digits and _ only")

    sec = _Section(root.table("security"), "security")
    hash_key = sec.secret("account_hash_key", "paygate-dev-only-change-me")
    sec.done()

    callers = _tokens(root.table("callers"), "callers")
    operators = _tokens(root.table("operators"), "operators")
    for name, token in operators.items():
        if token in callers.values():
            raise ConfigError(f"operators.{name}.token", "must differ from every caller token")

    raw_channels = root._get("channels", [])
    if not isinstance(raw_channels, list):
        raise ConfigError("channels", "must be an array of tables ([[channels]])")
    channels: list[ChannelEntry] = []
    seen_ids: set[str] = set()
    for i, entry in enumerate(raw_channels):
        key = f"channels[{i}]"
        c = _Section(entry, key)
        channel_id = c.string("id", max_len=64)
        if not _NAME.match(channel_id):
            raise ConfigError(f"{key}.id", "1-64 chars of a-z 0-9 . _ -")
        if channel_id in seen_ids:
            raise ConfigError(f"{key}.id", f"duplicate channel id {channel_id!r}")
        seen_ids.add(channel_id)
        adapter = c.string("adapter")
        settings = c.table("settings")
        routing = c.table("routing")
        poll = _Section(c.table("poll"), f"{key}.poll")
        schedule = _schedule(poll._get("schedule", None), f"{key}.poll.schedule") if "schedule" in poll.raw else None
        first = poll.number("first_delay_s", -1.0) if "first_delay_s" in poll.raw else None
        if first is not None and first < 0:
            raise ConfigError(f"{key}.poll.first_delay_s", "must be >= 0")
        poll.done()
        c.done()
        channels.append(ChannelEntry(channel_id, adapter, settings, routing, schedule, first, key))

    routing_raw = root.table("routing")

    k = root.table("kafka")
    kafka_enabled = bool(k.get("enabled", False))
    if "enabled" in k and not isinstance(k["enabled"], bool):
        raise ConfigError("kafka.enabled", "must be true or false")
    kafka = {name: value for name, value in k.items() if name != "enabled"}

    p = _Section(root.table("poller"), "poller")
    poller = PollerConfig(
        enabled=p.boolean("enabled", True),
        interval_s=p.number("interval_s", 0.5, lo=0.01, hi=60),
        batch=p.integer("batch", 50, lo=1, hi=1000),
        concurrency=p.integer("concurrency", 16, lo=1, hi=512),
        lease_s=p.number("lease_s", 60.0, lo=1, hi=3600),
        schedule=_schedule(p._get("schedule", None), "poller.schedule")
        if "schedule" in p.raw
        else PollerConfig.schedule,
        first_delay_s=p.number("first_delay_s", 2.0, lo=0, hi=86400),
        not_found_close_after_s=p.number("not_found_close_after_s", 120.0, lo=1, hi=86400),
    )
    p.done()

    try:
        plans = parse_plans(root.table("plans"))
        plans.check_channels(seen_ids)
    except PlanConfigError as exc:
        raise ConfigError(exc.key, exc.problem) from None

    lg = _Section(root.table("logging"), "logging")
    logging_cfg = LoggingConfig(
        format=lg.choice("format", "json", ("json", "text")),
        level=lg.choice("level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    lg.done()
    root.done()
    return Config(
        server=server,
        database=database,
        callers=callers,
        operators=operators,
        account_hash_key=hash_key,
        channels=tuple(channels),
        routing=routing_raw,
        kafka=kafka,
        kafka_enabled=kafka_enabled,
        poller=poller,
        logging=logging_cfg,
        plans=plans,
    )


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay PAYGATE_A__B=value onto the raw table (a.b = value)."""
    for name, text in sorted(environ.items()):
        # Only PAYGATE_<SECTION>__<KEY> names are overrides; PAYGATE_CONFIG and
        # other single-part names (test knobs) are not.
        if not name.startswith("PAYGATE_") or "__" not in name:
            continue
        path = [part.lower() for part in name.removeprefix("PAYGATE_").split("__")]
        if not all(path):
            raise ConfigError(name, "malformed environment override")
        node: dict[str, Any] = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(name, f"{part} is not a table")
            node = child
        node[path[-1]] = _env_value(text)
    return raw


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration. ``path`` defaults to $PAYGATE_CONFIG if set."""
    env = os.environ if environ is None else environ
    path = path or env.get("PAYGATE_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError("PAYGATE_CONFIG", f"no such file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return _parse(apply_env(raw, env))


def from_mapping(raw: Mapping[str, Any]) -> Config:
    """Build a Config from an in-memory table (tests, demo)."""
    return _parse(raw)
