"""Who may sign in to the console, with what (gateway/console/operators.py)."""

from __future__ import annotations

import pytest

from channels.config import ConfigError, read
from gateway.console.operators import OperatorDirectory, Role, directory_from_config
from gateway.security.passwords import hash_password
from gateway.security.principals import OperatorTable

PASSWORD = "a long console password"
HASH = hash_password(PASSWORD)


def _directory(token_sign_in: bool = True) -> OperatorDirectory:
    tables = {
        "ana": read(OperatorTable, {"token": "ana-token-0123456789", "role": "operator", "password_hash": HASH}),
        "bo": read(OperatorTable, {"token": "bo-token-0123456789x", "san": "bo.ops.example", "role": "approver"}),
        "cy": read(OperatorTable, {"token": "cy-token-0123456789x"}),
    }
    return directory_from_config(tables, token_sign_in=token_sign_in)


async def test_password_sign_in() -> None:
    d = _directory()
    found = await d.by_password("ana", PASSWORD)
    assert found is not None and found.role is Role.OPERATOR
    assert await d.by_password("ana", PASSWORD + "x") is None
    assert await d.by_password("cy", PASSWORD) is None, "no password configured"
    assert await d.by_password("nobody", PASSWORD) is None


def test_token_sign_in_only_for_operators_known_by_token_alone() -> None:
    d = _directory()
    assert d.by_token("ana-token-0123456789").name == "ana"  # type: ignore[union-attr]
    assert d.get("cy").role is Role.VIEWER  # type: ignore[union-attr]
    assert d.by_token("bo-token-0123456789x") is None, "bo must also present a certificate: not enough here"
    assert d.by_token("") is None and d.by_token("ana-token-012345678") is None
    assert _directory(token_sign_in=False).by_token("ana-token-0123456789") is None


def test_a_session_is_bound_to_both_credentials() -> None:
    d = _directory()
    ana = d.get("ana")
    assert ana is not None
    assert d.session_credential(ana) == f"ana-token-0123456789\n{HASH}"


def test_a_malformed_password_hash_stops_start_up() -> None:
    with pytest.raises(ConfigError) as raised:
        read(OperatorTable, {"token": "ana-token-0123456789", "password_hash": "hunter2"}, "operators.ana")
    assert raised.value.key == "operators.ana.password_hash"
