"""Several replicas, one truth: what each gateway process does to agree with the others.

Replicas share the database and nothing else. Three things one of them keeps
in memory would otherwise drift apart; :class:`ReplicaSync` keeps them
together, each step on its own timer (``[replicas]``, :class:`ReplicasConfig`):

* **Who is alive** (``heartbeat_s``). The process registers its run (an
  *incarnation*, a ULID) under its ``[server] replica_id`` and beats a
  heartbeat; a restart of the same replica id replaces the earlier run. Every
  attempt carries the incarnation that recorded it, and recovery takes only
  the work of runs that are not alive (no heartbeat for ``dead_after_s``,
  stopped, replaced) or its own (:attr:`ReplicaSync.scope`,
  gateway/store/replicas.py). A replica that is only slow to beat is judged
  dead after ``dead_after_s``: what it was doing is then queried (never
  guessed) or, for a failover it had not yet recorded, finished FAILED from
  the failure already recorded; its next attempt is then refused
  (``FlowClosed``). No money moves either way.
* **Operator channel states** (``state_sync_s``). ``SetChannelState`` writes
  the row and applies it on the replica that took the call; every other
  replica reads the whole ``channel_states`` table (a row per channel) every
  ``state_sync_s`` and applies each row whose version it has not applied
  yet. Lag bound: ``state_sync_s`` plus one query, from the commit. An
  operator's change ends a credentials hold (gateway/credentials.py) on every
  replica, as it does on the one that took the call; without a change the
  sync leaves holds alone (a hold is this replica's overlay on the operator
  state, not shared: every replica sees the same refusals by itself).
  Positions need nothing: the planner reads float from the database for each
  payout.
* **Routing evidence** (``evidence_sync_s``). Every ``evidence_sync_s`` the
  replica reads the attempts finished since its last read (less
  ``evidence_overlap_s``, for late commits and clocks that differ a little)
  and folds the outcomes into its router; what it applied itself, or folded
  already, is skipped by channel order number (:meth:`Planner.fold`). So
  every replica eliminates a failing channel within about ``evidence_sync_s``
  of the replica that saw the failures.

A failed step is counted (``paygate_replica_sync_errors_total{what}``) and
retried on the next tick; ``paygate_replica_sync_age_seconds{what}`` shows how
long ago each step last succeeded (docs/OBSERVABILITY.md, runbook "replica
lag").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from pydantic import Field

from channels.config import TABLE, ConfigError, join
from gateway import metrics
from gateway.planner import Planner
from gateway.ports import ChannelStateStore, ObservationStore, ReplicaStore
from gateway.store.rows import RecoveryScope, utcnow

log = logging.getLogger(__name__)

_Seconds = Annotated[float, Field(gt=0, le=3600)]


@dataclass(frozen=True)
class ReplicasConfig:
    """``[replicas]``: how replicas follow each other (see the module doc)."""

    __pydantic_config__ = TABLE

    heartbeat_s: _Seconds = 1.0  # how often this run marks itself alive
    dead_after_s: _Seconds = 10.0  # a run silent this long is dead: recovery may take its work
    state_sync_s: _Seconds = 1.0  # how often operator channel states are read (the lag bound)
    evidence_sync_s: _Seconds = 1.0  # how often the outcomes other replicas recorded are folded in
    evidence_overlap_s: Annotated[float, Field(ge=0, le=600)] = 3.0  # re-read this much of the last window

    def check_config(self, key: str) -> None:
        if self.dead_after_s < 3 * self.heartbeat_s:
            raise ConfigError(join(key, "dead_after_s"), f"must be >= 3 x {join(key, 'heartbeat_s')}")


class ReplicaSync:
    """This process as one replica among several: heartbeat, operator states, shared evidence.

    ``start()`` registers the run, folds in the recent outcomes (warm start)
    and the operator states, then starts the three timers; ``stop()`` (idempotent)
    ends them and marks the run stopped, so that others may take what it left.
    Call ``stop()`` only once this process has stopped working (after its
    channel calls are drained and its poller stopped).
    """

    def __init__(
        self,
        config: ReplicasConfig,
        *,
        replica_id: str,
        incarnation: str,
        store: ReplicaStore,
        channel_states: ChannelStateStore,
        observations: ObservationStore,
        planner: Planner,
    ) -> None:
        self.config = config
        self.replica_id = replica_id
        self.incarnation = incarnation
        self.store = store
        self.channel_states = channel_states
        self.observations = observations
        self.planner = planner
        self._folded_until = utcnow()
        self._last_ok: dict[str, float] = {}
        self._failing: set[str] = set()
        self._replaced_logged = False
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False

    @property
    def scope(self) -> RecoveryScope:
        """What recovery in this process may take (gateway/store/replicas.py ``takeable``)."""
        return RecoveryScope(self.incarnation, self.config.dead_after_s)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, *, warm_window_s: float) -> None:
        superseded = await self.store.register(self.incarnation, self.replica_id)
        self._registered = True
        self._ok("heartbeat")
        if superseded:
            log.warning(
                "replica %s restarted: its earlier run ended without stopping; its unfinished work is recovered"
                " / 副本 %s 重启：上次运行未正常停止，其未完成的工作将被恢复",
                self.replica_id,
                self.replica_id,
            )
        self._folded_until = utcnow()
        self.planner.fold(await self.observations.finished_since(self._folded_until - timedelta(seconds=warm_window_s)))
        self._ok("evidence")
        await self.follow_channel_states()
        self._ok("channel_states")
        steps: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("heartbeat", self.config.heartbeat_s, self._beat_step),
            ("channel_states", self.config.state_sync_s, self.follow_channel_states),
            ("evidence", self.config.evidence_sync_s, self.fold_evidence),
        ]
        self._tasks = [
            asyncio.create_task(self._every(what, s, step), name=f"replica-{what}") for what, s, step in steps
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._registered:
            self._registered = False
            try:
                await self.store.stop(self.incarnation)
            except Exception as exc:  # the others take over after dead_after_s instead
                log.warning("could not mark this replica run stopped: %s", type(exc).__name__)

    # --- the steps -------------------------------------------------------------------------

    async def beat(self) -> bool:
        """One heartbeat. False (logged once, at ERROR) when another start took this run's replica id."""
        alive = await self.store.heartbeat(self.incarnation)
        if not alive and not self._replaced_logged:
            self._replaced_logged = True
            log.error(
                "this run of replica %s was replaced by another process with the same replica_id: give every"
                " replica its own [server] replica_id; the other one recovers this one's unfinished work"
                " / 另一个进程使用了相同的 replica_id（%s），本进程的运行已被取代；请为每个副本配置不同的 replica_id",
                self.replica_id,
                self.replica_id,
            )
        return alive

    async def _beat_step(self) -> None:
        # a replaced run fails its heartbeat step: its age grows and PaygateReplicaOutOfStep fires
        if not await self.beat():
            raise RuntimeError(f"this run of replica {self.replica_id} was replaced")

    async def follow_channel_states(self) -> int:
        """Apply every operator state written since this replica last looked; returns how many changed."""
        changed = 0
        for row in await self.channel_states.current():
            if self.planner.apply_operator_state(row, "operator state set through another replica"):
                changed += 1
                log.info("channel state %s (version %d)", row.state, row.version, extra={"channel": row.channel})
        return changed

    async def fold_evidence(self, *, limit: int = 20_000) -> int:
        """Fold in the outcomes recorded since the last fold (less the overlap); returns how many counted."""
        started = utcnow()
        rows = await self.observations.finished_since(
            self._folded_until - timedelta(seconds=self.config.evidence_overlap_s), limit=limit
        )
        counted = self.planner.fold(rows)
        if len(rows) >= limit:  # a full page: the next tick goes on from its last row
            self._folded_until = rows[-1].finished_at + timedelta(seconds=self.config.evidence_overlap_s)
        else:
            self._folded_until = started
        if counted:
            metrics.ROUTING_EVIDENCE_FOLDED.inc(counted)
        return counted

    async def _every(self, what: str, interval_s: float, step: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.REPLICA_SYNC_ERRORS.labels(what=what).inc()
                if what not in self._failing:  # once per outage, not once per tick
                    self._failing.add(what)
                    log.warning("replica sync step %s failed: %s; retrying every %.1f s", what, exc, interval_s)
                continue
            if what in self._failing:
                self._failing.discard(what)
                log.warning("replica sync step %s works again", what)
            self._ok(what)

    def _ok(self, what: str) -> None:
        self._last_ok[what] = time.monotonic()

    # --- metrics -----------------------------------------------------------------------------

    async def sample_metrics(self) -> None:
        now = time.monotonic()
        for what, at in self._last_ok.items():
            metrics.REPLICA_SYNC_AGE.labels(what=what).set(now - at)
        metrics.REPLICAS_ALIVE.set(len(await self.store.alive(self.config.dead_after_s)))
