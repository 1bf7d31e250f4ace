"""Toolkit shared by the channel simulators (sandbox, Alipay, WeChat Pay).

A simulator is a small aiohttp server that behaves like a bank or wallet:
it keeps a :class:`Ledger` (accounts, the merchant float, one entry per
channel order number), decides each order's fate from a :class:`Behaviour`
(latency, declines, pending orders, timeouts, 5xx, outages) and sends signed
asynchronous callbacks with :class:`CallbackSender`. Each simulator subclasses
:class:`SimulatorBase` (all of that plus serving and the admin routes) and adds
its protocol. Tests, the demo and the chaos run drive simulators through
:class:`SimulatorHandle`; :func:`create_simulator` finds one by adapter name
in the one map of channels, :data:`channels.registry.ADAPTERS`
(:data:`SIMULATORS` is its read-only view of the simulated ones).

One module per seam; every name is importable from ``channels.simkit``:

==============  ===========================================================
``behaviour``   :class:`Fate`, :class:`Behaviour`, the magic amounts (``amount % 100``)
``ledger``      :class:`Ledger`, :class:`Entry`, the ledger's refusals and guarantees, the books of a day
``bills``       :class:`StatementBook`: a day's statement lines from the ledger, the fault switches, rendering
``tasks``       :class:`TaskSet`, the background work a simulator cancels on stop
``callbacks``   :class:`CallbackSender`, retry policy, acknowledgement checks
``desk``        :class:`OrderDesk`: record, decide, move money once, settle later
``sms``         :class:`SmsLog`: the last SMS "sent" to each phone number (what tests read)
``server``      :class:`HttpServer`, admin routes, :class:`SimulatorBase`,
                :class:`SimulatorHandle`, :func:`create_simulator`
``cli``         what every simulator's command line shares
==============  ===========================================================
"""

from __future__ import annotations

from channels.simkit.behaviour import DECLINE_KINDS, MAGIC, Behaviour, Fate
from channels.simkit.bills import FaultError, Picked, Rendered, StatementBook, StatementFaults, stream_file
from channels.simkit.callbacks import (
    AckCheck,
    CallbackDelivery,
    CallbackPolicy,
    CallbackSender,
    Signer,
    body_ack,
)
from channels.simkit.cli import behaviour_from_json, cli_parser, serve_until_signalled
from channels.simkit.desk import Answer, Delivery, OrderDesk, Precheck
from channels.simkit.ledger import (
    MERCHANT_FLOAT,
    Entry,
    EntryKind,
    EntryStatus,
    InsufficientBalance,
    Ledger,
    LedgerError,
    Movement,
    OrderClosed,
    OrderNoConflict,
    mask_account,
    params_hash,
)
from channels.simkit.server import (
    SIMULATORS,
    HttpServer,
    SimulatorBase,
    SimulatorHandle,
    adapter_timeouts,
    admin_routes,
    create_simulator,
    hold_then_drop,
    pem_private,
    pem_public,
)
from channels.simkit.sms import Sms, SmsLog
from channels.simkit.tasks import TaskSet

__all__ = [
    "DECLINE_KINDS",
    "MAGIC",
    "MERCHANT_FLOAT",
    "SIMULATORS",
    "AckCheck",
    "Answer",
    "Behaviour",
    "CallbackDelivery",
    "CallbackPolicy",
    "CallbackSender",
    "Delivery",
    "Entry",
    "EntryKind",
    "EntryStatus",
    "Fate",
    "FaultError",
    "HttpServer",
    "InsufficientBalance",
    "Ledger",
    "LedgerError",
    "Movement",
    "OrderClosed",
    "OrderDesk",
    "OrderNoConflict",
    "Picked",
    "Precheck",
    "Rendered",
    "Signer",
    "SimulatorBase",
    "SimulatorHandle",
    "Sms",
    "SmsLog",
    "StatementBook",
    "StatementFaults",
    "TaskSet",
    "adapter_timeouts",
    "admin_routes",
    "behaviour_from_json",
    "body_ack",
    "cli_parser",
    "create_simulator",
    "hold_then_drop",
    "mask_account",
    "params_hash",
    "pem_private",
    "pem_public",
    "serve_until_signalled",
    "stream_file",
]
