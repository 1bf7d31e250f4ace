"""The ``[console]`` table: the operations console's HTTP server, its sessions and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field

from channels.config import TABLE, ConfigError, Secret, join
from gateway.security.tls import TlsConfig

Port = Annotated[int, Field(ge=0, le=65535)]  # 0 picks a free port


@dataclass(frozen=True)
class ConsoleConfig:
    """``[console]``: off unless ``enabled``; every replica given the same ``secret_key`` accepts the same sessions."""

    __pydantic_config__ = TABLE

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8090
    # signs the session cookies and CSRF tokens (HMAC-SHA256): 32+ characters, the same on every replica
    secret_key: Secret = Secret("")
    # a session ends this long after sign-in, whatever happens ...
    session_lifetime_s: Annotated[float, Field(ge=60, le=7 * 86400)] = 12 * 3600.0
    # ... and after this long without a request
    session_idle_s: Annotated[float, Field(ge=60, le=86400)] = 1800.0
    # mark cookies Secure: set it when operators reach the console over HTTPS (a TLS-terminating proxy);
    # with [console.tls] they are Secure anyway
    secure_cookies: bool = False
    # [console.tls]: serve HTTPS with this certificate and key (re-read while serving, like [server.tls])
    tls: TlsConfig = field(default_factory=TlsConfig)
    # operators may sign in with their operator token as well as with a password
    token_sign_in: bool = True
    # the Prometheus (or Alertmanager) page the overview links to for alerts; "" shows none
    prometheus_url: str = ""
    # a console query running longer is stopped (MariaDB max_statement_time): narrow the search instead
    query_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    page_size: Annotated[int, Field(ge=10, le=500)] = 50
    export_max_rows: Annotated[int, Field(ge=1, le=5_000_000)] = 200_000
    # failed sign-ins per operator name (and per client address) within 15 minutes before sign-in pauses
    sign_in_attempts: Annotated[int, Field(ge=1, le=1000)] = 10

    def check_config(self, key: str) -> None:
        if self.enabled and len(self.secret_key.reveal()) < 32:
            raise ConfigError(join(key, "secret_key"), "must be at least 32 characters when the console is enabled")
        if self.session_idle_s > self.session_lifetime_s:
            raise ConfigError(join(key, "session_idle_s"), f"must be <= {join(key, 'session_lifetime_s')}")
        if self.prometheus_url and not self.prometheus_url.startswith(("http://", "https://")):
            raise ConfigError(join(key, "prometheus_url"), "must be an http:// or https:// URL")
