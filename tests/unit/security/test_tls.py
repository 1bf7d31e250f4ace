"""gateway/security/tls.py: files checked before they are served, re-read when they change, expiry as a metric."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from devstack.certs import DevCA, Issued
from gateway.config import ConfigError
from gateway.metrics import REGISTRY, CertificateExpiry
from gateway.security.tls import CertificateWatcher, TlsConfig, load_material, plaintext_warnings


@pytest.fixture
def ca() -> DevCA:
    return DevCA.create("unit CA")


def server_cert(ca: DevCA, **kw: object) -> Issued:
    return ca.issue("paygate", dns=["localhost"], ips=["127.0.0.1"], server=True, **kw)  # type: ignore[arg-type]


def files(tmp_path: Path, ca: DevCA, issued: Issued, *, mutual: bool = True) -> TlsConfig:
    cert, key = issued.write(tmp_path, "server")
    return TlsConfig(
        cert_file=str(cert),
        key_file=str(key),
        client_ca_file=str(ca.write(tmp_path)) if mutual else "",
        reload_check_s=0.1,
    )


def test_good_files_load(tmp_path: Path, ca: DevCA) -> None:
    issued = server_cert(ca)
    material = load_material(files(tmp_path, ca, issued), "server.tls")
    assert material.leaf.serial_number == issued.serial
    assert material.client_ca_not_after == ca.certificate.not_valid_after_utc
    assert "BEGIN" not in repr(material).split("chain_pem")[0] + material.describe()


def test_what_loading_refuses(tmp_path: Path, ca: DevCA) -> None:
    config = files(tmp_path, ca, server_cert(ca))

    def refused(**changes: str) -> ConfigError:
        with pytest.raises(ConfigError) as err:
            load_material(TlsConfig(**{**config.__dict__, **changes}), "server.tls")
        return err.value

    other = server_cert(ca)
    other.write(tmp_path, "other")
    assert refused(key_file=str(tmp_path / "other.key")).key == "server.tls.key_file"
    assert "does not belong" in refused(key_file=str(tmp_path / "other.key")).problem
    assert refused(cert_file=str(tmp_path / "nope.pem")).key == "server.tls.cert_file"
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert "no PEM certificate" in refused(cert_file=str(tmp_path / "junk.pem")).problem
    assert refused(client_ca_file=str(tmp_path / "junk.pem")).key == "server.tls.client_ca_file"
    assert "PEM private key" in refused(key_file=str(tmp_path / "junk.pem")).problem
    expired = server_cert(ca, valid_from=datetime.now(UTC) - timedelta(days=3), days=1)
    expired.write(tmp_path, "expired")
    err = refused(cert_file=str(tmp_path / "expired.pem"), key_file=str(tmp_path / "expired.key"))
    assert err.key == "server.tls.cert_file" and "expired" in err.problem
    # no message quotes the key file's content
    for problem in (refused(key_file=str(tmp_path / "other.key")).problem,):
        assert "PRIVATE KEY" not in problem


def expiry(listener: str, cert: str) -> float:
    value = REGISTRY.get_sample_value(
        "paygate_tls_certificate_expires_in_seconds", {"listener": listener, "cert": cert}
    )
    assert value is not None
    return value


def test_refresh_swaps_only_good_changed_files(tmp_path: Path, ca: DevCA) -> None:
    config = files(tmp_path, ca, server_cert(ca, days=5))
    watcher = CertificateWatcher(config, "server.tls", "unit-a")
    assert watcher.generation == 1 and 4 * 86400 < expiry("unit-a", "server") <= 5 * 86400
    assert watcher.refresh() is False  # nothing changed
    rotated = server_cert(ca, days=2)
    rotated.write(tmp_path, "server")
    assert watcher.refresh() is True
    assert watcher.generation == 2 and watcher.material.leaf.serial_number == rotated.serial
    assert 86400 < expiry("unit-a", "server") <= 2 * 86400
    # a half-done rotation (a new certificate, the old key) is refused; the last good one stays
    (tmp_path / "server.pem").write_bytes(server_cert(ca).cert_pem)
    assert watcher.refresh() is False
    assert watcher.generation == 2 and watcher.material.leaf.serial_number == rotated.serial
    assert watcher.refresh() is False  # and not retried until the files change again


def test_a_watcher_does_not_start_on_bad_files(tmp_path: Path, ca: DevCA) -> None:
    config = files(tmp_path, ca, server_cert(ca))
    (tmp_path / "server.key").write_bytes(server_cert(ca).key_pem)
    with pytest.raises(ConfigError):
        CertificateWatcher(config, "server.tls", "unit-b")


def test_the_expiry_gauge_falls_by_itself() -> None:
    now = [1_000_000.0]
    collector = CertificateExpiry(clock=lambda: now[0])
    collector.set("grpc", "server", 1_000_000.0 + 86400)
    [family] = collector.collect()
    assert [(s.labels, s.value) for s in family.samples] == [({"listener": "grpc", "cert": "server"}, 86400.0)]
    now[0] += 86400 + 10
    [family] = collector.collect()
    assert family.samples[0].value == -10.0  # expired: negative
    collector.forget("grpc", "server")
    assert next(iter(collector.collect())).samples == []


async def _https_get(port: int, ca: DevCA, client: Issued | None, folder: Path) -> x509.Certificate:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if client is not None:
        context.load_cert_chain(*client.write(folder, "client"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()


async def test_the_http_listener_serves_the_rotated_certificate_to_new_connections(tmp_path: Path, ca: DevCA) -> None:
    config = files(tmp_path, ca, server_cert(ca))
    watcher = CertificateWatcher(config, "server.http_tls", "unit-http")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=watcher.ssl_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ca.issue("bank-a", dns=["bank-a.example"])
    try:
        first = await _https_get(port, ca, client, tmp_path)
        assert first.serial_number == watcher.material.leaf.serial_number
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            await _https_get(port, ca, None, tmp_path)  # mutual: no client certificate, no answer
        rotated = server_cert(ca)
        rotated.write(tmp_path, "server")
        assert await asyncio.to_thread(watcher.refresh)
        assert (await _https_get(port, ca, client, tmp_path)).serial_number == rotated.serial
    finally:
        await runner.cleanup()


def test_what_start_up_warns_about() -> None:
    tls = TlsConfig(cert_file="c", key_file="k", client_ca_file="ca")
    assert plaintext_warnings(tls, tls, public_callback_base="") == []
    [grpc_warning, http_warning] = plaintext_warnings(TlsConfig(), TlsConfig(), public_callback_base="")
    assert "gRPC listener is plaintext" in grpc_warning and "callback listener is plaintext" in http_warning
    behind_a_balancer = plaintext_warnings(tls, TlsConfig(), public_callback_base="https://pay.lender.example")
    assert behind_a_balancer == []
    server_only = plaintext_warnings(TlsConfig(cert_file="c", key_file="k"), tls, public_callback_base="")
    assert len(server_only) == 1 and "token only" in server_only[0]
