"""<Name> wire format: signing, amounts and the code tables. Pure functions, no I/O.

Both the adapter and the simulator import this module, so they cannot drift.
Put here: canonical string to sign, sign/verify functions, amount conversion
(integer math only), request/response shapes, and one :class:`ErrorTable`
per status field the channel reports.
"""

from __future__ import annotations

import hashlib
import hmac

from channels.contract import ErrorRule, ErrorTable, OutcomeStatus

S, F, P = OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.PENDING

#: Raw code -> outcome. Every code the channel documents goes here; anything
#: missing is PENDING + ``unmapped`` (counted by the gateway), never a guess.
#: ``safe_elsewhere`` only when the channel says nothing was processed.
CODES = ErrorTable(
    "template",
    {
        "SUCCESS": ErrorRule(S, "OK"),
        "PROCESSING": ErrorRule(P, "PROCESSING"),
        "SYSTEM_ERROR": ErrorRule(P, "SYSTEM_ERROR"),  # outcome unknown: poll
        "BUSY": ErrorRule(F, "CHANNEL_BUSY", safe_elsewhere=True),  # refused before processing
        "BALANCE_NOT_ENOUGH": ErrorRule(F, "INSUFFICIENT_FUNDS", payer_attributable=True),
        "ORDER_NOT_EXIST": ErrorRule(P, "NOT_FOUND"),
    },
)


def canonical(method: str, path: str, timestamp: str, nonce: str, body: str) -> str:
    """The exact string the channel signs (copy it byte for byte from the channel's docs)."""
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n"


def sign(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def verify(secret: bytes, message: str, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, message), signature)
