"""The ``[funders]`` and ``[settlement]`` tables, and the funder registry requests are checked against.

::

    [funders.xd]                       # the funder id (1-32 chars a-z 0-9 . _ -): what shares name
    name = "某某小额贷款有限公司"          # shown on statements
    currency = "CNY"                   # a split in another currency naming this funder is refused
    payout_account = "6222020000001234"    # the account the funder is settled to (8-32 digits)
    account_name = "某某小额贷款有限公司"   # the payee name for the payout
    bank_code = "ICBC"                 # the payee's bank
    settle_from = "report"             # a channel id: the day's net is paid out through the payout
                                       # path, that channel preferred; "report": statement only

    [settlement]
    enabled = true                     # run the daily settlement scheduler on this replica
    settle_after = "00:30"             # a day is settled from this local time of the next day on
    lookback_days = 7                  # days before yesterday settled too if still unsettled
    caller = "paygate-settlement"      # the caller the settlement payouts are recorded under
    tick_s = 30.0                      # how often the scheduler looks
    wait_s = 10.0                      # how long a run waits for a payout's result

Every problem is a ``ConfigError`` naming the key; a ``settle_from`` naming no configured
channel stops start-up too (checked in gateway/app.py, where the channels are known).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import time
from typing import Annotated

from pydantic import AfterValidator, Field, PlainValidator

from channels.config import TABLE, ConfigError, join
from gateway.businessday import parse_hhmm
from gateway.domain import CURRENCIES, mask_account
from gateway.errors import InvalidInput
from gateway.splits.allocation import Shares

REPORT_ONLY = "report"
FUNDER_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_ACCOUNT = re.compile(r"[0-9]{8,32}")
_BANK = re.compile(r"[A-Z][A-Z0-9]{1,15}")


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"unknown or unsupported currency {value[:8]!r}")
    return value


def _account(value: str) -> str:
    if not _ACCOUNT.fullmatch(value):
        raise ValueError("must be 8-32 digits")
    return value


def _bank(value: str) -> str:
    if not _BANK.fullmatch(value):
        raise ValueError("must be an upper-case bank code like ICBC")
    return value


def _hhmm(value: object) -> time:
    if not isinstance(value, str):
        raise ValueError("must be a string HH:MM")
    return parse_hhmm(value)


@dataclass(frozen=True)
class FunderConfig:
    """One ``[funders.<id>]`` table (module docstring)."""

    __pydantic_config__ = TABLE

    name: Annotated[str, Field(min_length=1, max_length=64)]
    payout_account: Annotated[str, AfterValidator(_account)] = ""
    account_name: Annotated[str, Field(max_length=64)] = ""
    bank_code: Annotated[str, AfterValidator(_bank)] = "ICBC"
    currency: Annotated[str, AfterValidator(_currency)] = "CNY"
    settle_from: Annotated[str, Field(min_length=1, max_length=64)] = REPORT_ONLY

    def check_config(self, key: str) -> None:
        if self.settle_from != REPORT_ONLY and not self.payout_account:
            raise ConfigError(join(key, "payout_account"), "is required when settle_from names a channel")
        if self.settle_from != REPORT_ONLY and not self.account_name:
            raise ConfigError(join(key, "account_name"), "is required when settle_from names a channel")

    @property
    def report_only(self) -> bool:
        return self.settle_from == REPORT_ONLY


@dataclass(frozen=True)
class SettlementConfig:
    """``[settlement]`` (module docstring)."""

    __pydantic_config__ = TABLE

    enabled: bool = True
    settle_after: Annotated[time, PlainValidator(_hhmm)] = time(0, 30)
    lookback_days: Annotated[int, Field(ge=0, le=62)] = 7
    caller: Annotated[str, Field(min_length=1, max_length=64)] = "paygate-settlement"
    tick_s: Annotated[float, Field(ge=0.01, le=3600)] = 30.0
    wait_s: Annotated[float, Field(ge=0, le=600)] = 10.0


@dataclass(frozen=True)
class Funder:
    """A configured funder."""

    funder_id: str
    config: FunderConfig

    @property
    def account_masked(self) -> str:
        return mask_account(self.config.payout_account) if self.config.payout_account else ""


def check_funders(table: Mapping[str, FunderConfig], channels: Collection[str]) -> None:
    """Funder ids are names; a ``settle_from`` is ``report`` or a configured channel (ConfigError naming the key)."""
    for funder_id, funder in table.items():
        key = join("funders", funder_id)
        if not FUNDER_ID.fullmatch(funder_id):
            raise ConfigError(key, "funder ids are 1-32 chars of a-z 0-9 . _ -")
        if not funder.report_only and funder.settle_from not in channels:
            known = ", ".join(sorted(channels)) or "none configured"
            raise ConfigError(join(key, "settle_from"), f'must be "report" or a configured channel ({known})')


class Funders:
    """The configured funders, by id; checks the funders a request's shares name."""

    def __init__(self, table: Mapping[str, FunderConfig]) -> None:
        for funder_id in table:
            if not FUNDER_ID.fullmatch(funder_id):
                raise ConfigError(join("funders", funder_id), "funder ids are 1-32 chars of a-z 0-9 . _ -")
        self._by_id = {fid: Funder(fid, cfg) for fid, cfg in sorted(table.items())}

    def __iter__(self) -> Iterator[Funder]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, funder_id: object) -> bool:
        return funder_id in self._by_id

    def get(self, funder_id: str) -> Funder | None:
        return self._by_id.get(funder_id)

    def check(self, shares: Shares, currency: str, *, field: str = "shares") -> Shares:
        """``shares`` when every funder they name is configured and keeps ``currency``; else InvalidInput."""
        for i, share in enumerate(shares.items):
            funder = self._by_id.get(share.funder_id)
            if funder is None:
                raise InvalidInput(f"{field}[{i}].funder_id", f"unknown funder {share.funder_id[:32]!r}")
            if funder.config.currency != currency:
                raise InvalidInput(
                    f"{field}[{i}].funder_id",
                    f"funder {share.funder_id!r} is settled in {funder.config.currency}, not {currency}",
                )
        return shares
