"""Serving a simulator: :class:`HttpServer`, the admin routes, :class:`SimulatorBase` and :class:`SimulatorHandle`.

:data:`SIMULATORS` and :func:`create_simulator` find a simulator by adapter
name in the one map of channels, :data:`channels.registry.ADAPTERS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, Protocol, Self, runtime_checkable

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.registry import ADAPTERS, ChannelConfigError, load_target
from channels.simkit.behaviour import Behaviour
from channels.simkit.bills import StatementBook, faults_routes
from channels.simkit.callbacks import AckCheck, CallbackPolicy, CallbackSender
from channels.simkit.desk import OrderDesk
from channels.simkit.ledger import Entry, Ledger
from channels.simkit.sms import Sms, SmsLog
from channels.simkit.tasks import TaskSet


async def hold_then_drop(request: web.Request, hold_s: float, released: asyncio.Event | None = None) -> NoReturn:
    """Deliver a TIMEOUT fate: keep the client waiting ``hold_s``, then close the connection unanswered.

    ``released`` (set when the simulator stops) ends the hold early. Never returns.
    """
    try:
        async with asyncio.timeout(hold_s):
            await (released.wait() if released is not None else asyncio.Event().wait())
    except TimeoutError:
        pass
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


def pem_private(key: rsa.RSAPrivateKey) -> str:
    """A simulator-generated merchant key as the PKCS#8 PEM an adapter's settings take."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_public(key: rsa.RSAPublicKey) -> str:
    """A public key as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class HttpServer:
    """An aiohttp application bound to one host/port, with explicit start/stop."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float = 1.0) -> None:
        self.app = app
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(self.app, shutdown_timeout=self._shutdown_timeout, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@runtime_checkable
class SimulatorHandle(Protocol):
    """What tests, the demo and the chaos run need from any simulator."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def behaviour(self) -> Behaviour: ...

    @property
    def statements(self) -> StatementBook:
        """The simulator's daily statements, from its ledger, and their fault switches."""
        ...

    @property
    def base_url(self) -> str:
        """``http://host:port`` once started, else empty."""
        ...

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the base URL. Port 0 picks a free port."""
        ...

    async def stop(self) -> None:
        """Stop serving and cancel background work; idempotent."""
        ...

    def adapter_settings(self) -> dict[str, Any]:
        """Settings for the matching adapter's ChannelSpec so it talks to this simulator."""
        ...

    def sms_code(self, sign_ref: str) -> str:
        """The SMS code "sent" for a signing; raises KeyError for an unknown ``sign_ref``."""
        ...

    def last_sms(self, phone: str) -> Sms:
        """The last SMS "sent" to ``phone`` (as a real SMS gateway's log shows it); KeyError if none."""
        ...


class _SimulatorMap(Mapping[str, str]):
    """Adapter name -> ``"module:create"`` of its simulator: a read-only view of :data:`channels.registry.ADAPTERS`."""

    def __getitem__(self, adapter: str) -> str:
        entry = ADAPTERS.get(adapter)
        if entry is None or entry.simulator is None:
            raise KeyError(adapter)
        return entry.simulator

    def __iter__(self) -> Iterator[str]:
        return (name for name, entry in ADAPTERS.items() if entry.simulator is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# The adapters we simulate; the registry's map is the only place a simulator is registered.
SIMULATORS: Mapping[str, str] = _SimulatorMap()


def create_simulator(adapter: str, behaviour: Behaviour | None = None, **kw: Any) -> SimulatorHandle:
    """Build (not start) the simulator for ``adapter``; ``kw`` go to its ``create``.

    Raises KeyError naming the known simulators for an adapter we do not simulate.
    """
    target = SIMULATORS.get(adapter)
    if target is None:
        raise KeyError(f"no simulator for adapter {adapter!r} (known: {', '.join(sorted(SIMULATORS))})")
    create: Callable[..., SimulatorHandle] = load_target(target)
    return create(behaviour if behaviour is not None else Behaviour(), **kw)


def admin_routes(handle: SimulatorHandle) -> list[web.RouteDef]:
    """Test/operator endpoints, served even during an outage.

    ``GET /_admin/ledger``, ``GET|POST /_admin/behaviour`` (POST applies a
    partial JSON update, 400 naming the bad field), ``GET /_admin/sms/{sign_ref}``,
    ``GET|POST|DELETE /_admin/statement/faults`` (:func:`channels.simkit.bills.faults_routes`).
    ``GET /_admin/sms?phone=<number>`` (the last SMS sent to that number).
    """

    async def ledger(request: web.Request) -> web.Response:
        return web.json_response(handle.ledger.dump())

    async def get_behaviour(request: web.Request) -> web.Response:
        return web.json_response(handle.behaviour.to_settings())

    async def set_behaviour(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ChannelConfigError("behaviour", "must be a JSON object")
            handle.behaviour.update(changes)
        except (ValueError, ChannelConfigError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(handle.behaviour.to_settings())

    async def sms(request: web.Request) -> web.Response:
        try:
            code = handle.sms_code(request.match_info["sign_ref"])
        except KeyError:
            return web.json_response({"error": "unknown sign_ref"}, status=404)
        return web.json_response({"sms_code": code})

    async def last_sms(request: web.Request) -> web.Response:
        phone = request.query.get("phone", "")
        try:
            sms = handle.last_sms(phone)
        except KeyError:
            return web.json_response({"error": "no SMS sent to that phone number"}, status=404)
        return web.json_response(
            {"phone": sms.phone, "sms_code": sms.code, "sign_ref": sms.sign_ref, "sent_at": sms.sent_at}
        )

    return [
        web.get("/_admin/ledger", ledger),
        web.get("/_admin/behaviour", get_behaviour),
        web.post("/_admin/behaviour", set_behaviour),
        web.get("/_admin/sms/{sign_ref}", sms),
        *faults_routes(handle.statements),
        web.get("/_admin/sms", last_sms),
    ]


def adapter_timeouts(behaviour: Behaviour) -> dict[str, float]:
    """``timeout_s`` / ``connect_timeout_s`` adapter settings that run out before a TIMEOUT fate's held answer."""
    timeout = max(0.5, min(5.0, behaviour.timeout_hold_s / 2))
    return {"timeout_s": timeout, "connect_timeout_s": min(1.0, timeout / 2)}


class SimulatorBase:
    """What every simulator shares: most of :class:`SimulatorHandle`, the order desk, callbacks, serving.

    It owns the ledger, the behaviour, an :class:`OrderDesk` (``self.desk``)
    that reports final entries to :meth:`_notify`, a :class:`CallbackSender`
    (``self.callbacks``) and the :class:`HttpServer` for ``app`` (the admin
    routes are added to it), and the :class:`~channels.simkit.bills.StatementBook`
    of its ledger (``self.statements``: set its ``covers`` and
    ``lists_failures`` as the channel's format does, and serve the days it
    renders). A simulator builds its aiohttp application, passes it here, and
    implements :meth:`_notify`, :meth:`_refusal`, :meth:`adapter_settings`
    and :meth:`sms_code`.

    ``stop()`` stops serving first (held TIMEOUT responses are released at
    once), then cancels settlements and callbacks and removes rendered statements; ``start()`` may follow
    again, on the same port, with the same ledger.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        ledger: Ledger,
        app: web.Application,
        *,
        is_ack: AckCheck,
        notify_url: str | None = None,
        callback_policy: CallbackPolicy | None = None,
        close_pending: bool = True,
    ) -> None:
        self._behaviour = behaviour
        self._ledger = ledger
        self.notify_url = notify_url or ""
        self._tasks = TaskSet()
        self.callbacks = CallbackSender(is_ack=is_ack, policy=callback_policy)
        self.desk = OrderDesk(
            ledger, behaviour, self._tasks, self._notify, close_pending=close_pending, refusal=self._refusal
        )
        self._stopping = asyncio.Event()
        self._statements = StatementBook(ledger)
        self.sms = SmsLog()  # what signing "texts" borrowers; a subclass records each code it sends here
        app.add_routes(admin_routes(self))
        self._server = HttpServer(app)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @property
    def statements(self) -> StatementBook:
        return self._statements

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._stopping.clear()
        await self.callbacks.start()
        return await self._server.start(host, port)

    async def stop(self) -> None:
        self._stopping.set()
        await self._server.stop()
        await self._tasks.close()
        await self.callbacks.stop()
        self._statements.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def settled(self) -> None:
        """Wait until pending orders settled and their callbacks were acked or gave up.

        Bound it with ``asyncio.timeout``.
        """
        await self._tasks.join()
        await self.callbacks.join()

    def adapter_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def sms_code(self, sign_ref: str) -> str:
        raise NotImplementedError

    def last_sms(self, phone: str) -> Sms:
        return self.sms.last(phone)

    async def _hold_then_drop(self, request: web.Request) -> NoReturn:
        """Deliver a TIMEOUT fate (see :func:`hold_then_drop`); ``stop()`` ends the hold."""
        await hold_then_drop(request, self._behaviour.timeout_hold_s, self._stopping)

    def _refusal(self, code: str) -> Exception:
        """The protocol's rejection for ``ORDER_CLOSED`` or ``ORDER_NO_CONFLICT`` (``self.desk.submit`` raises it)."""
        raise NotImplementedError

    def _notify(self, entry: Entry) -> None:
        """Send the signed callback for an entry that just became final (through ``self.callbacks``)."""
        raise NotImplementedError
