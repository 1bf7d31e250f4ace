"""The ``[reconciliation]`` table.

::

    [reconciliation]
    enabled = true              # run the daily scheduler on this replica (runs by hand always work)
    carry_over_days = 1         # a success missing from its day's statement is looked for on this many
                                # following days' statements before it is declared local_only (0: at once)
    stage_batch = 5000          # statement lines per staged batch (one LOAD DATA, or multi-row INSERTs)
    stage_concurrency = 3       # batches of one run in flight at once (each on its own connection)
    tick_s = 30.0               # how often the scheduler looks for a run that is due
    statement_dir = ""          # where downloaded statements are kept ("" = a temporary directory)

    [reconciliation.run_at]     # channel id -> "HH:MM" (business timezone): reconcile the previous day then
    bank-a = "10:30"

Read by the one configuration reader: a problem is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Annotated

from pydantic import Field

from channels.config import TABLE, ConfigError, join
from gateway.plans.config import HHMM


@dataclass(frozen=True)
class ReconConfig:
    """``[reconciliation]``: see the module docstring."""

    __pydantic_config__ = TABLE

    enabled: bool = True
    carry_over_days: Annotated[int, Field(ge=0, le=31)] = 1
    stage_batch: Annotated[int, Field(ge=1, le=50_000)] = 5000
    stage_concurrency: Annotated[int, Field(ge=1, le=16)] = 3
    tick_s: Annotated[float, Field(ge=0.01, le=3600)] = 30.0
    statement_dir: str = ""
    run_at: Mapping[str, HHMM] = field(default_factory=dict)

    def check_config(self, key: str) -> None:
        for channel in self.run_at:
            if not channel or len(channel) > 64:
                raise ConfigError(join(join(key, "run_at"), channel), "channel ids are 1-64 characters")

    def check_channels(self, known: set[str]) -> None:
        for channel in self.run_at:
            if channel not in known:
                raise ConfigError(
                    f"reconciliation.run_at.{channel}", f"no such channel (known: {', '.join(sorted(known)) or 'none'})"
                )

    def scheduled(self) -> dict[str, time]:
        return dict(self.run_at)
