"""Signed asynchronous notifications: :class:`CallbackSender` POSTs them and retries until acknowledged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from channels.simkit.tasks import TaskSet

log = logging.getLogger(__name__)


AckCheck = Callable[[int, bytes], bool]
Signer = Callable[[bytes], Mapping[str, str]]


def body_ack(expected: bytes) -> AckCheck:
    """An ack check: HTTP 200 whose stripped body equals ``expected`` (case-insensitive)."""
    want = expected.strip().lower()

    def check(status: int, body: bytes) -> bool:
        return status == 200 and body.strip().lower() == want

    return check


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """Retry schedule: try at once, then wait ``retry_delay_s`` × ``backoff``^n (capped)."""

    max_attempts: int = 8
    retry_delay_s: float = 0.2
    backoff: float = 2.0
    max_delay_s: float = 10.0
    timeout_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Wait before attempt number ``attempt`` (1-based; the first has none)."""
        if attempt <= 1:
            return 0.0
        return float(min(self.retry_delay_s * self.backoff ** (attempt - 2), self.max_delay_s))


@dataclass
class CallbackDelivery:
    """One notification and what became of it (for tests and the admin view)."""

    key: str
    url: str
    attempts: int = 0
    statuses: list[int | None] = field(default_factory=list)
    acked: bool = False
    done: bool = False


class CallbackSender:
    """POSTs signed notifications and retries until the receiver acknowledges.

    ``sign(body)`` returns the request headers for one attempt (a fresh
    timestamp and nonce each time). ``is_ack(status, body)`` says whether the
    receiver acknowledged; delivery stops after ``policy.max_attempts``.
    """

    def __init__(self, *, is_ack: AckCheck, policy: CallbackPolicy | None = None) -> None:
        self.is_ack = is_ack
        self.policy = policy or CallbackPolicy()
        self.deliveries: list[CallbackDelivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks = TaskSet()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s))

    async def stop(self) -> None:
        await self._tasks.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, key: str, url: str, body: bytes, sign: Signer) -> CallbackDelivery:
        """Schedule delivery in the background; returns its record at once."""
        delivery = CallbackDelivery(key=key, url=url)
        self.deliveries.append(delivery)
        self._tasks.spawn(self._deliver(delivery, body, sign))
        return delivery

    async def join(self) -> None:
        """Wait until every scheduled delivery acked or gave up (bound it with ``asyncio.timeout``)."""
        await self._tasks.join()

    async def _deliver(self, delivery: CallbackDelivery, body: bytes, sign: Signer) -> None:
        try:
            for attempt in range(1, self.policy.max_attempts + 1):
                await asyncio.sleep(self.policy.delay(attempt))
                delivery.attempts = attempt
                status, reply = await self._post(delivery.url, body, sign(body))
                delivery.statuses.append(status)
                if status is not None and self.is_ack(status, reply):
                    delivery.acked = True
                    return
            log.warning("callback %s to %s not acknowledged after %d attempts", delivery.key, delivery.url, attempt)
        finally:
            delivery.done = True

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int | None, bytes]:
        if self._session is None:
            raise RuntimeError("CallbackSender used before start()")
        try:
            async with self._session.post(url, data=body, headers=dict(headers)) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("callback to %s failed: %s", url, type(exc).__name__)
            return None, b""
