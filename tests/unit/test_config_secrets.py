"""Secrets from files and the environment, never printed; ``paygate config check`` validates and redacts."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from channels.config import collect_secrets, read, secret_fields
from gateway.app import build_registry
from gateway.config import REDACTED, Config, ConfigError, Secret, from_mapping, load, redacted
from gateway.outbox.config import RelayConfig
from gateway.store.db import DatabaseConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "paygate.toml"


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")  # as `echo value > file` writes it
    return str(path)


def test_every_secret_of_every_table_may_come_from_a_file(tmp_path: Path) -> None:
    raw = {
        "database": {"password_file": secret_file(tmp_path, "db", "db-password-from-a-file")},
        "security": {"account_hash_key_file": secret_file(tmp_path, "hash", "hash-key-from-a-file")},
        "callers": {"loans": {"token_file": secret_file(tmp_path, "loans", "loans-token-from-a-file")}},
        "operators": {"ops": {"token_file": secret_file(tmp_path, "ops", "ops-token-from-a-file-00")}},
        "kafka": {
            "bootstrap_servers": "b:9092",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "paygate",
            "sasl_password_file": secret_file(tmp_path, "sasl", "sasl-password-from-a-file"),
        },
        "channels": [
            {
                "id": "bank-a",
                "adapter": "sandbox",
                "settings": {
                    "base_url": "http://127.0.0.1:9",
                    "merchant_id": "m",
                    "secret_file": secret_file(tmp_path, "bank", "channel-key-from-a-file"),
                },
            }
        ],
    }
    config = from_mapping(raw)
    assert config.database.password == Secret("db-password-from-a-file")
    assert config.account_hash_key == Secret("hash-key-from-a-file")
    assert config.callers["loans"].token == Secret("loans-token-from-a-file")
    assert config.operators["ops"].token == Secret("ops-token-from-a-file-00")
    assert config.kafka is not None and config.kafka.sasl_password == Secret("sasl-password-from-a-file")
    channel = build_registry(config).get("bank-a")
    assert channel.settings.secret == Secret("channel-key-from-a-file")  # type: ignore[attr-defined]
    assert "from-a-file" not in repr(config) + repr(channel)


def test_the_tables_that_hold_secrets() -> None:
    assert secret_fields(DatabaseConfig) == ("password",)
    assert secret_fields(RelayConfig) == ("sasl_password",)


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"database": {"password": "x", "password_file": "/etc/hostname"}}, "database.password_file", "only one of"),
        ({"database": {"password_file": "/no/such/file"}}, "database.password_file", "cannot read /no/such/file"),
        ({"database": {"password_file": 12}}, "database.password_file", "path of a file"),
        ({"callers": {"a": {"token_file": "/no/such/token"}}}, "callers.a.token_file", "cannot read"),
        ({"database": {"host_file": "/etc/hostname"}}, "database.host_file", "unknown key"),
    ],
)
def test_secret_file_errors_name_the_key(raw: dict, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(raw)
    assert err.value.key == key and problem in err.value.problem, str(err.value)


def test_a_short_token_from_a_file_is_still_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"callers": {"a": {"token_file": secret_file(tmp_path, "t", "short-secret")}}})
    assert err.value.key == "callers.a.token" and "short-secret" not in str(err.value)


def test_the_environment_replaces_the_files_secret_in_either_form(tmp_path: Path) -> None:
    toml = tmp_path / "paygate.toml"
    toml.write_text('[database]\npassword = "from-the-file"\n[callers.loans]\ntoken = "token-in-the-toml-file"\n')
    path = secret_file(tmp_path, "db", "from-a-secret-file")
    config = load(toml, environ={"PAYGATE_DATABASE__PASSWORD_FILE": path})
    assert config.database.password == Secret("from-a-secret-file")
    config = load(toml, environ={"PAYGATE_CALLERS__LOANS__TOKEN": "token-from-the-environment"})
    assert config.callers["loans"].token == Secret("token-from-the-environment")
    toml.write_text(f'[database]\npassword_file = "{path}"\n')
    config = load(toml, environ={"PAYGATE_DATABASE__PASSWORD": "from-the-environment"})
    assert config.database.password == Secret("from-the-environment")


def test_collected_secrets_and_the_redacted_printout(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    raw["database"]["password_file"] = secret_file(tmp_path, "db", "db-password-value")
    with collect_secrets() as seen:
        config = from_mapping(raw)
        build_registry(config)
    assert {"db-password-value", "sandbox-secret", "replace-with-a-long-random-token-1"} <= seen
    shown = redacted(config, seen)
    assert shown["database"]["password"] == REDACTED
    assert shown["callers"]["loan-servicing"]["token"] == REDACTED
    assert shown["channels"][0]["settings"]["secret"] == REDACTED  # known only by value
    assert shown["channels"][0]["settings"]["merchant_id"] == "sandbox-merchant"
    assert redacted(Config())["database"]["password"] == ""  # that none is set is no secret
    text = repr(shown)
    for secret in seen:
        assert secret not in text, secret


def _config_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_config_check_prints_the_configuration_with_secrets_redacted(tmp_path: Path) -> None:
    secrets = {
        "PAYGATE_DATABASE__PASSWORD": "db-password-from-env",
        "PAYGATE_CALLERS__COLLECTIONS__TOKEN_FILE": secret_file(tmp_path, "t", "collections-token-from-a-file"),
    }
    done = _config_check("--config", str(EXAMPLE), env=secrets)
    assert done.returncode == 0, done.stderr
    printed = tomllib.loads(done.stdout)
    assert printed["database"]["password"] == REDACTED
    assert printed["callers"]["collections"]["token"] == REDACTED
    assert printed["channels"][0]["settings"]["secret"] == REDACTED
    assert printed["server"]["grpc_port"] == 50051
    output = done.stdout + done.stderr
    for value in (
        "db-password-from-env",
        "collections-token-from-a-file",
        "replace-with-a-long-random-token",
        "change-me-to-a-long-random-secret",
        "sandbox-secret",
    ):
        assert value not in output, value
    assert read(Config, {}) == Config()


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server.tls]\ncert_file = "/no/such/cert.pem"\nkey_file = "/no/such/key.pem"\n')
    done = _config_check("--config", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith("paygate: config error at server.tls.cert_file: cannot read /no/such/cert.pem")
    assert done.stdout == ""
