"""Operator passwords for the console: scrypt hashes in the configuration, never the passwords.

A hash reads ``scrypt$<log2 n>$<r>$<p>$<salt>$<key>`` (salt and key in unpadded base64url); make
one with ``paygate console hash-password``. Verifying costs about 32 MiB and tens of milliseconds
on purpose: run :func:`verify` in a worker thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

_FORMAT = re.compile(r"^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$")
LOG2_N, R, P = 15, 8, 1
_MAXMEM = 256 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, log2_n: int = LOG2_N, r: int = R, p: int = P) -> str:
    """A new salted scrypt hash of ``password`` in the configuration's format."""
    if not password:
        raise ValueError("the password is empty")
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${log2_n}${r}${p}${_b64(salt)}${_b64(key)}"


def check_format(encoded: str) -> str:
    """``encoded`` if it is a hash this module makes; raises ValueError saying what one looks like."""
    match = _FORMAT.match(encoded)
    if match is None or not 10 <= int(match.group(1)) <= 20:
        raise ValueError("must be scrypt$<log2 n>$<r>$<p>$<salt>$<key> (make one with paygate console hash-password)")
    return encoded


def verify(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; False for a malformed hash. CPU-bound: call it off the loop."""
    match = _FORMAT.match(encoded)
    if match is None:
        return False
    log2_n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if not 10 <= log2_n <= 20:
        return False
    salt, expected = _unb64(match.group(4)), _unb64(match.group(5))
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=len(expected))
    return hmac.compare_digest(key, expected)
