"""The chaos run's operator: disables and re-enables a channel through one replica, and times every replica.

How "obeyed" is measured, for each change and each replica (the worse of two):

* **what the replica says**: from the moment the ``SetChannelState`` call is
  sent, its admin ``ListChannels`` is polled every 20 ms until it reports the
  new state (:func:`change_state`);
* **what the replica does** (disabling only): the latest attempt that
  replica recorded on the channel after the call was sent and before the
  channel was enabled again, read from the database afterwards (attempts name
  the run that recorded them; runs name their replica):
  :func:`routed_lags`. An attempt the replica routed there 1.4 s after the
  call means it obeyed 1.4 s late, whatever its ListChannels said.

``state_lag_s`` on the last line is the largest of these over the run; it
must stay within :data:`STATE_LAG_BOUND_S` (``[replicas] state_sync_s`` is 1 s).
The changes are made while every replica is up (under the run's fault lock):
a replica that is down obeys when it starts, and that is a start time, not a lag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from paygate.v1 import admin_pb2

if TYPE_CHECKING:
    from paygate.v1.admin_pb2_grpc import GatewayAdminAsyncStub as AdminStub

STATE_LAG_BOUND_S = 2.0


@dataclass
class StateChange:
    """One ``SetChannelState`` of the run and what each replica did about it (epoch seconds)."""

    channel: str
    state: str  # "DISABLED" / "ENABLED"
    through: str  # the replica that took the call
    sent_at: float
    ends_at: float | None = None  # when the next change of this channel was sent
    listed_lag: dict[str, float] = field(default_factory=dict)  # replica -> s until ListChannels showed it


async def change_state(
    admins: Mapping[str, AdminStub],
    through: str,
    channel: str,
    state: str,
    metadata: tuple[tuple[str, str], ...],
    *,
    timeout_s: float = 10.0,
) -> StateChange:
    """Set ``channel`` to ``state`` through replica ``through``; returns once every replica lists it."""
    want = admin_pb2.ChannelState.Value(state)
    # Untimed: every client channel connected first. A replica restarted a moment ago is up, but the
    # client's channel to it may still be backing off from the kill; that is the client's lag, not its.
    await asyncio.gather(
        *(
            admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=metadata, timeout=15, wait_for_ready=True)
            for admin in admins.values()
        )
    )
    change = StateChange(channel, state, through, time.time())
    began = time.monotonic()
    await admins[through].SetChannelState(
        admin_pb2.SetChannelStateRequest(channel=channel, state=want, reason=f"chaos: {state.lower()} {channel}"),
        metadata=metadata,
        timeout=5,
    )

    async def obeyed(name: str, admin: AdminStub) -> None:
        while time.monotonic() - began < timeout_s:
            listed = await admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=metadata, timeout=5)
            if next(c.state for c in listed.channels if c.channel == channel) == want:
                change.listed_lag[name] = time.monotonic() - began
                return
            await asyncio.sleep(0.02)
        change.listed_lag[name] = float("inf")

    await asyncio.gather(*(obeyed(name, admin) for name, admin in admins.items()))
    return change


def routed_lags(changes: Iterable[StateChange], attempts: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Replica -> the latest attempt it recorded on a disabled channel, in seconds after the disabling call.

    ``attempts``: (replica, channel, created at, epoch seconds) of every
    attempt. 0 for a replica that recorded none in any disabled window.
    """
    lags: dict[str, float] = {}
    windows = [c for c in changes if c.state == "DISABLED"]
    for replica, channel, created in attempts:
        lags.setdefault(replica, 0.0)
        for change in windows:
            ends = change.ends_at if change.ends_at is not None else float("inf")
            if change.channel == channel and change.sent_at <= created < ends:
                lags[replica] = max(lags[replica], created - change.sent_at)
    return lags


def state_lag(changes: Iterable[StateChange], routed: Mapping[str, float]) -> float:
    """The run's ``state_lag_s``: the worst of every listed and routed lag (0 without changes)."""
    listed = [lag for change in changes for lag in change.listed_lag.values()]
    return max([0.0, *listed, *routed.values()])
