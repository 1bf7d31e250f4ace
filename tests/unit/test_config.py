from __future__ import annotations

import ast
import copy
import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from channels._template.adapter import TemplateSettings
from channels.alipay.adapter import AlipayTable
from channels.config import join, read
from channels.sandbox.adapter import SandboxSettings
from channels.wechatpay.adapter import WeChatPayTable
from gateway.app import build_registry, build_router
from gateway.config import (
    BusinessConfig,
    Config,
    ConfigError,
    LoggingConfig,
    PollerConfig,
    Secret,
    SecurityConfig,
    ServerConfig,
    apply_env,
    from_mapping,
    load,
)
from gateway.outbox.config import RelayConfig
from gateway.store.db import DatabaseConfig
from routing.config import ChannelRouting, FeeSchedule, RouterConfig, parse_router_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_hides_secrets() -> None:
    config = load(ROOT / "examples" / "paygate.toml", environ={})
    assert config.server.grpc_port == 50051
    assert set(config.callers) == {"loan-servicing", "collections"}
    assert "replace-with" not in repr(config)
    assert config.channels[0].channel_id == "icbc-sandbox"
    assert config.channels[0].poll_schedule is not None
    total = config.poller.first_delay_s + sum(i * n for i, n in config.poller.schedule)
    assert 40 * 3600 <= total <= 60 * 3600, "the default schedule covers about two days"


def test_environment_overrides_win() -> None:
    config = load(
        ROOT / "examples" / "paygate.toml",
        environ={"PAYGATE_DATABASE__HOST": "db.internal", "PAYGATE_SERVER__GRPC_PORT": "6000", "PAYGATE_TEST_X": "1"},
    )
    assert config.database.host == "db.internal"
    assert config.server.grpc_port == 6000


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"server": {"grpc_port": 70000}}, "server.grpc_port"),
        ({"server": {"grcp_port": 1}}, "server.grcp_port"),
        ({"bogus": {}}, "config.bogus"),
        ({"database": {"pool_min": 50, "pool_max": 5}}, "database.pool_min"),
        ({"database": {"group_commit": "yes"}}, "database.group_commit"),
        ({"database": {"group_commit_workers": 0}}, "database.group_commit_workers"),
        ({"database": {"group_commit_max_batch": 5000}}, "database.group_commit_max_batch"),
        ({"database": {"driver": "mysqlclient"}}, "database.driver"),
        ({"callers": {"a": {"token": "short"}}}, "callers.a.token"),
        ({"callers": {"a": {"token": "x" * 20}, "b": {"token": "x" * 20}}}, "callers.b.token"),
        ({"poller": {"schedule": [[0, 1]]}}, "poller.schedule[0]"),
        ({"logging": {"format": "xml"}}, "logging.format"),
        ({"channels": [{"id": "a", "adapter": "sandbox"}, {"id": "a", "adapter": "sandbox"}]}, "channels[1].id"),
        ({"channels": [{"id": "A B", "adapter": "sandbox"}]}, "channels[0].id"),
    ],
)
def test_bad_values_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(raw)
    assert err.value.key == key, str(err.value)


def test_the_database_driver_is_aiomysql_unless_asyncmy_is_asked_for() -> None:
    assert from_mapping({}).database.driver == "aiomysql"
    assert from_mapping({"database": {"driver": "asyncmy"}}).database.driver == "asyncmy"


def test_secret_never_prints() -> None:
    s = Secret("top-secret-value")
    assert "top-secret" not in repr(s) and "top-secret" not in str(s) and "top-secret" not in f"{s}"
    assert s.reveal() == "top-secret-value"


def test_apply_env_rejects_malformed_names() -> None:
    with pytest.raises(ConfigError):
        apply_env({}, {"PAYGATE_SERVER____X": "1"})


# --- one reader, one default each --------------------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "paygate.toml"


def _example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def _leaves(node: object, path: str = "") -> list[str]:
    """The path of every value in a TOML document that is not itself a table (arrays of tables are walked)."""
    if isinstance(node, dict):
        return [leaf for name, child in node.items() for leaf in _leaves(child, join(path, name))]
    if isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        return [leaf for i, item in enumerate(node) for leaf in _leaves(item, join(path, i))]
    return [path]


def _set(raw: dict, path: str, value: object) -> None:
    parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    node = raw
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _read_everything(raw: dict) -> None:
    """What start-up reads: the file's tables, then each adapter's settings and each channel's routing."""
    config = from_mapping(raw)
    build_router(config, build_registry(config))


@pytest.mark.parametrize("path", _leaves(_example()))
def test_every_key_in_the_example_is_read(path: str) -> None:
    """A value of the wrong kind under any key of the example stops start-up naming that key.

    A key the readers ignored (or read without checking) would pass. Adapter settings are named
    under the channel entry (``channels[0].base_url``), as the adapters have always named them.
    """
    raw = _example()
    _read_everything(copy.deepcopy(raw))  # the example itself is fine
    _set(raw, path, {"not": "a value of this key"})
    with pytest.raises(ConfigError) as err:
        _read_everything(raw)
    assert err.value.key == path.replace(".settings.", "."), str(err.value)
    assert str(err.value).startswith(f"config error at {err.value.key}: ")


# Sections of the example that show placeholders or required values, not defaults.
# plans: the example shows a policy, a product and a rate limit; by default there are none
# funders: there are none by default; the example shows two (a channel-settled and a report-only one)
# reconciliation: the example schedules its channel (run_at); by default none is scheduled
NOT_DEFAULTS_IN_THE_EXAMPLE = {
    "security",
    "callers",
    "operators",
    "channels",
    "kafka",
    "plans",
    "funders",
    "reconciliation",
}


def test_the_example_shows_the_defaults() -> None:
    """examples/paygate.toml says its values are the defaults: they are the tables' own."""
    config, defaults = load(EXAMPLE, environ={}), Config()
    for section in dataclasses.fields(Config):
        if section.name not in NOT_DEFAULTS_IN_THE_EXAMPLE:
            assert getattr(config, section.name) == getattr(defaults, section.name), section.name
    assert config.kafka == RelayConfig(bootstrap_servers="127.0.0.1:9092")  # the one required key
    sandbox = build_registry(config).get("icbc-sandbox").settings  # type: ignore[attr-defined]
    assert (
        (sandbox.timeout_s, sandbox.connect_timeout_s)
        == (10.0, 2.0)
        == (
            SandboxSettings.timeout_s,  # type: ignore[attr-defined]
            SandboxSettings.connect_timeout_s,  # type: ignore[attr-defined]
        )
    )


def test_an_empty_configuration_is_the_documented_defaults() -> None:
    """Reading nothing gives exactly what the tables declare: no reader has a default of its own."""
    config = from_mapping({})
    assert config == Config()
    assert (config.callers, config.operators, config.channels, config.kafka) == ({}, {}, (), None)
    assert config.business.timezone == "Asia/Shanghai" and config.business.zone == ZoneInfo("Asia/Shanghai")
    assert config.account_hash_key == SecurityConfig().account_hash_key
    assert parse_router_config("routing", {}) == RouterConfig()
    assert RelayConfig.from_mapping("kafka", {"bootstrap_servers": "b"}) == RelayConfig("b")
    for table, required in TABLES_WITH_REQUIRED_KEYS:
        assert read(table, required, "t") == table(**_typed(table, required)), table


def _typed(table: type, raw: dict) -> dict:
    return {name: read(table, raw, "t").__getattribute__(name) for name in raw}


TABLES_WITH_REQUIRED_KEYS = [
    (ServerConfig, {}),
    (DatabaseConfig, {}),
    (PollerConfig, {}),
    (LoggingConfig, {}),
    (BusinessConfig, {}),
    (RouterConfig, {}),
    (FeeSchedule, {}),
    (SandboxSettings, {"base_url": "http://h", "merchant_id": "m", "secret": "s"}),
    (TemplateSettings, {"base_url": "http://h", "merchant_id": "m", "secret": "s"}),
    (AlipayTable, {"app_id": "1"}),
    (WeChatPayTable, {"mchid": "1", "appid": "a", "merchant_serial_no": "n", "apiv3_key": "k" * 32}),
]

# The modules that read configuration; none may write a default of its own next to a key's name.
READERS = [
    "gateway/config.py",
    "gateway/app.py",
    "gateway/store/db.py",
    "gateway/outbox/config.py",
    "routing/config.py",
    "channels/config.py",
    "channels/settings.py",
    "channels/registry.py",
    "channels/sandbox/adapter.py",
    "channels/alipay/adapter.py",
    "channels/wechatpay/adapter.py",
    "channels/_template/adapter.py",
]


def _table_keys() -> set[str]:
    keys: set[str] = set()
    todo: list[type] = [Config, RelayConfig, ChannelRouting, *(table for table, _ in TABLES_WITH_REQUIRED_KEYS)]
    while todo:
        table = todo.pop()
        for f in dataclasses.fields(table):
            keys.add(f.name)
            todo += [t for t in _types_in(typing.get_type_hints(table)[f.name]) if dataclasses.is_dataclass(t)]
    return keys


def _types_in(hint: object) -> list:
    return [hint, *(t for arg in typing.get_args(hint) for t in _types_in(arg))]


def second_defaults(source: str, keys: set[str]) -> list[str]:
    """Calls that pair a key's name with a literal value: ``t.integer("port", 3306)``, ``raw.get("port", 3306)``,
    ``seconds(spec, "timeout_s", 10.0)``, ``text(spec, "x", default="y")``, ``connect_default=3.0``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in {"ConfigError", "ValueError", "join", "getattr", "field", "Field"}:
            continue  # messages and key paths, not values; field(default=...) in a table is the one place
        args = [a for a in node.args if isinstance(a, ast.Constant)]
        named = [a for a in args if isinstance(a.value, str) and a.value in keys]
        values = [a for a in args if a not in named and a.value is not None]
        defaults = [k for k in node.keywords if (k.arg or "").endswith("default") and isinstance(k.value, ast.Constant)]
        if (named and values) or defaults:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_each_default_is_written_once() -> None:
    keys = _table_keys()
    assert {"grpc_port", "timeout_s", "rate_ppm", "batch_size", "timezone", "min_amount"} <= keys
    for module in READERS:
        assert second_defaults((ROOT / module).read_text(), keys) == [], module


def test_the_scan_finds_a_second_default() -> None:
    """The scan above catches what the hand-rolled readers did (taken from the code before the one reader)."""
    old = """
server = ServerConfig(grpc_port=s.integer("grpc_port", 50051, lo=0, hi=65535))
timeout = setting.seconds(spec, "timeout_s", 10.0)
connect, timeout = setting.connect_and_timeout(spec, connect_default=3.0, timeout_default=10.0)
code = setting.text(spec, "withhold_product_code", default="GENERAL_WITHHOLDING")
kafka_enabled = bool(k.get("enabled", False))
"""
    assert len(second_defaults(old, _table_keys())) == 5


# --- environment overrides -----------------------------------------------------------------------------------


def test_environment_values_are_toml_values_else_strings() -> None:
    config = load(
        EXAMPLE,
        environ={
            "PAYGATE_DATABASE__GROUP_COMMIT": "false",
            "PAYGATE_POLLER__SCHEDULE": "[[1, 2], [3.5, 4]]",
            "PAYGATE_SERVER__GRACE_S": "2.5",
            "PAYGATE_SERVER__REPLICA_ID": "gw-1",
            "PAYGATE_BUSINESS__TIMEZONE": "Europe/Berlin",
            "PAYGATE_DATABASE__PASSWORD": "hunter2",
        },
    )
    assert config.database.group_commit is False
    assert config.poller.schedule == ((1.0, 2), (3.5, 4))
    assert config.server.grace_s == 2.5 and config.server.replica_id == "gw-1"
    assert config.business.zone == ZoneInfo("Europe/Berlin")
    assert config.database.password == Secret("hunter2") and "hunter2" not in repr(config)


def test_an_environment_name_reaches_a_dashed_key() -> None:
    config = load(EXAMPLE, environ={"PAYGATE_CALLERS__LOAN_SERVICING__TOKEN": "from-the-environment-123"})
    assert set(config.callers) == {"loan-servicing", "collections"}
    assert config.callers["loan-servicing"].token == Secret("from-the-environment-123")


def test_environment_overrides_reach_every_layer() -> None:
    config = load(
        EXAMPLE,
        environ={
            "PAYGATE_ROUTING__COST_WEIGHT": "2",
            "PAYGATE_KAFKA__BATCH_SIZE": "10",
            "PAYGATE_KAFKA__ENABLED": "true",
            "PAYGATE_SECURITY__ACCOUNT_HASH_KEY": "a-key-from-the-vault",
        },
    )
    assert config.routing.cost_weight == 2.0
    assert config.kafka is not None and config.kafka.batch_size == 10 and config.kafka_enabled
    assert config.account_hash_key == Secret("a-key-from-the-vault")


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"PAYGATE_BOGUS__X": "1"}, "config.bogus"),  # an unknown section is not silently ignored
        ({"PAYGATE_SERVER__GRCP_PORT": "1"}, "server.grcp_port"),
        ({"PAYGATE_SERVER__GRPC_PORT": "not-a-port"}, "server.grpc_port"),
        ({"PAYGATE_DATABASE__POOL_MIN": "50"}, "database.pool_min"),
        ({"PAYGATE_KAFKA__ACKS": "1"}, "kafka.acks"),
        ({"PAYGATE_SERVER____X": "1"}, "PAYGATE_SERVER____X"),
        ({"PAYGATE_LOGGING__FORMAT__X": "1"}, "PAYGATE_LOGGING__FORMAT__X"),
    ],
)
def test_bad_environment_overrides_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(EXAMPLE, environ=environ)
    assert err.value.key == key, str(err.value)
    assert str(err.value).startswith("config error at ")


def test_no_file_and_no_environment_is_the_defaults() -> None:
    assert load(None, environ={}) == Config()


# --- errors name the key, in every section ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"server": []}, "config.server"),
        ({"channels": {"id": "a"}}, "config.channels"),
        ({"server": {"grace_s": float("inf")}}, "server.grace_s"),
        ({"server": {"replica_id": "r" * 65}}, "server.replica_id"),
        ({"database": {"port": 0}}, "database.port"),
        ({"database": {"database": "pay-gate"}}, "database.database"),
        ({"database": {"password": 1234}}, "database.password"),
        ({"security": {"account_hash_key": 7}}, "security.account_hash_key"),
        ({"security": {"salt": "x"}}, "security.salt"),
        ({"callers": {"Bad Name": {"token": "x" * 20}}}, "callers.Bad Name"),
        ({"callers": {"a": {"token": "x" * 20, "tokn": "y"}}}, "callers.a.tokn"),
        ({"callers": {"a": {}}}, "callers.a.token"),
        ({"callers": "a"}, "config.callers"),
        ({"callers": {"a": {"token": "x" * 20}}, "operators": {"o": {"token": "x" * 20}}}, "operators.o.token"),
        ({"channels": [{"id": "a"}]}, "channels[0].adapter"),
        ({"channels": [{"id": "a", "adapter": "sandbox", "key": "x"}]}, "channels[0].key"),
        (
            {"channels": [{"id": "a", "adapter": "sandbox", "poll": {"first_delay_s": -1}}]},
            "channels[0].poll.first_delay_s",
        ),
        (
            {"channels": [{"id": "a", "adapter": "sandbox", "poll": {"schedule": [[1, 1], [1, 0]]}}]},
            "channels[0].poll.schedule[1]",
        ),
        ({"channels": [{"id": "a", "adapter": "sandbox", "routing": []}]}, "channels[0].routing"),
        ({"routing": {"prior_mean": 2}}, "routing.prior_mean"),
        ({"routing": {"elimination_window": 5, "elimination_min_volume": 6}}, "routing.elimination_min_volume"),
        ({"kafka": {"enabled": True}}, "kafka.bootstrap_servers"),
        ({"kafka": {"enabled": "yes"}}, "kafka.enabled"),
        ({"kafka": {"bootstrap_servers": "b", "bacth_size": 1}}, "kafka.bacth_size"),
        ({"poller": {"schedule": []}}, "poller.schedule"),
        ({"poller": {"batch": 1.5}}, "poller.batch"),
        ({"logging": {"level": "TRACE"}}, "logging.level"),
        ({"business": {"timezone": "Asia/Beijing"}}, "business.timezone"),
        ({"business": {"timezone": 8}}, "business.timezone"),
        ({"business": {"tz": "UTC"}}, "business.tz"),
    ],
)
def test_every_section_names_the_bad_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(raw)
    assert err.value.key == key, str(err.value)
    assert str(err.value) == f"config error at {key}: {err.value.problem}"


def test_settings_and_routing_errors_name_the_key_at_start_up() -> None:
    raw = _example()
    raw["channels"][0]["routing"]["fee"]["rate_ppm"] = -1
    with pytest.raises(ConfigError, match=r"^config error at channels\[0\]\.routing\.fee\.rate_ppm: must be >= 0$"):
        _read_everything(raw)
    raw = _example()
    raw["channels"][0]["settings"]["colour"] = "blue"
    with pytest.raises(ConfigError) as err:
        _read_everything(raw)
    assert err.value.key == "channels[0].colour" and "unknown key (known: banks, base_url" in str(err.value)


def test_secrets_never_print() -> None:
    raw = _example()
    raw["database"]["password"] = "db-password-value"
    config = from_mapping(raw)
    text = repr(config) + repr(build_registry(config).get("icbc-sandbox"))
    for secret in ("db-password-value", "change-me-to", "replace-with", "sandbox-secret"):
        assert secret not in text, secret
    assert isinstance(config.database.password, Secret) and config.database.password.reveal() == "db-password-value"
    for bad in ({"callers": {"a": {"token": "short-secret"}}}, {"operators": {"o": {"token": ["a-secret-in-a-list"]}}}):
        with pytest.raises(ConfigError) as err:
            from_mapping(bad)
        assert "secret" not in str(err.value).removeprefix("config error at ")


def test_business_timezone() -> None:
    config = from_mapping({"business": {"timezone": "UTC"}})
    assert config.business.timezone == "UTC" and config.business.zone == ZoneInfo("UTC")
    with pytest.raises(ConfigError, match="not an IANA time zone name"):
        from_mapping({"business": {"timezone": "Mars/Olympus_Mons"}})
