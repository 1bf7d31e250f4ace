"""Callers and operators (principals): their configuration tables and the authentication decision.

A principal is a ``[callers.<name>]`` (a lending system calling PaymentGateway) or an
``[operators.<name>]`` (a person or tool calling GatewayAdmin). It proves who it is with

* a **token**: ``authorization: Bearer <token>`` (16+ characters, distinct across principals);
* a **certificate**: a client certificate signed by ``[server.tls] client_ca_file``, whose subject
  alternative name equals the principal's ``san``: a URI (``spiffe://lender.example/loan-servicing``)
  or a DNS name (``loans.lender.example``, compared case-insensitively). The SANs are the ones gRPC
  reports in the call's auth context after verifying the certificate chain (``peer_uri``,
  ``peer_dns``), the only source of truth for them: nothing the client sends in metadata counts.

``auth`` says what a principal must present: ``"token"``, ``"cert"`` or ``"cert+token"`` (both,
naming the same principal). Left out, it is what is configured: ``cert+token`` with a token and a
san, ``cert`` with a san only, ``token`` with a token only.

:meth:`Principals.authenticate` decides one call, refusing (:class:`Refused`, whose text says why)

* a certificate whose SANs name no configured principal, or two of them;
* a token that is not configured, or that names another principal than the certificate;
* a principal of the other audience (a caller on an admin method, an operator on the API);
* a principal without the credential its ``auth`` requires.

Under mutual TLS every connection has a certificate, so every principal that connects has a
``san``; tokens alone are for plaintext or server-only TLS (local runs, a sidecar that terminates
mTLS) or a second factor.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator

from channels.config import TABLE, ConfigError, Secret, join
from gateway.security.passwords import check_format

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# A URI SAN: a scheme, then something (spiffe://trust-domain/path, urn:...); no blanks.
_URI = re.compile(r"^[a-z][a-z0-9+.-]*:[^\s]+$")
# A DNS SAN: dot-separated labels of letters, digits and hyphens (no wildcards: one name, one principal).
_DNS = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class Audience(enum.StrEnum):
    """Who a service is for: callers (PaymentGateway) or operators (GatewayAdmin)."""

    CALLER = "caller"
    OPERATOR = "operator"


class Role(enum.StrEnum):
    """An operator's role; each includes what the ones before it may do."""

    VIEWER = "viewer"  # reads channels, review queue, discrepancies, pending resolutions, the audit log
    OPERATOR = "operator"  # and re-queries, sets channel states, adjusts positions, resolves flows by hand
    APPROVER = "approver"  # and approves or rejects another operator's resolution above the threshold

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        return self.rank >= required.rank


_RANKS = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.APPROVER: 3}

AuthMode = Literal["token", "cert", "cert+token"]


def _long_token(token: Secret) -> Secret:
    if len(token.reveal()) < 16:
        raise ValueError("must be at least 16 characters")
    return token


def _san(value: str) -> str:
    value = value.strip()
    if ":" in value:  # DNS names have none
        if not _URI.match(value):
            raise ValueError("a URI SAN is scheme:rest without blanks (spiffe://trust-domain/workload)")
        return value
    if not _DNS.match(value.lower()):
        raise ValueError("must be a URI (spiffe://...) or a DNS name (no wildcards)")
    return value.lower()


@dataclass(frozen=True)
class CallerTable:
    """``[callers.<name>]``: how a lending system proves who it is (see the module docstring)."""

    __pydantic_config__ = TABLE

    token: Annotated[Secret, AfterValidator(_long_token)] | None = None  # authorization: Bearer <token>
    san: Annotated[str, AfterValidator(_san)] = ""  # its client certificate's SAN: URI or DNS name
    auth: AuthMode | None = None  # what it must present; None: what is configured (token / cert / cert+token)

    @property
    def mode(self) -> AuthMode:
        if self.auth is not None:
            return self.auth
        if self.san:
            return "cert+token" if self.token else "cert"
        return "token"

    @property
    def needs_certificate(self) -> bool:
        return self.mode != "token"

    def check_config(self, key: str) -> None:
        if self.token is None and not self.san:
            raise ConfigError(join(key, "token"), "give a token, a san (its client certificate), or both")
        if "token" in self.mode and self.token is None:
            raise ConfigError(join(key, "token"), f'required by auth = "{self.mode}"')
        if self.needs_certificate and not self.san:
            raise ConfigError(join(key, "san"), f'required by auth = "{self.mode}"')
        if self.mode == "token" and self.san:
            raise ConfigError(join(key, "san"), 'not used with auth = "token" (say "cert" or "cert+token")')


def _password_hash(value: str) -> str:
    return check_format(value)


@dataclass(frozen=True)
class OperatorTable(CallerTable):
    """``[operators.<name>]``: a caller's keys plus the operator's ``role`` (and a console password)."""

    __pydantic_config__ = TABLE

    role: Role = Role.VIEWER  # viewer, operator or approver (gateway/api/access.py says what each may call)
    # the operations console's sign-in (gateway/console): a scrypt hash from `paygate console hash-password`
    password_hash: Annotated[str, AfterValidator(_password_hash)] | None = None


def check_principals(callers: Mapping[str, CallerTable], operators: Mapping[str, OperatorTable]) -> None:
    """Names well formed; no token and no SAN shared by two principals. Raises ConfigError naming the key."""
    tokens: dict[str, str] = {}
    sans: dict[str, str] = {}
    for section, tables in (("callers", callers), ("operators", operators)):
        for name, table in tables.items():
            key = join(section, name)
            if not NAME.match(name):
                raise ConfigError(key, "names are 1-64 chars of a-z 0-9 . _ -")
            if table.token is not None:
                other = tokens.setdefault(table.token.reveal(), key)
                if other != key:
                    raise ConfigError(join(key, "token"), f"same token as {other}")
            if table.san:
                other = sans.setdefault(table.san, key)
                if other != key:
                    raise ConfigError(join(key, "san"), f"same san as {other}")


@dataclass(frozen=True)
class Identity:
    """Who an RPC is from: the principal's ``name``, its ``audience``, an operator's ``role``, and ``via``
    (the credentials that proved it: ``token``, ``cert`` or ``cert+token``)."""

    name: str
    audience: str  # an Audience value
    role: Role | None = None
    via: str = "token"


@dataclass(frozen=True)
class Peer:
    """What the transport verified: the client certificate's SANs (empty tuples: no certificate)."""

    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()

    @property
    def has_certificate(self) -> bool:
        return bool(self.uris or self.dns)

    def describe(self) -> str:
        names = [*self.uris, *self.dns]
        text = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
        return text[:300]


NO_CERTIFICATE = Peer()


class Refused(Exception):
    """The call's credentials do not prove a principal of the method's audience; the text says why."""


@dataclass(frozen=True)
class _Principal:
    name: str
    audience: Audience
    table: CallerTable
    role: Role | None


class Principals:
    """Every configured principal, found by token (constant time) or by certificate SAN."""

    def __init__(self, callers: Mapping[str, CallerTable], operators: Mapping[str, OperatorTable]) -> None:
        everyone = [_Principal(n, Audience.CALLER, t, None) for n, t in callers.items()]
        everyone += [_Principal(n, Audience.OPERATOR, t, t.role) for n, t in operators.items()]
        self._tokens = [(p.table.token.reveal().encode(), p) for p in everyone if p.table.token is not None]
        self._uris = {p.table.san: p for p in everyone if p.table.san and ":" in p.table.san}
        self._dns = {p.table.san: p for p in everyone if p.table.san and ":" not in p.table.san}

    @property
    def certificates_used(self) -> bool:
        """Whether any principal authenticates with a certificate."""
        return bool(self._uris or self._dns)

    def _by_token(self, token: str) -> _Principal | None:
        presented = token.encode()
        found: _Principal | None = None
        for secret, principal in self._tokens:  # no early exit: constant work per call
            if hmac.compare_digest(secret, presented):
                found = principal
        return found

    def _by_certificate(self, peer: Peer) -> _Principal | None:
        found = {self._uris[u] for u in peer.uris if u in self._uris}
        found |= {self._dns[d.lower()] for d in peer.dns if d.lower() in self._dns}
        if not found and peer.has_certificate:
            raise Refused(f"the client certificate ({peer.describe()}) names no configured caller or operator")
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found))
            raise Refused(f"the client certificate names more than one principal ({names})")
        return next(iter(found), None)

    def authenticate(self, audience: Audience, token: str, peer: Peer = NO_CERTIFICATE) -> Identity:
        """The identity of a call to a method of ``audience``; raises :class:`Refused` saying why not.

        ``token`` is the bearer token ("" for none); ``peer`` what the transport verified.
        """
        by_cert = self._by_certificate(peer)
        by_token = self._by_token(token) if token else None
        if token and by_token is None:
            raise Refused(f"invalid {audience} token")
        if by_cert is not None and by_token is not None and by_cert is not by_token:
            raise Refused(
                f"the token and the client certificate name different principals ({by_token.name}, {by_cert.name})"
            )
        principal = by_cert or by_token
        if principal is None:
            raise Refused(f"missing {audience} credentials (authorization: Bearer <token>, or a client certificate)")
        if principal.audience is not audience:
            raise Refused(f"{principal.name} is {_article(principal.audience)}, not {_article(audience)}")
        mode = principal.table.mode
        if mode != "token" and by_cert is not principal:
            raise Refused(f"{audience} {principal.name} must present its client certificate")
        if "token" in mode and by_token is not principal:
            raise Refused(f"{audience} {principal.name} must present its token")
        return Identity(principal.name, audience.value, principal.role, via=mode)


def _article(audience: Audience) -> str:
    return f"an {audience}" if audience is Audience.OPERATOR else f"a {audience}"
