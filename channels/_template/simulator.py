"""<Name> simulator: the server side of the protocol, driven by simkit's Behaviour.

Parse and verify the request with ``wire``, hand money orders to
``self.desk.submit`` (simkit's :class:`~channels.simkit.OrderDesk`: ledger,
fate, settlement, at most one debit), turn its Answer into the channel's wire
format, sign it, and send signed notifies through ``self.callbacks`` from
``_notify``. :class:`~channels.simkit.SimulatorBase` does the rest of the
SimulatorHandle (ledger, behaviour, start/stop, admin routes, the day's
statement lines in ``self.statements``: render them with the format's
writer and serve the file). Register ``create`` as the ``simulator`` of the
adapter's entry in ``channels.registry.ADAPTERS`` and the conformance suite
runs against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any, BinaryIO

from aiohttp import web

from channels._template import statement, wire
from channels._template.adapter import STATEMENT_SIGNATURE
from channels.simkit import Behaviour, Entry, Ledger, SimulatorBase, body_ack, stream_file
from channels.statement import StatementLine

SECRET = "generated-at-start"  # noqa: S105 - the template simulator's placeholder, not a credential


class TemplateSimulator(SimulatorBase):
    """A :class:`channels.simkit.SimulatorHandle`."""

    def __init__(self, behaviour: Behaviour, *, notify_url: str | None = None) -> None:
        app = web.Application()  # add the protocol's routes here
        app.router.add_get("/statements/{day}", self._statement)
        super().__init__(behaviour, Ledger(), app, is_ack=body_ack(b"OK"), notify_url=notify_url)

    def adapter_settings(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "merchant_id": "m1", "secret": SECRET}

    async def _statement(self, request: web.Request) -> web.StreamResponse:
        day = date.fromisoformat(request.match_info["day"])
        if not self.statements.published(day):
            return web.Response(status=404, text="not published yet")

        def write(lines: Iterator[StatementLine], out: BinaryIO) -> None:
            statement.write_statement(lines, out, day=day)

        rendered = await self.statements.render(day, write)
        headers = {STATEMENT_SIGNATURE: wire.sign(SECRET.encode(), rendered.sha256)}
        return await stream_file(request, rendered, headers=headers, remove=True)

    def sms_code(self, sign_ref: str) -> str:
        raise KeyError(sign_ref)

    def _refusal(self, code: str) -> Exception:
        return web.HTTPConflict(text=code)  # the protocol's own answer for ORDER_CLOSED / ORDER_NO_CONFLICT

    def _notify(self, entry: Entry) -> None:
        """Sign the final entry's notify and ``self.callbacks.send(...)`` it to ``entry.notify_url``."""


def create(behaviour: Behaviour, *, notify_url: str | None = None, **kw: Any) -> TemplateSimulator:
    return TemplateSimulator(behaviour, notify_url=notify_url)
