"""The channel contract: what every channel adapter offers the gateway.

A channel adapter turns paygate's channel-neutral orders into one channel's
wire protocol and the channel's answers back into :class:`Outcome` values.
It never imports ``gateway`` or ``routing``; those import this module.

Outcome rules (DESIGN.md, "Outcomes and errors"):

* ``SUCCEEDED``: the channel says the money moved.
* ``FAILED``: a definite failure. ``safe_elsewhere`` is True only when the
  channel's error table says nothing was charged and trying another channel
  cannot double-debit (busy, maintenance, bank not supported, rejected before
  processing, connection refused before the request was sent).
  ``payer_attributable`` marks failures the payer caused (insufficient funds,
  frozen account, invalid agreement, over the payer's limit); they count
  neither against the channel's success rate nor as a reason to fail over.
* ``PENDING``: anything else: "processing", a timeout or 5xx after the request
  was sent, an unmapped code. The gateway polls it and never fails over.

``credentials_rejected`` (on an Outcome, an ErrorRule, a ChannelRejected)
marks the channel's answer that it refused paygate's credentials: the
request signature, the signing key, the app or merchant id. The channel
checks those before it processes anything, so an order answered this way is
FAILED ``CREDENTIALS_REJECTED`` and safe elsewhere; and since every later
call would be refused the same way, the gateway counts it, alerts on it and
stops routing to the channel until a call is accepted again.

Payer-initiated orders (``Operation.COLLECT``, 主动还款): the gateway asks
the channel for a cashier (:meth:`Channel.create_collect` with a
:class:`CollectOrder`), hands the :class:`Cashier` to the lending app, and
the borrower pays there, in the channel's own QR / H5 / in-app cashier. The
channel's notification or a query tells the result; an unpaid order is
closed at its expiry through :meth:`Channel.close_order`. Both take an
:class:`OrderRef` whose ``operation`` is ``COLLECT``. A collect order that
waits for its payer is PENDING ``AWAITING_PAYMENT``.

Adapters raise nothing for channel-level answers; they return an Outcome.
Exceptions are reserved for programming errors, bad configuration, and the
small :class:`ChannelError` tree below for the non-order operations
(agreements, balance) where there is no Outcome to return.

Exception tree::

    ChannelError                    base; ``retriable`` says if a retry may help
    ├── ChannelUnavailable          could not reach the channel (retriable)
    ├── ChannelRejected             the channel answered "no" (code, message,
    │                               payer_attributable, credentials_rejected)
    └── CallbackRejected            a callback failed verification (signature,
                                    order number, amount, app id, format)
"""

from __future__ import annotations

import enum
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # channels.statement imports this module; the protocol only names the type
    from channels.statement import StatementFile


class Operation(enum.StrEnum):
    """What a channel can be asked to do."""

    WITHHOLD = "withhold"
    PAYOUT = "payout"
    REFUND = "refund"
    AGREEMENT = "agreement"
    BALANCE = "balance"
    STATEMENT = "statement"  # the channel publishes a daily statement: Channel.fetch_statement
    COLLECT = "collect"  # a payer-initiated order: the borrower pays in the channel's cashier


#: The operations whose order moves the payer's money to the merchant. A payment notification names
#: one of them; some platforms send the same notification for both (an Alipay trade), see
#: :func:`notice_matches`.
PAYMENT_OPERATIONS = frozenset({Operation.WITHHOLD, Operation.COLLECT})


def notice_matches(reported: Operation, recorded: Operation) -> bool:
    """Whether a notification reported as ``reported`` may be about an order recorded as ``recorded``.

    The same operation always matches. A payment notification matches either
    payment operation: an Alipay trade notification does not say whether the
    trade was a withhold or a cashier payment (the order number says which).
    """
    return reported is recorded or (reported in PAYMENT_OPERATIONS and recorded in PAYMENT_OPERATIONS)


class CashierKind(enum.StrEnum):
    """The kind of cashier the lending app opens for the borrower.

    ``QR``: a QR code the borrower scans with the wallet app (Alipay precreate,
    WeChat Pay Native). ``H5``: a page the app opens in the phone's browser
    (Alipay WAP pay, WeChat Pay H5). ``IN_APP``: the wallet's payment sheet
    opened by an SDK inside the lending app (Alipay app pay's order string;
    WeChat Pay JSAPI's signed parameters for ``wx.requestPayment`` in the
    app's mini program or official-account page).
    """

    QR = "qr"
    H5 = "h5"
    IN_APP = "in_app"


class OutcomeStatus(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PENDING = "PENDING"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The channel's answer about one order, normalized.

    ``code`` is paygate's normalized code (``OK``, ``INSUFFICIENT_FUNDS``,
    ``CHANNEL_BUSY``, ``PROCESSING``, ``TIMEOUT``, ``UNMAPPED`` ...);
    ``raw_code``/``raw_message`` are the channel's own words, kept for audit.
    ``amount`` is the amount the channel reports for the order (minor units)
    when it reports one; the gateway cross-checks it. ``not_found`` is set on
    query answers that say the channel has no such order. ``unmapped`` is set
    when ``raw_code`` was not in the error table (the gateway counts those).
    ``credentials_rejected`` is set when the channel refused our credentials
    (see the module docstring); it survives :func:`refused_request`.
    """

    status: OutcomeStatus
    code: str
    raw_code: str = ""
    raw_message: str = ""
    payer_attributable: bool = False
    safe_elsewhere: bool = False
    channel_txn_id: str = ""
    fee: int | None = None
    amount: int | None = None
    not_found: bool = False
    unmapped: bool = False
    credentials_rejected: bool = False

    @property
    def definite(self) -> bool:
        return self.status is not OutcomeStatus.PENDING

    @property
    def channel_attributable_failure(self) -> bool:
        """A failure that should count against the channel's success rate."""
        return self.status is OutcomeStatus.FAILED and not self.payer_attributable


def succeeded(
    raw_code: str = "", *, channel_txn_id: str = "", fee: int | None = None, amount: int | None = None
) -> Outcome:
    return Outcome(
        OutcomeStatus.SUCCEEDED, "OK", raw_code=raw_code, channel_txn_id=channel_txn_id, fee=fee, amount=amount
    )


def pending(code: str, raw_code: str = "", raw_message: str = "", *, not_found: bool = False) -> Outcome:
    return Outcome(OutcomeStatus.PENDING, code, raw_code=raw_code, raw_message=raw_message, not_found=not_found)


def refused_request(outcome: Outcome) -> Outcome:
    """An error answer to a query or close is about that request, not about the earlier order.

    A refused query (not sent, rate limited, maintenance, rejected) says nothing
    about whether the order executed, so a FAILED answer becomes PENDING. The
    one exception is ORDER_CLOSED: "that order is closed" is about the order.
    Adapters apply this to the error paths of query/close only, never to the
    order status the channel reports.
    """
    if outcome.status is OutcomeStatus.FAILED and outcome.code != ORDER_CLOSED:
        return Outcome(
            OutcomeStatus.PENDING,
            outcome.code,
            raw_code=outcome.raw_code,
            raw_message=outcome.raw_message,
            credentials_rejected=outcome.credentials_rejected,  # still a refusal of our credentials
        )
    return outcome


# The normalized code of a channel's answer that an order was closed and can never execute.
ORDER_CLOSED = "ORDER_CLOSED"
# The normalized code of a collect order the channel has and that waits for its payer (PENDING).
AWAITING_PAYMENT = "AWAITING_PAYMENT"
# The normalized code of a channel's refusal of paygate's credentials (signature, key, app or merchant id).
CREDENTIALS_REJECTED = "CREDENTIALS_REJECTED"


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one raw channel code maps into an Outcome."""

    status: OutcomeStatus
    code: str
    payer_attributable: bool = False
    safe_elsewhere: bool = False
    credentials_rejected: bool = False

    def __post_init__(self) -> None:
        if self.credentials_rejected and not (self.status is OutcomeStatus.FAILED and self.safe_elsewhere):
            # checked before any processing: a refusal of our credentials is a failure, and nothing ran
            raise ValueError(f"rule {self.code}: a credentials refusal is FAILED and safe elsewhere")
        if self.status is OutcomeStatus.SUCCEEDED and (self.payer_attributable or self.safe_elsewhere):
            raise ValueError(f"rule {self.code}: a success cannot be a failure kind")
        if self.status is OutcomeStatus.PENDING and (self.payer_attributable or self.safe_elsewhere):
            raise ValueError(f"rule {self.code}: PENDING is never safe elsewhere nor payer-attributable")
        if self.payer_attributable and self.safe_elsewhere:
            # Payer-attributable failures must not trigger failover (invariant 8).
            raise ValueError(f"rule {self.code}: payer-attributable failures are never safe elsewhere")


class ErrorTable:
    """An explicit, exhaustive map from a channel's raw codes to outcomes.

    Anything not in the table is PENDING with ``unmapped=True``: never a guess.
    """

    def __init__(self, channel_kind: str, rules: Mapping[str, ErrorRule]) -> None:
        self.channel_kind = channel_kind
        self._rules = dict(rules)

    def __contains__(self, raw_code: object) -> bool:
        return raw_code in self._rules

    def __iter__(self) -> Any:
        return iter(self._rules.items())

    def rule(self, raw_code: str) -> ErrorRule | None:
        return self._rules.get(raw_code)

    def outcome(
        self,
        raw_code: str,
        raw_message: str = "",
        *,
        channel_txn_id: str = "",
        fee: int | None = None,
        amount: int | None = None,
    ) -> Outcome:
        rule = self._rules.get(raw_code)
        if rule is None:
            return Outcome(
                OutcomeStatus.PENDING,
                "UNMAPPED",
                raw_code=raw_code,
                raw_message=raw_message,
                unmapped=True,
                amount=amount,
            )
        return Outcome(
            rule.status,
            rule.code,
            raw_code=raw_code,
            raw_message=raw_message,
            payer_attributable=rule.payer_attributable,
            safe_elsewhere=rule.safe_elsewhere,
            channel_txn_id=channel_txn_id,
            fee=fee,
            amount=amount,
            credentials_rejected=rule.credentials_rejected,
        )


# --- orders the gateway sends ------------------------------------------------


@dataclass(frozen=True, slots=True)
class WithholdOrder:
    """Debit ``amount`` from the payer under the channel agreement ``agreement_ref``.

    ``channel_order_no`` is unique per attempt and reused on every retry of the
    same call, so the channel can deduplicate. ``account_no`` is the full card
    number (needed by some protocols); adapters must never log it.
    """

    channel_order_no: str
    amount: int
    currency: str
    agreement_ref: str
    account_no: str
    bank_code: str
    description: str = ""
    notify_url: str = ""


@dataclass(frozen=True, slots=True)
class PayoutOrder:
    channel_order_no: str
    amount: int
    currency: str
    account_no: str
    account_name: str
    bank_code: str
    description: str = ""
    notify_url: str = ""


@dataclass(frozen=True, slots=True)
class RefundOrder:
    channel_order_no: str
    original_channel_order_no: str
    original_channel_txn_id: str
    amount: int
    original_amount: int
    currency: str
    reason: str = ""
    notify_url: str = ""


@dataclass(frozen=True, slots=True)
class PayerHints:
    """What some cashiers need to know about the borrower. Never logged whole.

    ``openid``: the borrower's openid under our WeChat app id (required by
    WeChat Pay JSAPI). ``client_ip``: the borrower's device IP (required by
    WeChat Pay H5, ``scene_info.payer_client_ip``). ``return_url``: where an H5
    cashier sends the borrower when done or quitting (Alipay ``return_url`` /
    ``quit_url``).
    """

    openid: str = field(default="", repr=False)
    client_ip: str = field(default="", repr=False)
    return_url: str = ""


@dataclass(frozen=True, slots=True)
class CollectOrder:
    """Open a cashier in which the payer pays ``amount`` (a payer-initiated collection, 主动还款).

    ``channel_order_no`` is unique per attempt and reused on every retry of the
    create call: channels answer a repeat with the same cashier. ``expires_at``
    (timezone-aware) is the absolute time after which the channel refuses to
    take the payment; the gateway closes the order then.
    """

    channel_order_no: str
    amount: int
    currency: str
    cashier: CashierKind
    expires_at: datetime
    description: str = ""
    notify_url: str = ""
    payer: PayerHints = PayerHints()

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Cashier:
    """What the lending app needs to open the channel's cashier, in the channel's own words.

    Exactly one group is set, by ``kind``: ``qr_code`` (QR: the text to render
    as a QR code, Alipay's ``qr_code`` or WeChat Pay's ``code_url``), ``url``
    (H5: the page to open in the borrower's mobile browser), ``order_string``
    (IN_APP on Alipay and the sandbox: the signed order string the wallet's
    SDK takes) or ``sdk_params`` (IN_APP on WeChat Pay: ``appId``,
    ``timeStamp``, ``nonceStr``, ``package``, ``signType``, ``paySign`` for
    ``wx.requestPayment``). Nothing in it is a secret: it goes to the app.
    """

    kind: CashierKind
    qr_code: str = ""
    url: str = ""
    order_string: str = ""
    sdk_params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        present = [name for name in ("qr_code", "url", "order_string") if getattr(self, name)]
        if self.sdk_params:
            present.append("sdk_params")
        if len(present) != 1:
            raise ValueError(f"a cashier carries exactly one payload, got {present or 'none'}")

    def to_json(self) -> str:
        """Compact JSON of the set fields (what the gateway stores and hands out again on a replay)."""
        body: dict[str, Any] = {"kind": self.kind.value}
        for name in ("qr_code", "url", "order_string"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        if self.sdk_params:
            body["sdk_params"] = dict(self.sdk_params)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Cashier:
        """Raises ValueError for anything :meth:`to_json` did not write."""
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("a cashier is a JSON object")
        params = body.get("sdk_params", {})
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise ValueError("sdk_params must map names to strings")
        return cls(
            CashierKind(body.get("kind", "")),
            qr_code=str(body.get("qr_code", "")),
            url=str(body.get("url", "")),
            order_string=str(body.get("order_string", "")),
            sdk_params={str(k): v for k, v in params.items()},
        )


@dataclass(frozen=True, slots=True)
class CollectStarted:
    """The channel's answer to :meth:`Channel.create_collect`.

    ``outcome`` is PENDING ``AWAITING_PAYMENT`` with a ``cashier`` when the
    order waits for its payer; FAILED (no cashier) when the channel refused to
    create it (``safe_elsewhere`` as its error table says); PENDING without a
    cashier when the answer was lost (retry the create with the same order
    number: the channel answers a repeat with the same cashier).
    """

    outcome: Outcome
    cashier: Cashier | None = None

    def __post_init__(self) -> None:
        if self.cashier is not None and self.outcome.status is not OutcomeStatus.PENDING:
            raise ValueError("a cashier comes only with a PENDING outcome (the order waits for its payer)")


def awaiting_payment(cashier: Cashier, raw_code: str = "", *, channel_txn_id: str = "") -> CollectStarted:
    """The answer of a channel that created the order and gave its cashier."""
    outcome = Outcome(OutcomeStatus.PENDING, AWAITING_PAYMENT, raw_code=raw_code, channel_txn_id=channel_txn_id)
    return CollectStarted(outcome, cashier)


def cashier_not_supported(kind: CashierKind) -> CollectStarted:
    """FAILED ``CASHIER_NOT_SUPPORTED``: refused before sending, so safe elsewhere."""
    return CollectStarted(
        Outcome(OutcomeStatus.FAILED, "CASHIER_NOT_SUPPORTED", raw_message=kind.value, safe_elsewhere=True)
    )


@dataclass(frozen=True, slots=True)
class OrderRef:
    """Identifies an earlier order for a query or a close.

    For refunds, ``original_channel_order_no`` is the refunded order's number
    (some channels, like Alipay, find a refund only by both numbers).
    ``bank_code`` is the order's bank code (Alipay queries a transfer by its
    product, which depends on whether it went to a card or an Alipay account).
    ``expires_at`` is a collect order's expiry (some channels create the order
    only when the payer opens the cashier, and refuse to after it).
    """

    channel_order_no: str
    operation: Operation
    amount: int
    currency: str
    original_channel_order_no: str = ""
    bank_code: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SignRequest:
    """Start binding a card for withholding (签约). The channel sends an SMS code."""

    sign_order_no: str
    account_no: str
    holder_name: str
    id_no: str
    phone: str
    bank_code: str


@dataclass(frozen=True, slots=True)
class SignStarted:
    sign_ref: str  # the channel's handle for the pending signing


@dataclass(frozen=True, slots=True)
class AgreementConfirmed:
    agreement_ref: str  # the channel's agreement number, used by WithholdOrder


@dataclass(frozen=True, slots=True)
class Balance:
    available: int  # minor units
    currency: str


# --- callbacks ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackNotice:
    """A verified asynchronous notification about one order.

    A PENDING ``outcome`` says the channel has news but not the result (a
    WeChat Pay batch of transfers ended): the gateway queries the order at once.
    """

    channel_order_no: str
    operation: Operation
    outcome: Outcome
    amount: int | None  # what the channel says was moved, for cross-checking (a success without it is refused)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """The exact HTTP answer a channel expects to a callback."""

    status: int
    body: bytes
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)


# --- errors ------------------------------------------------------------------


class ChannelError(Exception):
    retriable: bool = False

    def __init__(self, channel_id: str, message: str) -> None:
        super().__init__(f"{channel_id}: {message}")
        self.channel_id = channel_id


class ChannelUnavailable(ChannelError):
    retriable = True


class ChannelRejected(ChannelError):
    def __init__(
        self,
        channel_id: str,
        code: str,
        message: str,
        *,
        payer_attributable: bool = False,
        credentials_rejected: bool = False,
    ) -> None:
        super().__init__(channel_id, f"{code}: {message}")
        self.code = code
        self.payer_attributable = payer_attributable
        self.credentials_rejected = credentials_rejected


class CallbackRejected(ChannelError):
    """The callback did not verify.

    ``bad_signature`` is True when authentication failed (signature, signing
    key or timestamp), as opposed to a malformed or mismatching body; the
    gateway counts the two apart. ``channel_order_no`` is set when it could be
    read (even unverified: it is only used to ask the channel directly).
    """

    def __init__(
        self, channel_id: str, reason: str, *, channel_order_no: str = "", bad_signature: bool = False
    ) -> None:
        super().__init__(channel_id, f"callback rejected: {reason}")
        self.reason = reason
        self.channel_order_no = channel_order_no
        self.bad_signature = bad_signature


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """Compare signatures without leaking timing."""
    ab = a.encode() if isinstance(a, str) else a
    bb = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(ab, bb)


# --- the protocol ------------------------------------------------------------


@runtime_checkable
class Channel(Protocol):
    """One configured channel instance (several may share an adapter class).

    All methods are coroutines and must not block the event loop. Order
    methods never raise for channel answers; they return an Outcome (a timeout
    after sending is ``PENDING`` with code ``TIMEOUT``; a connection refused
    before sending is ``FAILED`` with ``safe_elsewhere=True``).
    """

    @property
    def channel_id(self) -> str: ...

    @property
    def operations(self) -> frozenset[Operation]: ...

    @property
    def currencies(self) -> frozenset[str]: ...

    @property
    def banks(self) -> frozenset[str] | None:
        """Bank codes served, or None for any bank."""
        ...

    @property
    def cashier_kinds(self) -> frozenset[CashierKind]:
        """The cashiers :meth:`create_collect` opens (empty when the channel does not offer ``COLLECT``)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def withhold(self, order: WithholdOrder) -> Outcome: ...

    async def payout(self, order: PayoutOrder) -> Outcome: ...

    async def refund(self, order: RefundOrder) -> Outcome: ...

    async def create_collect(self, order: CollectOrder) -> CollectStarted:
        """Create a payer-initiated order and return its cashier (see :class:`CollectStarted`).

        Never raises for channel answers. A kind outside :attr:`cashier_kinds`
        is FAILED ``CASHIER_NOT_SUPPORTED`` (nothing sent, safe elsewhere).
        """
        ...

    async def query(self, ref: OrderRef) -> Outcome:
        """Ask for the result of an earlier order. Unknown order → PENDING, ``not_found=True``.

        A collect order still waiting for its payer is PENDING ``AWAITING_PAYMENT``
        (or whatever the channel's table calls it); paid is SUCCEEDED with the
        amount the channel says was paid, which the gateway cross-checks.
        """
        ...

    async def close_order(self, ref: OrderRef) -> Outcome:
        """Ask the channel to close an order it never received, so a late copy cannot execute.

        Also closes a collect order its payer has not paid (at its expiry, or
        when the caller asks). Returns FAILED (code ``ORDER_CLOSED``) only when
        the channel confirmed that the order can never take money, or the
        order's real outcome when it has one (a collect paid before the close
        arrived is SUCCEEDED).
        """
        ...

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        """Raises ChannelRejected / ChannelUnavailable."""
        ...

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        """Raises ChannelRejected (bad or expired code) / ChannelUnavailable."""
        ...

    async def revoke_agreement(self, agreement_ref: str) -> None: ...

    async def balance(self) -> Balance: ...

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        """Verify (constant time) and parse a callback. Raises CallbackRejected."""
        ...

    def callback_reply(self, accepted: bool) -> HttpReply:
        """The acknowledgement body this channel expects (``success``, JSON, ...)."""
        ...

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        """Download the statement (对账单) of one business ``day`` of this channel account into ``dest_dir``.

        ``day`` is the channel's own bill date (Alipay and WeChat Pay close
        their days in China time). The file is streamed to disk, never held
        whole in memory, and its integrity is checked where the channel gives
        the means (a signed digest, a published hash, the archive's CRCs)
        before this returns; the returned :class:`~channels.statement.StatementFile`
        names the parser (``format``) and the file's SHA-256. Nothing is left
        in ``dest_dir`` when it raises. Parse the file with
        :func:`channels.statements.parser_for` (``format``).

        Raises :class:`~channels.statement.StatementUnavailable` when the day
        is not published yet or the channel cannot be reached (retry later),
        :class:`~channels.statement.StatementError` when what came back cannot
        be trusted (hash or signature mismatch, an answer that is not a
        statement). Channels without :attr:`Operation.STATEMENT` raise
        StatementUnavailable.
        """
        ...
