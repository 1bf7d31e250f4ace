"""The SMS a simulated channel "sends" when an agreement is signed, kept as a real SMS gateway's log would be.

A real bank texts the borrower a code; tests and demos play the borrower, so
they read the last message sent to the phone number, by the number they
signed with (``SimulatorHandle.last_sms``, ``GET /_admin/sms?phone=...``):
the channel's internal signing reference, which the gateway's API never
returns, is not needed. One entry per phone number (the latest wins): memory
is bounded by the borrowers a run signs for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sms:
    """One message: the code sent to ``phone`` for the signing ``sign_ref``, at ``sent_at`` (epoch seconds)."""

    phone: str
    code: str
    sign_ref: str
    sent_at: float


class SmsLog:
    """The last SMS sent to each phone number."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last: dict[str, Sms] = {}

    def send(self, phone: str, code: str, sign_ref: str) -> Sms:
        """Record that ``code`` was texted to ``phone`` for ``sign_ref``."""
        sms = Sms(phone, code, sign_ref, self._clock())
        self._last[phone] = sms
        return sms

    def last(self, phone: str) -> Sms:
        """The last SMS sent to ``phone``; KeyError if none was."""
        return self._last[phone]
