"""Signed session cookies, CSRF tokens and sealed notices (gateway/console/sessions.py), without a server."""

from __future__ import annotations

import pytest

from gateway.console.sessions import SessionSigner

SECRET = "s" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock, secret: str = SECRET) -> SessionSigner:
    return SessionSigner(secret, lifetime_s=3600, idle_s=600, clock=clock)


def test_a_session_round_trips_and_holds_no_secret() -> None:
    clock = Clock()
    s = signer(clock)
    session = s.issue("alice", "the-token-of-alice-0001")
    cookie = s.encode(session)
    assert s.decode(cookie) == session
    assert "the-token-of-alice" not in cookie and SECRET not in cookie
    assert session.credential == s.fingerprint("the-token-of-alice-0001")
    assert s.fingerprint("another-token-000000001") != session.credential


@pytest.mark.parametrize("change", ["body", "mac", "truncate", "garbage", "empty"])
def test_a_tampered_cookie_is_no_session(change: str) -> None:
    clock = Clock()
    s = signer(clock)
    cookie = s.encode(s.issue("alice", "x"))
    body, mac = cookie.split(".")
    forged = s.encode(s.issue("mallory", "x")).split(".")[0]
    tampered = {
        "body": f"{forged}.{mac}",
        "mac": f"{body}.{mac[:-2]}AA",
        "truncate": body,
        "garbage": "%%%.???",
        "empty": "",
    }[change]
    assert s.decode(tampered) is None


def test_another_key_does_not_accept_the_cookie() -> None:
    clock = Clock()
    cookie = signer(clock).encode(signer(clock).issue("alice", "x"))
    assert signer(clock, "t" * 40).decode(cookie) is None


def test_sessions_expire_when_idle_and_after_their_lifetime() -> None:
    clock = Clock()
    s = signer(clock)
    session = s.issue("alice", "x")
    clock.now += 599
    assert s.decode(s.encode(session)) is not None
    clock.now += 2
    assert s.decode(s.encode(session)) is None, "idle for more than session_idle_s"
    session = s.issue("alice", "x")
    for _ in range(6):  # used every 9 minutes: the idle timeout never runs out ...
        clock.now += 540
        session = s.touch(session)
        assert s.decode(s.encode(session)) is not None
    clock.now += 540
    assert s.decode(s.encode(s.touch(session))) is None, "... but the lifetime does"


def test_csrf_tokens_belong_to_one_session() -> None:
    clock = Clock()
    s = signer(clock)
    one, two = s.issue("alice", "x"), s.issue("alice", "x")
    assert s.csrf_valid(one, s.csrf_token(one))
    assert not s.csrf_valid(one, s.csrf_token(two))
    assert not s.csrf_valid(one, "")
    assert s.sign_in_valid("nonce-1", s.sign_in_token("nonce-1"))
    assert not s.sign_in_valid("nonce-2", s.sign_in_token("nonce-1"))
    assert not s.sign_in_valid("", s.sign_in_token(""))


def test_a_sealed_notice_expires_and_cannot_be_forged() -> None:
    clock = Clock()
    s = signer(clock)
    sealed = s.seal({"key": "review.done_resolve"}, ttl_s=60)
    assert s.unseal(sealed) == {"key": "review.done_resolve"}
    assert s.unseal(sealed.replace(".", "x.", 1)) is None
    clock.now += 61
    assert s.unseal(sealed) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        SessionSigner("short", lifetime_s=60, idle_s=60)
