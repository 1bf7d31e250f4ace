"""A throw-away certificate authority for development stacks and tests (``cryptography``).

:class:`DevCA` makes a CA and issues server and client certificates (ECDSA P-256), written as PEM
files the gateway's ``[server.tls]`` reads and gRPC clients load::

    ca = DevCA.create("paygate demo CA")
    server = ca.issue("gateway", dns=["localhost"], ips=["127.0.0.1"], server=True)
    client = ca.issue("loan-servicing", uris=["spiffe://lender.example/loan-servicing"])
    server.write(workdir / "tls", "server")          # server.pem, server.key (0600)
    ca.write(workdir / "tls")                         # ca.pem

Never for production: the keys are made on the spot, unencrypted, and the CA signs whatever it
is asked to.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    """A certificate with its key, and the chain up to (not including) the root."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """``<stem>.pem`` and ``<stem>.key`` (mode 0600) in ``folder``; each replaced atomically (a rename),
        key first, as a rotation should be done."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        _replace(key_path, self.key_pem, mode=0o600)
        _replace(cert_path, self.cert_pem, mode=0o644)
        return cert_path, key_path


def _replace(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


@dataclass(frozen=True)
class DevCA:
    """A self-signed CA that issues certificates for 127.0.0.1 development stacks and tests."""

    name: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def create(cls, name: str = "paygate development CA", *, days: int = 30) -> DevCA:
        key = _key()
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, certificate, key)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, folder: Path, stem: str = "ca") -> Path:
        """``<stem>.pem`` (the CA certificate) in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.pem"
        _replace(path, self.cert_pem, mode=0o644)
        return path

    def issue(
        self,
        common_name: str,
        *,
        dns: list[str] | tuple[str, ...] = (),
        ips: list[str] | tuple[str, ...] = (),
        uris: list[str] | tuple[str, ...] = (),
        server: bool = False,
        valid_from: datetime | None = None,
        days: float = 7,
    ) -> Issued:
        """A leaf certificate with these SANs, for a server (``server=True``) or a client.

        ``valid_from`` and ``days`` place its validity (an expired one for a test: a ``valid_from``
        in the past and a short ``days``).
        """
        key = _key()
        start = valid_from or datetime.now(UTC) - timedelta(minutes=5)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class StackPki:
    """The files of a development stack's mutual TLS (see :func:`stack_pki`)."""

    folder: Path
    ca: DevCA
    clients: dict[str, Issued]

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def server_tls(self, *, reload_check_s: float = 2.0) -> dict[str, str | float]:
        """The gateway's ``[server.tls]`` table for these files (mutual TLS)."""
        return {
            "cert_file": str(self.folder / "server.pem"),
            "key_file": str(self.folder / "server.key"),
            "client_ca_file": str(self.ca_file),
            "reload_check_s": reload_check_s,
        }

    def client_files(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of the client ``name``."""
        return self.folder / f"{name}.pem", self.folder / f"{name}.key"

    def grpc_credentials(self, name: str | None) -> Any:
        """gRPC channel credentials trusting the CA, presenting client ``name``'s certificate (None: none)."""
        import grpc  # only the callers of this need gRPC

        client = self.clients[name] if name is not None else None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )


def stack_pki(folder: Path, clients: dict[str, str], *, name: str = "paygate development CA") -> StackPki:
    """A throw-away CA in ``folder``, a server certificate for 127.0.0.1 / localhost, and one client
    certificate per ``clients`` entry (name -> its URI SAN, e.g. ``spiffe://lender.example/loans``)."""
    ca = DevCA.create(name)
    ca.write(folder)
    ca.issue("paygate", dns=["localhost"], ips=["127.0.0.1"], server=True).write(folder, "server")
    issued = {}
    for client, san in clients.items():
        issued[client] = ca.issue(client, uris=[san])
        issued[client].write(folder, client)
    return StackPki(folder, ca, issued)
