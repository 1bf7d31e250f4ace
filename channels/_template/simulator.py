"""<Name> simulator: the server side of the protocol, driven by simkit's Behaviour.

Parse and verify the request with ``wire``, hand money orders to
``self.desk.submit`` (simkit's :class:`~channels.simkit.OrderDesk`: ledger,
fate, settlement, at most one debit), turn its Answer into the channel's wire
format, sign it, and send signed notifies through ``self.callbacks`` from
``_notify``. :class:`~channels.simkit.SimulatorBase` does the rest of the
SimulatorHandle (ledger, behaviour, start/stop, admin routes). Register
``create`` as the ``simulator`` of the adapter's entry in
``channels.registry.ADAPTERS`` and the conformance suite runs against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from channels.simkit import Behaviour, Entry, Ledger, SimulatorBase, body_ack


class TemplateSimulator(SimulatorBase):
    """A :class:`channels.simkit.SimulatorHandle`."""

    def __init__(self, behaviour: Behaviour, *, notify_url: str | None = None) -> None:
        app = web.Application()  # add the protocol's routes here
        super().__init__(behaviour, Ledger(), app, is_ack=body_ack(b"OK"), notify_url=notify_url)

    def adapter_settings(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "merchant_id": "m1", "secret": "generated-at-start"}

    def sms_code(self, sign_ref: str) -> str:
        raise KeyError(sign_ref)

    def _refusal(self, code: str) -> Exception:
        return web.HTTPConflict(text=code)  # the protocol's own answer for ORDER_CLOSED / ORDER_NO_CONFLICT

    def _notify(self, entry: Entry) -> None:
        """Sign the final entry's notify and ``self.callbacks.send(...)`` it to ``entry.notify_url``."""


def create(behaviour: Behaviour, *, notify_url: str | None = None, **kw: Any) -> TemplateSimulator:
    return TemplateSimulator(behaviour, notify_url=notify_url)
