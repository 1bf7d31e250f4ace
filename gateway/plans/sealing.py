"""Payer account numbers of plans, sealed at rest.

A plan's withholds happen days after it was submitted, and the channels need the whole card
number, so a plan keeps it, unlike a flow (which keeps only the keyed hash and the masked form).
It is stored sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the gateway's
``[security] account_hash_key``; the associated data binds each sealed number to its caller and
plan id, so a sealed value copied onto another plan does not open. Opened only in memory, just
before a withhold; never logged, never returned (DESIGN.md invariant 10).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"paygate plans payer account v1"
_VERSION = b"\x01"


class SealBroken(ValueError):
    """A sealed account number does not open (wrong key, or moved to another plan)."""


class AccountSealer:
    def __init__(self, key_material: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key_material)
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(caller: str, plan_id: str) -> bytes:
        return f"{caller}\x00{plan_id}".encode()

    def seal(self, account_no: str, *, caller: str, plan_id: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, account_no.encode(), self._aad(caller, plan_id))

    def open(self, sealed: bytes, *, caller: str, plan_id: str) -> str:
        if len(sealed) < 1 + 12 + 16 or sealed[:1] != _VERSION:
            raise SealBroken("not a sealed account number")
        try:
            plain = self._aead.decrypt(sealed[1:13], sealed[13:], self._aad(caller, plan_id))
        except InvalidTag:
            raise SealBroken("sealed account number does not open with this key for this plan") from None
        return plain.decode()
