"""Gateway configuration for development stacks.

:func:`gateway_config` builds the mapping ``gateway.config.from_mapping``
reads (the in-process gateway of the integration tests takes it as it is);
:func:`write_config` writes it as the TOML file ``paygate serve`` reads, with
a TOML library (tomli-w) rather than by formatting strings, so every value is
quoted and escaped as TOML wants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from devstack.processes import free_ports


@dataclass(frozen=True)
class GatewayPorts:
    """Where one gateway listens on 127.0.0.1: gRPC, channel callbacks (HTTP), metrics. 0 picks any free port.

    ``console`` is the operations console's port when the stack enables it (its ``[console] port``), else 0.
    """

    grpc: int
    http: int
    metrics: int
    console: int = 0

    @classmethod
    def free(cls, *, console: bool = False) -> GatewayPorts:
        """Fixed, different ports, free a moment ago: a restarted gateway is reachable where the old one was.

        ``console`` picks the console's port too (with the others, so it differs from them).
        """
        return cls(*free_ports(4 if console else 3))

    def server_settings(self) -> dict[str, int]:
        return {"grpc_port": self.grpc, "http_port": self.http, "metrics_port": self.metrics}


def gateway_config(
    ports: GatewayPorts,
    *,
    database: Mapping[str, Any],
    callers: Mapping[str, str | Mapping[str, Any]],
    operators: Mapping[str, str | Mapping[str, Any]] | None = None,
    channels: Iterable[Mapping[str, Any]],
    server: Mapping[str, Any] | None = None,
    kafka: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any],
) -> dict[str, Any]:
    """One gateway's configuration.

    ``callers`` and ``operators`` map a name to its token, or to its whole table (``token``, ``san``,
    ``auth``; an operator's ``role``); ``server`` adds to
    the ports; ``kafka`` is the whole ``[kafka]`` section (see
    :func:`devstack.kafka.gateway_kafka`), left out when None; ``sections``
    are further sections as they are (``poller``, ``logging``, ``routing``,
    ``security`` ...).
    """
    config: dict[str, Any] = {
        "server": {**ports.server_settings(), **(server or {})},
        "database": dict(database),
        "callers": _principals(callers),
        **({"operators": _principals(operators)} if operators else {}),
        **{name: dict(values) for name, values in sections.items()},
    }
    if kafka is not None:
        config["kafka"] = dict(kafka)
    config["channels"] = [dict(channel) for channel in channels]
    return config


def _principals(tables: Mapping[str, str | Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {"token": t} if isinstance(t, str) else dict(t) for name, t in tables.items()}


def sandbox_channel(
    channel_id: str,
    base_url: str,
    *,
    merchant_id: str,
    secret: str,
    timeout_s: float,
    routing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``[[channels]]`` entry for a sandbox bank at ``base_url``; ``routing`` is its ``[channels.routing]``."""
    channel: dict[str, Any] = {
        "id": channel_id,
        "adapter": "sandbox",
        "settings": {"base_url": base_url, "merchant_id": merchant_id, "secret": secret, "timeout_s": timeout_s},
    }
    if routing:
        channel["routing"] = dict(routing)
    return channel


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config`` to ``path`` as TOML; returns ``path``."""
    with path.open("wb") as out:
        tomli_w.dump(config, out)
    return path
