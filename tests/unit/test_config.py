from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, Secret, apply_env, from_mapping, load

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


def test_secret_never_prints() -> None:
    s = Secret("top-secret-value")
    assert "top-secret" not in repr(s) and "top-secret" not in str(s) and "top-secret" not in f"{s}"
    assert s.reveal() == "top-secret-value"


def test_apply_env_rejects_malformed_names() -> None:
    with pytest.raises(ConfigError):
        apply_env({}, {"PAYGATE_SERVER____X": "1"})
