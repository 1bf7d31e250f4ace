"""Console sessions as signed cookies, and the CSRF tokens bound to them.

A session is a small JSON document (operator name, a random session id, when it was issued and
last used, a fingerprint of the credential it was opened with) plus its HMAC-SHA256 under a key
derived from ``[console] secret_key``. Nothing is stored server-side, so every replica given the
same key accepts the same sessions, and a restart signs nobody out. What that costs, and how it is
bounded:

* a session cannot be revoked one by one: it ends ``session_idle_s`` after its last request and
  ``session_lifetime_s`` after sign-in, and signing out clears the cookie in that browser;
* changing an operator's token or password ends that operator's sessions (the fingerprint no
  longer matches), removing the operator ends them at the next request (the directory is asked
  every time, which is also where the role comes from), and changing ``secret_key`` ends all.

The CSRF token is an HMAC of the session id under a second derived key: a form posted from
another site cannot know it, and it changes with every sign-in. The cookie holds no secret and no
role; it is HttpOnly, so page scripts never see it.

Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

COOKIE = "pg_console"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    operator: str
    sid: str  # random, per sign-in
    issued_at: float
    seen_at: float
    credential: str  # fingerprint of the token or password hash the session was opened with


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens under one secret."""

    def __init__(
        self, secret: str, *, lifetime_s: float, idle_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the console secret key must be at least 32 characters")
        root = secret.encode()
        self._session_key = hmac.new(root, b"paygate-console/session", hashlib.sha256).digest()
        self._csrf_key = hmac.new(root, b"paygate-console/csrf", hashlib.sha256).digest()
        self._credential_key = hmac.new(root, b"paygate-console/credential", hashlib.sha256).digest()
        self._seal_key = hmac.new(root, b"paygate-console/seal", hashlib.sha256).digest()
        self.lifetime_s = lifetime_s
        self.idle_s = idle_s
        self._clock = clock

    def fingerprint(self, credential: str) -> str:
        """A short keyed digest of a token or password hash: changes when the credential does, reveals nothing."""
        return _b64(hmac.new(self._credential_key, credential.encode(), hashlib.sha256).digest()[:12])

    def issue(self, operator: str, credential: str) -> Session:
        now = self._clock()
        return Session(operator, _b64(os.urandom(18)), now, now, self.fingerprint(credential))

    def encode(self, session: Session) -> str:
        body = json.dumps(
            [session.operator, session.sid, round(session.issued_at, 3), round(session.seen_at, 3), session.credential],
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(self._session_key, body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(mac)}"

    def decode(self, cookie: str) -> Session | None:
        """The session in ``cookie`` if its signature holds and it has not expired; else None."""
        body_text, _, mac_text = cookie.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, hmac.new(self._session_key, body, hashlib.sha256).digest()):
            return None
        try:
            operator, sid, issued, seen, credential = json.loads(body)
            session = Session(str(operator), str(sid), float(issued), float(seen), str(credential))
        except (ValueError, TypeError):
            return None
        now = self._clock()
        if now >= session.issued_at + self.lifetime_s or now >= session.seen_at + self.idle_s:
            return None
        if session.seen_at > now + 60:  # from the future: a clock or a forgery we will not extend
            return None
        return session

    def touch(self, session: Session) -> Session:
        """The session, last used now (the idle timeout starts again; the lifetime does not)."""
        return replace(session, seen_at=self._clock())

    def remaining_s(self, session: Session) -> float:
        return min(session.issued_at + self.lifetime_s, session.seen_at + self.idle_s) - self._clock()

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).digest())

    def csrf_valid(self, session: Session, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def sign_in_token(self, nonce: str) -> str:
        """The CSRF token of the sign-in form, bound to the pre-session nonce cookie."""
        return _b64(hmac.new(self._csrf_key, b"sign-in|" + nonce.encode(), hashlib.sha256).digest())

    def sign_in_valid(self, nonce: str, token: str) -> bool:
        return bool(nonce) and bool(token) and hmac.compare_digest(token.encode(), self.sign_in_token(nonce).encode())

    def seal(self, value: object, *, ttl_s: float) -> str:
        """``value`` (JSON) signed with an expiry: for the one-time notice shown after an action."""
        body = json.dumps([round(self._clock() + ttl_s, 3), value], separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(hmac.new(self._seal_key, body, hashlib.sha256).digest())}"

    def unseal(self, text: str) -> object | None:
        """The value of :meth:`seal` if its signature holds and it has not expired; else None."""
        body_text, _, mac_text = text.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
            if not hmac.compare_digest(mac, hmac.new(self._seal_key, body, hashlib.sha256).digest()):
                return None
            expires, value = json.loads(body)
        except (ValueError, TypeError):
            return None
        return value if float(expires) > self._clock() else None


def new_nonce() -> str:
    return _b64(os.urandom(18))
