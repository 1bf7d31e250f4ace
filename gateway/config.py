"""Typed configuration, loaded once in the composition root.

Sources, later wins: the defaults written in the tables, a TOML file, ``PAYGATE_*`` environment
variables. An environment variable names a path with double underscores:
``PAYGATE_DATABASE__HOST=db`` sets ``database.host`` (names without a double underscore are not
overrides; ``_`` also matches a ``-`` in an existing name, so ``PAYGATE_CALLERS__LOAN_SERVICING__TOKEN``
sets ``callers.loan-servicing.token``); its value is parsed as a TOML value when it parses (numbers,
booleans, arrays) and taken as a string otherwise. Any secret ``<key>`` may also be given as
``<key>_file``, the path of a file holding it (``PAYGATE_DATABASE__PASSWORD_FILE=/run/secrets/db``);
an override replaces the file's value of either form. Every table is read by the one reader,
:func:`channels.config.read`: unknown keys and bad values stop start-up with a :class:`ConfigError`
naming the key (``config error at database.pool_min: must be <= database.pool_max``). Secrets
(tokens, keys, passwords) are :class:`Secret`, so they never show in a repr, a log line or an error.

Where each table is declared (keys, types, bounds, the one default, checks between keys):

======================================  ==========================================================
``[cashier]``                           :class:`gateway.collections.CashierConfig`
``[server]``, ``[security]``,           here: :class:`ServerConfig`, :class:`SecurityConfig`,
``[poller]``, ``[logging]``,            :class:`PollerConfig`, :class:`LoggingConfig`,
``[business]``, ``[banks]``             :class:`BusinessConfig`, :class:`BanksConfig`
``[callers.*]``, ``[operators.*]``      :class:`gateway.security.principals.CallerTable`,
                                        :class:`~gateway.security.principals.OperatorTable`
``[server.tls]``, ``[server.http_tls]``  :class:`gateway.security.tls.TlsConfig`
``[console]``                           :class:`gateway.console.config.ConsoleConfig`
``[database]``                          :class:`gateway.store.db.DatabaseConfig`
``[replicas]``                          :class:`gateway.replicas.ReplicasConfig`
``[routing]``                           :class:`routing.config.RouterConfig`
``[kafka]``                             :class:`gateway.outbox.config.RelayConfig`
``[plans]``                             :class:`gateway.plans.config.PlansConfig` (and its policies)
``[funders.*]``, ``[settlement]``       :class:`gateway.splits.funders.FunderConfig`,
                                        :class:`~gateway.splits.funders.SettlementConfig`
``[reconciliation]``                    :class:`gateway.recon.config.ReconConfig`
``[[channels]]``                        :class:`ChannelEntry`; its ``settings`` are the adapter's
                                        table (e.g. :class:`channels.sandbox.adapter.SandboxSettings`),
                                        read by its ``build``; its ``routing`` is
                                        :class:`routing.config.ChannelRouting`, read by
                                        :func:`gateway.app.build_router` once the adapters'
                                        capabilities are known
======================================  ==========================================================

Adding a section (``[recon]``, say):

1. declare its table next to the code that uses it: a frozen dataclass with
   ``__pydantic_config__ = TABLE`` and one field per key, each with its type, its bounds
   (``Annotated[int, Field(ge=1)]``) and its default, and a comment saying what it means; put
   rules between keys in ``check_config(self, key)`` (see :mod:`channels.config`);
2. add a field to :class:`Config`: ``recon: ReconConfig = field(default_factory=ReconConfig)``;
3. add its keys with their defaults to ``examples/paygate.toml`` and the README's table.

That is all: ``PAYGATE_RECON__<KEY>`` overrides, unknown-key errors and messages naming the key come
with the reader, and tests/unit/test_config.py checks that every key of the example is read, that
the example shows the defaults and that an empty configuration gives them.

Why not pydantic-settings (tried, 2.16): it ignores a variable for an unknown section
(``PAYGATE_BOGUS__X=1`` passes silently), takes the TOML file from class configuration rather than
``--config`` at run time, reads the process environment even for an in-memory table
(:func:`from_mapping`), and parses values its own way (strings, JSON for arrays) where paygate
documents TOML values. pydantic itself does the validation; the overlay below is 25 lines.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import tomllib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator

from channels.config import FILE_SUFFIX, TABLE, read
from channels.config import ConfigError as ConfigError  # re-exported: every layer raises this one
from channels.config import Secret as Secret
from gateway.collections import CashierConfig
from gateway.console.config import ConsoleConfig
from gateway.outbox.config import RelayConfig
from gateway.plans.config import PlansConfig
from gateway.recon.config import ReconConfig
from gateway.replicas import ReplicasConfig
from gateway.retention import RetentionConfig
from gateway.security.principals import NAME, CallerTable, OperatorTable, check_principals
from gateway.security.tls import TlsConfig
from gateway.splits.funders import FunderConfig, SettlementConfig, check_funders
from gateway.store.db import DatabaseConfig
from gateway.validation import BANK_CODE, MAINLAND_BANK_CODES
from routing.config import RouterConfig


def _name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError("1-64 chars of a-z 0-9 . _ -")
    return value


def _schedule(raw: object) -> tuple[tuple[float, int], ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("must be a non-empty array of [interval_s, count] pairs")
    steps: list[tuple[float, int]] = []
    for i, step in enumerate(raw):
        ok = isinstance(step, list | tuple) and len(step) == 2
        interval, count = (step[0], step[1]) if ok else (None, None)
        if not ok or isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ConfigError(f"[{i}]", "must be [interval_s > 0, count >= 1]")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"[{i}]", "count must be an integer >= 1")
        steps.append((float(interval), count))
    return tuple(steps)


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Asia/Shanghai)") from None
    return name


Port = Annotated[int, Field(ge=0, le=65535)]  # 0 picks a free port
# First delay, then (interval_s, count) steps.
PollSchedule = Annotated[tuple[tuple[float, int], ...], PlainValidator(_schedule)]


@dataclass(frozen=True)
class ServerConfig:
    __pydantic_config__ = TABLE

    grpc_host: str = "127.0.0.1"
    grpc_port: Port = 50051
    http_host: str = "127.0.0.1"  # channel callbacks
    http_port: Port = 8080
    public_callback_base: str = ""  # what channels use to reach http_port; default http://http_host:http_port
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9464
    grace_s: Annotated[float, Field(ge=0, le=600)] = 10.0  # in-flight RPCs get this long on shutdown
    default_wait_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000  # wait budget when a request sets none
    max_wait_ms: Annotated[int, Field(ge=1, le=600_000)] = 60000
    # a flow RPC stops waiting this long before its gRPC deadline, so the flow (PROCESSING) reaches the client
    deadline_margin_ms: Annotated[int, Field(ge=0, le=10_000)] = 100
    replica_id: Annotated[str, Field(max_length=64)] = ""  # lease owner name; default hostname-pid
    # processes on this host sharing the gRPC and callback ports (SO_REUSEPORT), each a replica: gateway/workers.py
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    tls: TlsConfig = field(default_factory=TlsConfig)  # [server.tls]: the gRPC listener's TLS / mutual TLS
    http_tls: TlsConfig = field(default_factory=TlsConfig)  # [server.http_tls]: the callback listener's TLS
    http_max_body_bytes: Annotated[int, Field(ge=1024, le=16 << 20)] = 64 * 1024  # a callback's body, at most
    http_request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0  # reading and handling one callback

    @property
    def callback_base(self) -> str:
        scheme = "https" if self.http_tls.enabled else "http"
        return self.public_callback_base or f"{scheme}://{self.http_host}:{self.http_port}"


@dataclass(frozen=True)
class SecurityConfig:
    __pydantic_config__ = TABLE

    account_hash_key: Secret = Secret("paygate-dev-only-change-me")  # keys the account-number hash
    # a flow above this amount (minor units) is resolved by hand only when a second operator, an
    # approver, approves the first one's resolution (maker-checker); 0: every manual resolution
    resolve_approval_above: Annotated[int, Field(ge=0)] = 1_000_000


@dataclass(frozen=True)
class PollerConfig:
    __pydantic_config__ = TABLE

    enabled: bool = True
    interval_s: Annotated[float, Field(ge=0.01, le=60)] = 0.5  # how often an idle poller looks for due rows
    batch: Annotated[int, Field(ge=1, le=1000)] = 50
    concurrency: Annotated[int, Field(ge=1, le=512)] = 16
    # the most rows of one channel a poller holds at once (0: half of concurrency, all of it when only
    # one channel is configured), so a bank whose queries are slow never holds up the others' results
    per_channel: Annotated[int, Field(ge=0, le=1000)] = 0
    lease_s: Annotated[float, Field(ge=1, le=3600)] = 60.0
    # first delay, then (interval_s, count) steps: ~2 days in all
    schedule: PollSchedule = ((5, 3), (30, 4), (120, 5), (600, 6), (3600, 12), (21600, 6))
    first_delay_s: Annotated[float, Field(ge=0, le=86400)] = 2.0
    # an order the channel never saw is closed after this
    not_found_close_after_s: Annotated[float, Field(ge=1, le=86400)] = 120.0


@dataclass(frozen=True)
class ChannelPoll:
    """``[channels.poll]``: this channel's own poll schedule; None keeps the ``[poller]`` one."""

    __pydantic_config__ = TABLE

    first_delay_s: Annotated[float, Field(ge=0)] | None = None
    schedule: PollSchedule | None = None


@dataclass(frozen=True)
class ChannelEntry:
    """One ``[[channels]]`` entry. ``settings`` and ``routing`` are read later, when the adapter is known."""

    __pydantic_config__ = TABLE

    id: Annotated[str, AfterValidator(_name)]
    adapter: str  # a key of channels.registry.ADAPTERS
    # the adapter's table, read (its keys wrapped) by the adapter's build; it holds channel keys, so no repr
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)
    routing: Mapping[str, Any] = field(default_factory=dict)  # routing.config.ChannelRouting
    poll: ChannelPoll = field(default_factory=ChannelPoll)
    # the entry's own path (channels[2]), for messages; set by the reader
    key: str = field(default="channels", init=False)

    @property
    def channel_id(self) -> str:
        return self.id

    @property
    def poll_schedule(self) -> tuple[tuple[float, int], ...] | None:
        return self.poll.schedule

    @property
    def poll_first_delay_s(self) -> float | None:
        return self.poll.first_delay_s


def _numbered(entries: tuple[ChannelEntry, ...]) -> tuple[ChannelEntry, ...]:
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.id in seen:
            raise ConfigError(f"[{i}].id", f"duplicate channel id {entry.id!r}")
        seen.add(entry.id)
        object.__setattr__(entry, "key", f"channels[{i}]")  # frozen, but not yet shared
    return entries


def _kafka_table(raw: object) -> object:
    """A ``[kafka]`` table that says nothing but ``enabled = false`` turns the relay off; others are read whole."""
    if isinstance(raw, Mapping) and set(raw) <= {"enabled"}:
        enabled = raw.get("enabled")
        if enabled is None or enabled is False:
            return None
        if enabled is not True:
            raise ConfigError("enabled", "must be true or false")
    return raw


@dataclass(frozen=True)
class LoggingConfig:
    __pydantic_config__ = TABLE

    format: Literal["json", "text"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class BusinessConfig:
    """The lender's business day (DESIGN.md invariant 14): limits, plans, statements, settlements."""

    __pydantic_config__ = TABLE

    timezone: Annotated[str, AfterValidator(_zone)] = "Asia/Shanghai"  # an IANA name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _bank_codes(codes: tuple[str, ...]) -> frozenset[str]:
    for i, code in enumerate(codes):
        if not BANK_CODE.fullmatch(code):
            raise ConfigError(f"[{i}]", "must be an upper-case bank code like ICBC (2-16 of A-Z 0-9)")
    return frozenset(codes)


@dataclass(frozen=True)
class BanksConfig:
    """``[banks]``: the bank codes a request's ``bank_code`` may name.

    Requests may name these plus every bank a configured channel lists (its adapter's banks,
    its ``[channels.routing] banks``); anything else is refused as INVALID_ARGUMENT naming
    ``bank_code``. The default is :data:`gateway.validation.MAINLAND_BANK_CODES`.
    """

    __pydantic_config__ = TABLE

    codes: Annotated[frozenset[str], AfterValidator(_bank_codes)] = MAINLAND_BANK_CODES


@dataclass(frozen=True)
class Config:
    """The whole configuration: one field per top-level table."""

    __pydantic_config__ = TABLE

    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    callers: Mapping[str, CallerTable] = field(default_factory=dict)  # caller name -> how it proves who it is
    operators: Mapping[str, OperatorTable] = field(default_factory=dict)  # ... and the operator's role
    channels: Annotated[tuple[ChannelEntry, ...], AfterValidator(_numbered)] = ()
    routing: RouterConfig = field(default_factory=RouterConfig)
    kafka: Annotated[RelayConfig | None, BeforeValidator(_kafka_table)] = None  # None: no [kafka] table
    poller: PollerConfig = field(default_factory=PollerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    business: BusinessConfig = field(default_factory=BusinessConfig)
    plans: PlansConfig = field(default_factory=PlansConfig)
    banks: BanksConfig = field(default_factory=BanksConfig)
    cashier: CashierConfig = field(default_factory=CashierConfig)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    funders: Mapping[str, FunderConfig] = field(default_factory=dict)  # joint-loan funders, by id
    settlement: SettlementConfig = field(default_factory=SettlementConfig)
    reconciliation: ReconConfig = field(default_factory=ReconConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    @property
    def account_hash_key(self) -> Secret:
        return self.security.account_hash_key

    @property
    def kafka_enabled(self) -> bool:
        return self.kafka is not None and self.kafka.enabled

    def check_config(self, key: str) -> None:
        check_principals(self.callers, self.operators)
        for section, tables in (("callers", self.callers), ("operators", self.operators)):
            for name, table in tables.items():
                if table.needs_certificate and not self.server.tls.mutual:
                    raise ConfigError(
                        f"{section}.{name}.san",
                        f'auth = "{table.mode}" needs mutual TLS: set server.tls.client_ca_file and its cert_file',
                    )
        self.plans.check_channels({c.id for c in self.channels})
        check_funders(self.funders, {c.id for c in self.channels})
        self.reconciliation.check_channels({c.id for c in self.channels})


# --- loading -------------------------------------------------------------------


@contextmanager
def start_up_errors() -> Iterator[None]:
    """Re-raise a :class:`ConfigError` as start-up reports it: ``config error at <key>: <problem>``."""
    try:
        yield
    except ConfigError as exc:
        if exc.at_start_up:
            raise
        raise ConfigError(exc.key, exc.problem, at_start_up=True) from None


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _existing(node: Mapping[str, Any], part: str) -> str:
    """``part``, or the existing key it names with ``-`` written as ``_`` (names are lower-case)."""
    if part in node:
        return part
    return next((name for name in node if name.replace("-", "_") == part), part)


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay PAYGATE_A__B=value onto the raw table (a.b = value)."""
    with start_up_errors():
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
                child = node.setdefault(_existing(node, part), {})
                if not isinstance(child, dict):
                    raise ConfigError(name, f"{part} is not a table")
                node = child
            leaf = _existing(node, path[-1])
            # a secret given here replaces the file's, inline or as a file (<key>_file): later wins
            twin = leaf.removesuffix(FILE_SUFFIX) if leaf.endswith(FILE_SUFFIX) else leaf + FILE_SUFFIX
            node.pop(twin, None)
            node[leaf] = _env_value(text)
    return raw


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration. ``path`` defaults to $PAYGATE_CONFIG if set."""
    env = os.environ if environ is None else environ
    path = path or env.get("PAYGATE_CONFIG")
    raw: dict[str, Any] = {}
    with start_up_errors():
        if path:
            try:
                raw = tomllib.loads(Path(path).read_text())
            except FileNotFoundError:
                raise ConfigError("PAYGATE_CONFIG", f"no such file: {path}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(str(path), f"not valid TOML: {exc}") from None
            except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
                raise ConfigError(str(path), f"cannot read the file ({type(exc).__name__})") from None
    return from_mapping(apply_env(raw, env))


def from_mapping(raw: Mapping[str, Any]) -> Config:
    """Build a Config from an in-memory table (tests, demo); no environment overrides."""
    with start_up_errors():
        return read(Config, raw)


# --- showing it --------------------------------------------------------------------

REDACTED = "********"


def redacted(config: Config, secrets: Collection[str] = ()) -> dict[str, Any]:
    """The configuration as TOML-shaped data, every secret replaced by :data:`REDACTED`.

    Secrets are the :class:`Secret` values, and any string equal to one of ``secrets``: a channel's
    ``settings`` stay as they were given until its adapter reads them, so their secrets are known
    only by value (collect them with :func:`channels.config.collect_secrets` while the adapters are
    built, as ``paygate config check`` does). Keys whose value is unset (None) are left out.
    """
    known = {s for s in secrets if s}
    out = _plain(config, known)
    assert isinstance(out, dict)
    return out


def _plain(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, Secret):
        return REDACTED if value else ""  # that none is set is no secret
    if isinstance(value, str):
        return REDACTED if value in secrets else value
    if isinstance(value, enum.Enum):
        return _plain(value.value, secrets)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.init)
        return {name: _plain(item, secrets) for name, item in fields if item is not None}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, secrets) for k, v in value.items() if v is not None}
    if isinstance(value, frozenset | set):
        return sorted(_plain(v, secrets) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v, secrets) for v in value]
    return value
