"""deploy/docker-compose.yml, Dockerfile and deploy/paygate.docker.toml: structure and cross-references.

No Docker engine runs here, so these checks read the files: services, images, dependencies,
health checks, mounts of files that exist, ports that agree with the gateway configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from channels.registry import ChannelSpec, factory_for
from gateway import cli
from gateway.config import load
from tests.unit.deploy.conftest import DEPLOY, ROOT

SERVICES = {"mariadb", "kafka", "sandbox", "gateway", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def config():
    return load(DEPLOY / "paygate.docker.toml", environ={})


def _binds(service: dict) -> dict[str, str]:
    """container path -> host path (relative to deploy/) for bind mounts."""
    binds = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            binds[target] = source
    return binds


def test_services_and_images(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("image"), name
        tag = service["image"].rpartition(":")[2]
        assert tag and tag != "latest" and "/" not in tag, f"{name}: pin the image tag"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["mariadb"]["image"].startswith("mariadb:")
    for name in ("gateway", "sandbox"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"


def test_every_service_has_a_healthcheck(compose: dict) -> None:
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name


def test_dependencies(compose: dict) -> None:
    services = compose["services"]

    def deps(name: str) -> dict:
        return services[name].get("depends_on", {})

    assert {"mariadb", "kafka", "sandbox"} <= set(deps("gateway"))
    assert deps("gateway")["mariadb"]["condition"] == "service_healthy"
    assert deps("gateway")["kafka"]["condition"] == "service_healthy"
    assert "gateway" in deps("prometheus")
    assert "prometheus" in deps("grafana")
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, which has no healthcheck"


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} not declared"


def test_ports_agree_with_the_gateway_config(compose: dict, config) -> None:
    services = compose["services"]
    published = {p.split(":")[-1] for p in services["gateway"]["ports"]}
    assert {str(config.server.grpc_port), str(config.server.metrics_port)} <= published
    for name, service in services.items():
        for port in service.get("ports", []):
            assert re.fullmatch(r"\d+:\d+", port), f"{name}: quote ports as 'host:container'"
    # the containers must listen beyond loopback to be reachable
    assert config.server.grpc_host == config.server.metrics_host == config.server.http_host == "0.0.0.0"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "paygate"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"gateway:{config.server.metrics_port}"]


def test_gateway_config_matches_the_other_services(compose: dict, config) -> None:
    services = compose["services"]
    assert _binds(services["gateway"])["/etc/paygate/paygate.toml"] == "./paygate.docker.toml"
    db_env = services["mariadb"]["environment"]
    assert (
        config.database.host,
        config.database.user,
        config.database.password.reveal(),
        config.database.database,
    ) == (
        "mariadb",
        db_env["MARIADB_USER"],
        db_env["MARIADB_PASSWORD"],
        db_env["MARIADB_DATABASE"],
    )
    relay = config.kafka
    assert config.kafka_enabled and relay is not None and relay.bootstrap_servers == "kafka:9092"
    assert relay.topic_replication_factor == 1  # one broker
    (channel,) = config.channels
    built = factory_for(channel.adapter)(
        ChannelSpec(channel.channel_id, channel.adapter, channel.settings, channel.key)
    )
    assert built is not None
    command = services["sandbox"]["command"]
    assert command[0] == "sandbox"
    assert command[command.index("--secret") + 1] == channel.settings["secret"]
    assert command[command.index("--merchant-id") + 1] == channel.settings["merchant_id"]
    assert channel.settings["base_url"] == f"http://sandbox:{command[command.index('--port') + 1]}"
    assert services["gateway"]["command"][0] == "serve"


def test_prometheus_and_grafana_mounts(compose: dict) -> None:
    services = compose["services"]
    prom_binds = _binds(services["prometheus"])
    assert prom_binds["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for pattern in prometheus["rule_files"]:
        container_dir = str(Path("/etc/prometheus", pattern).parent)
        assert container_dir in prom_binds, f"rule_files {pattern} is not mounted"
        assert list((DEPLOY / prom_binds[container_dir]).glob(Path(pattern).name))
    graf_binds = _binds(services["grafana"])
    assert graf_binds["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/paygate.yml").read_text())["providers"][0]
    assert graf_binds[provider["options"]["path"]] == "./grafana/dashboards"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", dockerfile)
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = _stages(dockerfile)
    assert len(stages) >= 2
    assert re.match(r"FROM \S+ AS builder", stages[0][0], re.IGNORECASE)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    runtime = stages[-1]
    assert any(line.startswith("COPY --from=builder") for line in runtime)
    assert not any("pip wheel" in line or "build-essential" in line for line in runtime)
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (health,) = [line for line in runtime if line.startswith("HEALTHCHECK")]
    assert '"paygate", "health", "--address", "127.0.0.1:50051"' in health
    exposed = {port for line in runtime if line.startswith("EXPOSE") for port in line.split()[1:]}
    assert {"50051", "8080", "9464"} <= exposed
    assert any(line.startswith('ENTRYPOINT ["paygate"]') for line in runtime)
    builder = " ".join(stages[0])
    assert "pip wheel" in builder and "/opt/paygate" in builder


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests"} <= ignored
    # the image copies this file, so it must stay in the build context
    assert "deploy" not in ignored and "deploy/paygate.docker.toml" not in ignored


@pytest.mark.parametrize("command", ["serve", "sandbox", "health"])
def test_cli_commands_used_by_the_containers_exist(command: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
