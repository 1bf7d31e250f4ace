"""Who a call is from: tokens, certificate SANs, both; and the config tables that say which each needs."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Secret, from_mapping
from gateway.security.principals import (
    Audience,
    CallerTable,
    OperatorTable,
    Peer,
    Principals,
    Refused,
    Role,
)

LOANS_TOKEN = "loans-token-0123456789"
OPS_TOKEN = "ops-token-0123456789"
LOANS_URI = "spiffe://lender.example/loan-servicing"
COLLECTIONS_DNS = "collections.lender.example"

BOOK = Principals(
    {
        "loans": CallerTable(token=Secret(LOANS_TOKEN), san=LOANS_URI),  # cert+token
        "collections": CallerTable(san=COLLECTIONS_DNS),  # cert
        "local": CallerTable(token=Secret("local-token-0123456789")),  # token
    },
    {
        "ops": OperatorTable(token=Secret(OPS_TOKEN), role=Role.APPROVER),
        "alice": OperatorTable(san="spiffe://lender.example/ops/alice", role=Role.VIEWER),
    },
)
CALLER, OPERATOR = Audience.CALLER, Audience.OPERATOR
LOANS_CERT = Peer(uris=(LOANS_URI,))
COLLECTIONS_CERT = Peer(dns=("Collections.Lender.Example",))  # DNS names compare case-insensitively


@pytest.mark.parametrize(
    ("audience", "token", "peer", "name", "via"),
    [
        (CALLER, LOANS_TOKEN, LOANS_CERT, "loans", "cert+token"),
        (CALLER, "", COLLECTIONS_CERT, "collections", "cert"),
        (CALLER, "local-token-0123456789", Peer(), "local", "token"),
        (OPERATOR, OPS_TOKEN, Peer(), "ops", "token"),
        (OPERATOR, "", Peer(uris=("spiffe://lender.example/ops/alice",)), "alice", "cert"),
    ],
)
def test_who_a_call_is_from(audience: Audience, token: str, peer: Peer, name: str, via: str) -> None:
    identity = BOOK.authenticate(audience, token, peer)
    assert (identity.name, identity.audience, identity.via) == (name, audience.value, via)
    assert identity.role == {"ops": Role.APPROVER, "alice": Role.VIEWER}.get(name)


@pytest.mark.parametrize(
    ("audience", "token", "peer", "why"),
    [
        (CALLER, "", Peer(), "missing caller credentials"),
        (CALLER, "not-a-configured-token-000", Peer(), "invalid caller token"),
        (CALLER, "", LOANS_CERT, "loans must present its token"),
        (CALLER, LOANS_TOKEN, Peer(), "loans must present its client certificate"),
        (CALLER, LOANS_TOKEN, COLLECTIONS_CERT, "different principals"),
        (CALLER, "", Peer(uris=("spiffe://lender.example/loan-servicing/extra",)), "names no configured"),
        (CALLER, LOANS_TOKEN, Peer(dns=("loans.lender.example",)), "names no configured"),
        (CALLER, "", Peer(uris=(LOANS_URI,), dns=(COLLECTIONS_DNS,)), "more than one principal"),
        (CALLER, OPS_TOKEN, Peer(), "ops is an operator, not a caller"),
        (OPERATOR, "local-token-0123456789", Peer(), "local is a caller, not an operator"),
        (OPERATOR, "", COLLECTIONS_CERT, "collections is a caller"),
        # a DNS SAN that happens to spell a URI SAN's text is not that URI
        (CALLER, LOANS_TOKEN, Peer(dns=(LOANS_URI,)), "names no configured"),
    ],
)
def test_what_is_refused_and_why(audience: Audience, token: str, peer: Peer, why: str) -> None:
    with pytest.raises(Refused) as err:
        BOOK.authenticate(audience, token, peer)
    assert why in str(err.value)
    assert LOANS_TOKEN not in str(err.value) and OPS_TOKEN not in str(err.value)


def test_roles_include_the_ones_below() -> None:
    assert Role.APPROVER.allows(Role.OPERATOR) and Role.APPROVER.allows(Role.VIEWER)
    assert Role.OPERATOR.allows(Role.VIEWER) and not Role.OPERATOR.allows(Role.APPROVER)
    assert not Role.VIEWER.allows(Role.OPERATOR)


MTLS = {"server": {"tls": {"cert_file": "c.pem", "key_file": "k.pem", "client_ca_file": "ca.pem"}}}


def test_the_auth_a_table_implies() -> None:
    config = from_mapping(
        {
            **MTLS,
            "callers": {
                "a": {"token": "a" * 16},
                "b": {"san": "spiffe://x/b"},
                "c": {"san": "C.Example", "token": "c" * 16},
                "d": {"san": "spiffe://x/d", "token": "d" * 16, "auth": "cert"},
            },
            "operators": {"o": {"token": "o" * 16}},
        }
    )
    assert {name: t.mode for name, t in config.callers.items()} == {
        "a": "token",
        "b": "cert",
        "c": "cert+token",
        "d": "cert",
    }
    assert config.callers["c"].san == "c.example"
    assert config.operators["o"].role is Role.VIEWER  # least privilege unless the config says otherwise


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"callers": {"a": {}}}, "callers.a.token"),
        ({"callers": {"a": {"token": "a" * 16, "auth": "cert"}}, **MTLS}, "callers.a.san"),
        ({"callers": {"a": {"san": "spiffe://x/a", "auth": "cert+token"}}, **MTLS}, "callers.a.token"),
        ({"callers": {"a": {"san": "spiffe://x/a", "token": "a" * 16, "auth": "token"}}}, "callers.a.san"),
        ({"callers": {"a": {"san": "*.lender.example"}}, **MTLS}, "callers.a.san"),
        ({"callers": {"a": {"san": "spiffe:// x"}}, **MTLS}, "callers.a.san"),
        ({"callers": {"a": {"auth": "password"}}}, "callers.a.auth"),
        ({"callers": {"a": {"san": "spiffe://x/a"}, "b": {"san": "spiffe://x/a"}}, **MTLS}, "callers.b.san"),
        (
            {"callers": {"a": {"san": "spiffe://x/a"}}, "operators": {"o": {"san": "spiffe://x/a"}}, **MTLS},
            "operators.o.san",
        ),
        ({"operators": {"o": {"token": "o" * 16, "role": "admin"}}}, "operators.o.role"),
        # a certificate needs mutual TLS on the listener
        ({"callers": {"a": {"san": "spiffe://x/a"}}}, "callers.a.san"),
        (
            {"callers": {"a": {"san": "spiffe://x/a"}}, "server": {"tls": {"cert_file": "c", "key_file": "k"}}},
            "callers.a.san",
        ),
        ({"server": {"tls": {"cert_file": "c.pem"}}}, "server.tls.key_file"),
        ({"server": {"tls": {"key_file": "k.pem"}}}, "server.tls.cert_file"),
        ({"server": {"tls": {"client_ca_file": "ca.pem"}}}, "server.tls.client_ca_file"),
        ({"server": {"http_tls": {"cert_file": "c.pem"}}}, "server.http_tls.key_file"),
        ({"server": {"tls": {"reload_check_s": 0}}}, "server.tls.reload_check_s"),
        ({"security": {"resolve_approval_above": -1}}, "security.resolve_approval_above"),
    ],
)
def test_principal_and_tls_errors_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(raw)
    assert err.value.key == key, str(err.value)
