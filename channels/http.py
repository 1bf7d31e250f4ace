"""HTTP to a channel: one client session, what a failed exchange means for the money, the adapters' base.

Every adapter sends through :class:`ChannelHttp`, so DESIGN.md invariant 3 is
decided in one place, on one question: could the channel have received the
request? :meth:`ChannelHttp.send` answers with exactly one of::

    Response   an HTTP answer (any status); the adapter verifies and reads it
    Unsent     the request never left: connection refused, DNS failure,
               connect timeout, any failure before the request headers were
               handed to the socket -> FAILED CONNECTION_FAILED, safe_elsewhere
    Lost       the request was (or may have been) sent and no answer came
               back -> PENDING TIMEOUT / CONNECTION_LOST: poll, never fail over

"Sent" is aiohttp's request-headers trace, which fires before the first byte
is written: a failure before it cannot have reached the channel, a failure
after it may have. Adapters also use :class:`Lost` for an answer they cannot
trust (unsigned, unparseable, HTTP 5xx): the request arrived, the result is
unknown, so it is PENDING with the adapter's own code.

Statements are large: :meth:`ChannelHttp.download` streams a 200 answer's
body to a file (written and hashed in a worker thread, never whole in
memory) and :class:`StatementDownload` gives each statement a temporary file
in the destination directory that becomes the :class:`StatementFile` only
when the adapter has checked it, and is removed otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace
from typing import IO, Any, Self

import aiohttp
from yarl import URL

from channels.contract import Operation, Outcome, OutcomeStatus, pending
from channels.statement import StatementFile, StatementUnavailable


@dataclass(frozen=True, slots=True)
class Unsent:
    """The request never left: nothing can have been processed (``reason``: the exception's name)."""

    reason: str

    def outcome(self) -> Outcome:
        return Outcome(OutcomeStatus.FAILED, "CONNECTION_FAILED", raw_message=self.reason, safe_elsewhere=True)

    def __str__(self) -> str:
        return f"not sent ({self.reason})"


@dataclass(frozen=True, slots=True)
class Lost:
    """The request may have been processed; ``code`` says why the result is unknown."""

    code: str
    reason: str

    def outcome(self) -> Outcome:
        return pending(self.code, raw_message=self.reason)

    def __str__(self) -> str:
        return f"{self.code} ({self.reason})" if self.reason else self.code


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer, read in full; nothing about it is verified yet."""

    status: int
    headers: Mapping[str, str]
    body: bytes


NoAnswer = Unsent | Lost

# An error answer to a download is read into memory up to this many bytes (its explanation, never a statement).
_ERROR_BODY_LIMIT = 64 * 1024
_FLUSH_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A 200 answer whose body was streamed to ``path``; ``digests`` maps hash names to hex digests of it."""

    headers: Mapping[str, str]
    path: str
    size: int
    digests: Mapping[str, str]


class _Sink:
    """A file being written and hashed; used from a worker thread only."""

    def __init__(self, path: str, algorithms: tuple[str, ...]) -> None:
        self._file: IO[bytes] = open(path, "wb")
        self._hashes = {name: hashlib.new(name) for name in algorithms}
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        for digest in self._hashes.values():
            digest.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        self._file.close()

    def hexdigests(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self._hashes.items()}


async def _mark_sent(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    # Once headers are handed to the writer, the channel may have the request: no longer safe elsewhere.
    context.trace_request_ctx.sent = True


class ChannelHttp:
    """One aiohttp session for one channel.

    ``connect_timeout_s`` bounds connecting (nothing is sent yet, so running
    out is :class:`Unsent`); ``timeout_s`` bounds the whole exchange, connect
    to last body byte; ``read_timeout_s`` (optional) bounds each wait for
    answer bytes. :meth:`start` and :meth:`stop` are idempotent.
    """

    def __init__(self, *, connect_timeout_s: float, timeout_s: float, read_timeout_s: float | None = None) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_mark_sent)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s, sock_read=self.read_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, trace_configs=[trace])

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(
        self,
        method: str,
        url: str | URL,
        *,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response | Unsent | Lost:
        """One request; ``data`` as aiohttp takes it (bytes, or a form mapping). Raises RuntimeError before start().

        ``timeout_s`` replaces the whole-call budget for this request, and the
        wait for answer bytes with it (a statement's, not an order's).
        """
        if self._session is None:
            raise RuntimeError("channel HTTP used before start()")
        progress = SimpleNamespace(sent=False)
        per_request = self._long_timeout() if timeout_s is not None else None
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                async with self._session.request(
                    method, url, data=data, headers=headers, trace_request_ctx=progress, timeout=per_request
                ) as response:
                    return Response(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
            if not progress.sent:
                return Unsent(reason)
            return Lost("TIMEOUT" if isinstance(exc, TimeoutError) else "CONNECTION_LOST", reason)

    async def download(
        self,
        method: str,
        url: str | URL,
        *,
        path: str,
        timeout_s: float,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        digests: tuple[str, ...] = (),
    ) -> Response | Downloaded | Unsent | Lost:
        """Like :meth:`send`, but a 200 answer's body is streamed into the file ``path`` (created or truncated).

        The body is written and hashed (SHA-256 and each of ``digests``, e.g.
        ``"sha1"``) in a worker thread; ``timeout_s`` bounds the whole download.
        Any other status is a :class:`Response` with the first 64 KiB of its
        body. After Unsent/Lost the file may hold part of the body: the caller
        removes it (:class:`StatementDownload` does).
        """
        if self._session is None:
            raise RuntimeError("channel HTTP used before start()")
        progress = SimpleNamespace(sent=False)
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.request(
                    method, url, data=data, headers=headers, trace_request_ctx=progress, timeout=self._long_timeout()
                ) as response:
                    if response.status != 200:
                        return Response(
                            response.status, response.headers, await response.content.read(_ERROR_BODY_LIMIT)
                        )
                    sink = await asyncio.to_thread(_Sink, path, ("sha256", *digests))
                    try:
                        pending_bytes = bytearray()
                        async for chunk in response.content.iter_chunked(_FLUSH_BYTES):
                            pending_bytes += chunk
                            if len(pending_bytes) >= _FLUSH_BYTES:
                                await asyncio.to_thread(sink.write, bytes(pending_bytes))
                                pending_bytes.clear()
                        if pending_bytes:
                            await asyncio.to_thread(sink.write, bytes(pending_bytes))
                    finally:
                        await asyncio.to_thread(sink.close)
                    return Downloaded(response.headers, path, sink.size, sink.hexdigests())
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
            if not progress.sent:
                return Unsent(reason)
            return Lost("TIMEOUT" if isinstance(exc, TimeoutError) else "CONNECTION_LOST", reason)

    def _long_timeout(self) -> aiohttp.ClientTimeout:
        """Connecting stays bounded (nothing sent yet); the answer may take as long as the caller's budget."""
        return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s, sock_read=None)


class StatementDownload:
    """One statement being downloaded into ``dest_dir``, as ``async with``.

    :meth:`fetch` streams the answer into a hidden temporary file there;
    :meth:`keep` gives it its final name
    (``<channel id>_<yyyymmdd>_<format><suffix>``, replacing an earlier
    download of the same day) and returns the :class:`StatementFile`. Leaving
    the block without :meth:`keep` (an error, a failed check) removes the
    temporary file: nothing half-downloaded is ever left behind.
    """

    def __init__(
        self,
        http: ChannelHttp,
        channel_id: str,
        day: date,
        dest_dir: str,
        *,
        format: str,
        suffix: str,
        timeout_s: float,
    ) -> None:
        self._http = http
        self._channel_id = channel_id
        self._day = day
        self._format = format
        self._timeout_s = timeout_s
        name = f"{_SAFE_NAME.sub('_', channel_id)}_{day:%Y%m%d}_{format}{suffix}"
        self._final = os.path.join(dest_dir, name)
        self._partial = os.path.join(dest_dir, f".{name}.{secrets.token_hex(6)}.part")
        self._dest_dir = dest_dir
        self._kept = False

    async def __aenter__(self) -> Self:
        await self._http.start()
        await asyncio.to_thread(os.makedirs, self._dest_dir, exist_ok=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._kept:
            await asyncio.to_thread(_remove, self._partial)

    async def fetch(
        self,
        method: str,
        url: str | URL,
        *,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        digests: tuple[str, ...] = (),
    ) -> Response | Downloaded | Unsent | Lost:
        """:meth:`ChannelHttp.download` into this statement's temporary file."""
        return await self._http.download(
            method, url, path=self._partial, timeout_s=self._timeout_s, data=data, headers=headers, digests=digests
        )

    async def keep(self, downloaded: Downloaded, *, source: str) -> StatementFile:
        """The checked download becomes the day's statement file. ``source`` must carry no credentials or tokens."""
        await asyncio.to_thread(os.replace, self._partial, self._final)
        self._kept = True
        return StatementFile(
            channel_id=self._channel_id,
            day=self._day,
            path=self._final,
            format=self._format,
            sha256=downloaded.digests["sha256"],
            source=source,
        )


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def without_query(url: str | URL) -> str:
    """A URL as a statement's ``source``: no query string (download tokens), no user info."""
    parsed = URL(url)
    return str(parsed.with_query(None).with_fragment(None).with_user(None))


class HttpChannel:
    """What every HTTP adapter's :class:`~channels.contract.Channel` shares: id, capabilities, lifecycle.

    An adapter subclasses it with its :class:`ChannelHttp` and what it serves,
    and adds the operations. ``start()``/``stop()`` open and close the session
    (idempotent); the channel also works as ``async with``.
    """

    def __init__(
        self,
        channel_id: str,
        http: ChannelHttp,
        *,
        operations: frozenset[Operation] = frozenset(Operation),
        currencies: frozenset[str] = frozenset({"CNY"}),
        banks: frozenset[str] | None = None,
    ) -> None:
        self._channel_id = channel_id
        self._http = http
        self._operations = operations
        self._currencies = currencies
        self._banks = banks

    @property
    def channel_id(self) -> str:
        return self._channel_id

    @property
    def operations(self) -> frozenset[Operation]:
        return self._operations

    @property
    def currencies(self) -> frozenset[str]:
        return self._currencies

    @property
    def banks(self) -> frozenset[str] | None:
        """Bank codes served; None means any bank."""
        return self._banks

    async def start(self) -> None:
        await self._http.start()

    async def stop(self) -> None:
        await self._http.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        """Adapters whose channel publishes statements override this; the default has none to fetch."""
        raise StatementUnavailable(f"{self._channel_id}: this channel publishes no statement")

    def _unsupported_currency(self, currency: str) -> Outcome | None:
        """FAILED ``CURRENCY_NOT_SUPPORTED`` (refused before sending: safe elsewhere), or None when served."""
        if currency in self._currencies:
            return None
        return Outcome(OutcomeStatus.FAILED, "CURRENCY_NOT_SUPPORTED", raw_message=currency, safe_elsewhere=True)
