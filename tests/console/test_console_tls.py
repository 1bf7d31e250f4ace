"""The console over TLS (``[console.tls]``): HTTPS with the configured certificate, the session cookie
Secure; a client that does not trust the certificate, or speaks plain HTTP to the port, gets no page.
The plain-HTTP side (the demo's: no Secure) is checked by tests/console/test_browser_plans.py
(test_the_plans_screen_shows_the_runs_instalments_and_progress)."""

from __future__ import annotations

import re
import ssl
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest

from channels.simkit import Behaviour
from devstack.certs import DevCA
from gateway.config import ConfigError
from gateway.console.sessions import COOKIE
from gateway.store.db import DatabaseConfig
from tests.support.harness import OPERATOR_TOKEN, running_gateway

SECRET = "console-tls-test-secret-0123456789abcdef"


def _set_cookies(response: aiohttp.ClientResponse) -> dict[str, SimpleCookie]:
    out: dict[str, SimpleCookie] = {}
    for header in response.headers.getall("Set-Cookie", []):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            out[name] = cookie
    return out


async def test_the_console_over_tls_serves_https_and_marks_the_session_cookie_secure(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    ca = DevCA.create("console test CA")
    server = ca.issue("paygate console", dns=["localhost"], ips=["127.0.0.1"], server=True)
    cert, key = server.write(tmp_path, "console")
    console = {
        "enabled": True,
        "port": 0,
        "secret_key": SECRET,
        "tls": {"cert_file": str(cert), "key_file": str(key)},
    }
    async with running_gateway(db_config, {"bank-a": Behaviour()}, console=console) as h:
        base = f"https://127.0.0.1:{h.gateway.console_port}"
        trust = ssl.create_default_context(cadata=ca.cert_pem.decode())
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=trust)) as s:
            form = await s.get(f"{base}/login")
            assert form.status == 200 and form.url.scheme == "https"
            csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
            assert csrf is not None
            signed_in = await s.post(
                f"{base}/login", data={"csrf": csrf.group(1), "token": OPERATOR_TOKEN}, allow_redirects=False
            )
            assert signed_in.status == 303, await signed_in.text()
            session = _set_cookies(signed_in)[COOKIE][COOKIE]
            assert session["secure"] is True and session["httponly"] is True and session["samesite"] == "Strict"
            page = await s.get(f"{base}/flows")
            assert page.status == 200 and "/login" not in str(page.url)
        # a client that does not trust the certificate never gets a page, and plain HTTP on the port none either
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"{base}/login")
            with pytest.raises(aiohttp.ClientError):
                answer = await s.get(f"http://127.0.0.1:{h.gateway.console_port}/login")
                assert answer.status >= 400  # aiohttp may answer the TLS port's refusal as a 400
                raise aiohttp.ClientError("refused")


def test_a_console_key_without_its_certificate_is_refused_naming_the_key() -> None:
    from gateway.config import from_mapping

    with pytest.raises(ConfigError, match=r"console\.tls\.cert_file"):
        from_mapping({"console": {"tls": {"key_file": "/etc/paygate/console.key"}}})


def test_a_console_certificate_that_does_not_check_out_is_refused_naming_the_file(tmp_path: Path) -> None:
    from gateway.console.config import ConsoleConfig
    from gateway.security.tls import CertificateWatcher, TlsConfig

    ca = DevCA.create("console test CA")
    cert, _ = ca.issue("paygate console", ips=["127.0.0.1"], server=True).write(tmp_path, "console")
    _, other_key = ca.issue("someone else", ips=["127.0.0.1"], server=True).write(tmp_path, "other")
    table = ConsoleConfig(tls=TlsConfig(cert_file=str(cert), key_file=str(other_key))).tls
    # what gateway/app.py builds for the console's listener before it serves
    with pytest.raises(ConfigError, match=r"console\.tls\.key_file"):
        CertificateWatcher(table, key="console.tls", listener="console")
