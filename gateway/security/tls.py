"""TLS for the gateway's listeners: PEM files, checked when read, re-read while serving, expiry as a metric.

One table, :class:`TlsConfig`, serves every listener: ``[server.tls]`` (gRPC) and
``[server.http_tls]`` (channel callbacks) and ``[console.tls]`` (the operations console; it builds
a :class:`CertificateWatcher` and takes :meth:`CertificateWatcher.ssl_context`). A listener without a
``cert_file`` is plaintext (the composition root warns at start-up).

Reloading without a restart: :meth:`CertificateWatcher.refresh` (called every ``reload_check_s`` by
the composition root, off the event loop) looks at the files' size, modification time and inode;
when any changed, it reads and checks them all again (the key matches the certificate, the chain
parses, the CA file parses) and only then swaps them in. New connections use the new certificate;
open ones keep theirs (gRPC: the certificate fetcher that ``grpc.dynamic_ssl_server_credentials``
calls before each handshake; HTTP: an SNI callback that hands each handshake the current
``ssl.SSLContext``). A half-written or mismatched pair is refused, logged, counted
(``paygate_tls_reloads_total{result="rejected"}``) and the old certificate stays; the next change is
tried again. Rotate by writing the new files and renaming them over the old (both files within one
``reload_check_s``, key first: a mismatch in between is refused and retried, never served).

``paygate_tls_certificate_expires_in_seconds{listener, cert}`` says how long the served certificate
and the client CA have left (deploy/prometheus/rules/paygate.rules.yml alerts before they run out).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import Field

from channels.config import TABLE, ConfigError, join
from gateway import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsConfig:
    """One listener's TLS: ``[server.tls]`` (gRPC), ``[server.http_tls]`` (callbacks), ... ; "" = plaintext."""

    __pydantic_config__ = TABLE

    cert_file: str = ""  # the listener's certificate chain (PEM, leaf first); "" = plaintext
    key_file: str = ""  # its private key (PEM, unencrypted: keep the file 0600)
    # CA certificates (PEM) client certificates must chain to; set = mutual TLS (a client certificate is required)
    client_ca_file: str = ""
    reload_check_s: Annotated[float, Field(ge=0.05, le=3600)] = 10.0  # how often the files are looked at

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca_file)

    def check_config(self, key: str) -> None:
        if self.cert_file and not self.key_file:
            raise ConfigError(join(key, "key_file"), "required with cert_file")
        if self.key_file and not self.cert_file:
            raise ConfigError(join(key, "cert_file"), "required with key_file")
        if self.client_ca_file and not self.cert_file:
            raise ConfigError(join(key, "client_ca_file"), "mutual TLS needs the listener's own cert_file and key_file")


@dataclass(frozen=True)
class TlsMaterial:
    """The checked contents of a listener's files."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)  # no default: required like the others
    client_ca_pem: bytes | None
    leaf: x509.Certificate
    client_ca_not_after: datetime | None

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    def describe(self) -> str:
        """The leaf's subject, serial and expiry (for a log line; nothing secret)."""
        return (
            f"{self.leaf.subject.rfc4514_string()[:120]} serial {self.leaf.serial_number:x}"
            f" valid until {self.not_after:%Y-%m-%d %H:%M} UTC"
        )


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path} ({type(exc).__name__})") from None


def _certificates(pem: bytes, key: str, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError:
        found = []
    if not found:
        raise ConfigError(key, f"holds no PEM certificate ({what})")
    return found


def _same_key(private: PrivateKeyTypes, certificate: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = private.public_key().public_bytes(serialization.Encoding.PEM, spki)
    return mine == certificate.public_key().public_bytes(serialization.Encoding.PEM, spki)


def load_material(config: TlsConfig, key: str, *, now: datetime | None = None) -> TlsMaterial:
    """Read and check a listener's files; raises ConfigError naming the file's key (``<key>.cert_file`` ...).

    Refused: unreadable files, no certificate, a key that is not PEM (or encrypted), a key that does
    not belong to the first certificate, a certificate that has expired or is not yet valid, a CA
    file without a certificate. Error messages never quote a file's contents.
    """
    now = now or datetime.now(UTC)
    cert_key, key_key, ca_key = join(key, "cert_file"), join(key, "key_file"), join(key, "client_ca_file")
    chain_pem = _read(config.cert_file, cert_key)
    leaf = _certificates(chain_pem, cert_key, "the listener's certificate, leaf first")[0]
    key_pem = _read(config.key_file, key_key)
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(key_key, "is not an unencrypted PEM private key") from None
    if not _same_key(private, leaf):
        raise ConfigError(key_key, f"does not belong to the certificate in {config.cert_file}")
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(cert_key, f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            cert_key, f"the certificate is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    ca_pem: bytes | None = None
    ca_not_after: datetime | None = None
    if config.client_ca_file:
        ca_pem = _read(config.client_ca_file, ca_key)
        cas = _certificates(ca_pem, ca_key, "the CA client certificates must chain to")
        ca_not_after = min(ca.not_valid_after_utc for ca in cas)
    return TlsMaterial(chain_pem, key_pem, ca_pem, leaf, ca_not_after)


def _signature(config: TlsConfig) -> tuple[tuple[int, int, int] | None, ...]:
    """What changes when a file is rewritten or replaced: (inode, size, mtime) of each file."""
    out: list[tuple[int, int, int] | None] = []
    for path in (config.cert_file, config.key_file, config.client_ca_file):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        out.append((st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None)
    return tuple(out)


class CertificateWatcher:
    """One listener's certificates: loaded at construction, re-read by :meth:`refresh` when the files change.

    ``listener`` names it in logs and metrics (``grpc``, ``http``); ``key`` is its config path
    (``server.tls``). Construction raises ConfigError when the files do not check out: a gateway
    does not start with a listener it cannot serve. Thread-safe: gRPC calls the certificate fetcher
    from its own threads.
    """

    def __init__(self, config: TlsConfig, key: str, listener: str) -> None:
        if not config.enabled:
            raise ValueError(f"{key}: no cert_file, nothing to watch")
        self.config = config
        self.key = key
        self.listener = listener
        self._lock = threading.Lock()
        self._seen = _signature(config)
        self._material = load_material(config, key)
        self.generation = 1
        self._on_change: list[Callable[[TlsMaterial], None]] = []
        self._publish(self._material)
        log.info("TLS certificate loaded for %s: %s", listener, self._material.describe())

    @property
    def material(self) -> TlsMaterial:
        return self._material

    def refresh(self) -> bool:
        """Re-read the files if they changed since last looked at; True when new certificates were swapped in.

        Blocking (file reads): call it through ``asyncio.to_thread`` from the event loop.
        """
        with self._lock:
            seen = _signature(self.config)
            if seen == self._seen:
                return False
            self._seen = seen
            try:
                material = load_material(self.config, self.key)
            except ConfigError as exc:
                metrics.TLS_RELOADS.labels(listener=self.listener, result="rejected").inc()
                log.error(
                    "TLS certificate files for %s changed but were refused (still serving the old ones): %s",
                    self.listener,
                    exc,
                )
                return False
            self._material = material
            self.generation += 1
            callbacks = list(self._on_change)
        for callback in callbacks:
            callback(material)
        self._publish(material)
        metrics.TLS_RELOADS.labels(listener=self.listener, result="loaded").inc()
        log.warning("TLS certificate reloaded for %s: %s", self.listener, material.describe())
        return True

    def _publish(self, material: TlsMaterial) -> None:
        metrics.TLS_CERTIFICATE_EXPIRY.set(self.listener, "server", material.not_after.timestamp())
        if material.client_ca_not_after is not None:
            metrics.TLS_CERTIFICATE_EXPIRY.set(self.listener, "client_ca", material.client_ca_not_after.timestamp())
        else:
            metrics.TLS_CERTIFICATE_EXPIRY.forget(self.listener, "client_ca")

    # --- gRPC ----------------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials whose certificates follow :meth:`refresh`; a client certificate is required
        (and verified against the client CA) when ``client_ca_file`` is set."""
        served = [self.generation]

        def configuration(material: TlsMaterial) -> Any:
            return grpc.ssl_server_certificate_configuration(
                [(material.key_pem, material.chain_pem)], root_certificates=material.client_ca_pem
            )

        def fetch() -> Any:
            # called by gRPC before every handshake, on its own thread: no I/O here, only a swap
            generation, material = self.generation, self._material
            if generation == served[0]:
                return None
            served[0] = generation
            return configuration(material)

        return grpc.dynamic_ssl_server_credentials(
            configuration(self._material), fetch, require_client_authentication=self.config.mutual
        )

    # --- HTTP (aiohttp, and any ssl-module server) -------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A server ``SSLContext`` whose handshakes use the current certificates (swapped in by an SNI
        callback, which runs for every handshake, with or without a server name). Mutual when
        ``client_ca_file`` is set: a client certificate chaining to it is required."""
        current = [self._context(self._material)]

        def changed(material: TlsMaterial) -> None:
            try:
                current[0] = self._context(material)
            except (ssl.SSLError, OSError) as exc:  # the files moved again between the check and this read
                log.error("TLS context for %s not rebuilt (%s); the old one stays", self.listener, type(exc).__name__)

        self._on_change.append(changed)
        base = self._context(self._material)

        def pick(sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sock.context = current[0]

        base.sni_callback = pick
        return base

    def _context(self, material: TlsMaterial) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # the ssl module loads a chain and key from files only; they were checked a moment ago
        ctx.load_cert_chain(self.config.cert_file, self.config.key_file)
        if material.client_ca_pem is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=material.client_ca_pem.decode("ascii", errors="replace"))
        return ctx


def plaintext_warnings(grpc_tls: TlsConfig, http_tls: TlsConfig, *, public_callback_base: str) -> list[str]:
    """What the start-up log warns about a configuration that serves something in the clear."""
    out = []
    if not grpc_tls.enabled:
        out.append(
            "gRPC listener is plaintext (no [server.tls] cert_file): tokens, card and id numbers cross the"
            " network readable by anyone on the path; use this for local runs only"
        )
    elif not grpc_tls.mutual:
        out.append(
            "gRPC listener has TLS without client certificates (no [server.tls] client_ca_file):"
            " callers are known by token only"
        )
    if not http_tls.enabled and not public_callback_base.startswith("https://"):
        out.append(
            "callback listener is plaintext and public_callback_base is not https://: terminate TLS at a load"
            " balancer in front of it, or set [server.http_tls]"
        )
    return out
