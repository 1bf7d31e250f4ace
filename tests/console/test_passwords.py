"""Operator passwords: scrypt hashes in the configuration (gateway/console/passwords.py)."""

from __future__ import annotations

import pytest

from gateway.security import passwords


def test_hash_and_verify() -> None:
    encoded = passwords.hash_password("correct horse battery staple")
    assert encoded.startswith("scrypt$15$8$1$") and "correct" not in encoded
    assert passwords.check_format(encoded) == encoded
    assert passwords.verify("correct horse battery staple", encoded)
    assert not passwords.verify("correct horse battery stapl", encoded)
    assert passwords.hash_password("same") != passwords.hash_password("same"), "salted"


@pytest.mark.parametrize(
    "encoded",
    ["", "plain", "scrypt$15$8$1$c2FsdA$a2V5", "pbkdf2$1000$abc$def", "scrypt$30$8$1$" + "A" * 22 + "$" + "B" * 43],
)
def test_a_malformed_hash_never_matches(encoded: str) -> None:
    assert not passwords.verify("anything", encoded)
    with pytest.raises(ValueError):
        passwords.check_format(encoded)


def test_an_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError):
        passwords.hash_password("")
