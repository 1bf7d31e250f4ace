"""Behaviour validation and decisions, the Ledger's guarantees, callback policy."""

from __future__ import annotations

import asyncio
import json
import random
import statistics

import pytest

from channels.config import ConfigError
from channels.registry import ADAPTERS, AdapterEntry, factory_for
from channels.simkit import (
    MAGIC,
    SIMULATORS,
    Answer,
    Behaviour,
    CallbackPolicy,
    Delivery,
    Entry,
    EntryKind,
    EntryStatus,
    Fate,
    InsufficientBalance,
    Ledger,
    LedgerError,
    OrderClosed,
    OrderDesk,
    OrderNoConflict,
    Sms,
    SmsLog,
    TaskSet,
    body_ack,
    create_simulator,
    mask_account,
)

CARD = "6222020200112233445"


# --- Behaviour ---------------------------------------------------------------


def test_defaults_succeed_everything_but_magic() -> None:
    behaviour = Behaviour()
    rng = random.Random(1)
    assert {behaviour.decide(10_000 + cents, rng) for cents in range(10, 100)} == {Fate.SUCCEED}
    assert behaviour.latency_s(rng) == 0.0
    assert not behaviour.in_outage()


@pytest.mark.parametrize(
    ("cents", "fate"),
    [
        (1, Fate.INSUFFICIENT_FUNDS),
        (2, Fate.ACCOUNT_FROZEN),
        (3, Fate.CHANNEL_BUSY),
        (4, Fate.BANK_NOT_SUPPORTED),
        (5, Fate.PENDING_THEN_SUCCEED),
        (6, Fate.PENDING_THEN_FAIL),
        (7, Fate.TIMEOUT),
        (8, Fate.ERROR_5XX),
        (9, Fate.UNMAPPED_CODE),
    ],
)
def test_magic_amounts_fix_the_fate_before_the_random_mix(cents: int, fate: Fate) -> None:
    # Even with a mix that would decline everything, the magic value wins.
    behaviour = Behaviour(declines={"channel_busy": 1.0})
    assert behaviour.decide(123_400 + cents, random.Random(0)) is fate
    assert MAGIC[cents] is fate


def test_magic_off_uses_the_random_mix() -> None:
    behaviour = Behaviour(magic=False)
    assert behaviour.decide(12_301, random.Random(0)) is Fate.SUCCEED


def test_random_mix_follows_the_ratios_and_the_seed() -> None:
    behaviour = Behaviour(declines={"insufficient_funds": 0.2}, pending_ratio=0.3, settle_success_ratio=0.5)
    fates = [behaviour.decide(10_000, random.Random(7)) for _ in range(3)]
    assert len(set(fates)) == 1  # same seed, same first draw
    rng = random.Random(42)
    drawn = [behaviour.decide(10_000, rng) for _ in range(4000)]
    share = {fate: drawn.count(fate) / len(drawn) for fate in set(drawn)}
    assert share[Fate.INSUFFICIENT_FUNDS] == pytest.approx(0.2, abs=0.03)
    assert share[Fate.PENDING_THEN_SUCCEED] == pytest.approx(0.15, abs=0.03)
    assert share[Fate.PENDING_THEN_FAIL] == pytest.approx(0.15, abs=0.03)
    assert share[Fate.SUCCEED] == pytest.approx(0.5, abs=0.03)


def test_latency_is_lognormal_with_the_given_quantiles() -> None:
    behaviour = Behaviour(p50_ms=20, p99_ms=200)
    rng = random.Random(3)
    samples = sorted(behaviour.latency_s(rng) for _ in range(5000))
    assert statistics.median(samples) == pytest.approx(0.020, rel=0.1)
    assert samples[int(0.99 * len(samples))] == pytest.approx(0.200, rel=0.25)


def test_outage_windows_and_toggle() -> None:
    behaviour = Behaviour(outage_windows=[(100.0, 200.0)])
    assert behaviour.in_outage(100.0)
    assert behaviour.in_outage(199.9)
    assert not behaviour.in_outage(200.0)
    assert not behaviour.in_outage(99.0)
    behaviour.outage = True
    assert behaviour.in_outage(5.0)


@pytest.mark.parametrize(
    ("settings", "bad_key"),
    [
        ({"pending_ratio": 1.5}, "ch[0].behaviour.pending_ratio"),
        ({"timeout_ratio": -0.1}, "ch[0].behaviour.timeout_ratio"),
        ({"error_5xx_ratio": "x"}, "ch[0].behaviour.error_5xx_ratio"),
        ({"declines": {"stolen_card": 0.1}}, "ch[0].behaviour.declines.stolen_card"),
        ({"declines": [0.1]}, "ch[0].behaviour.declines"),
        ({"p50_ms": 50, "p99_ms": 10}, "ch[0].behaviour.p99_ms"),
        ({"p99_ms": 10}, "ch[0].behaviour.p50_ms"),
        ({"settle_after_ms": [500, 100]}, "ch[0].behaviour.settle_after_ms"),
        ({"settle_after_ms": 5}, "ch[0].behaviour.settle_after_ms"),
        ({"outage_windows": [[10, 5]]}, "ch[0].behaviour.outage_windows[0]"),
        ({"outage": "yes"}, "ch[0].behaviour.outage"),
        ({"magic": 1}, "ch[0].behaviour.magic"),
        ({"seed": 1.5}, "ch[0].behaviour.seed"),
        ({"latency": 5}, "ch[0].behaviour.latency"),
        ({"pending_ratio": 0.6, "timeout_ratio": 0.6}, "ch[0].behaviour"),
    ],
)
def test_from_settings_names_the_bad_key(settings: dict[str, object], bad_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Behaviour.from_settings(settings, "ch[0].behaviour")
    assert info.value.key == bad_key


def test_from_settings_round_trips_to_settings() -> None:
    settings = {
        "p50_ms": 5,
        "p99_ms": 50,
        "declines": {"channel_busy": 0.1},
        "settle_after_ms": [10, 20],
        "outage_windows": [[1, 2]],
        "seed": 9,
        "notify_final": True,
    }
    behaviour = Behaviour.from_settings(settings, "b")
    assert behaviour.settle_after_ms == (10, 20)
    assert behaviour.outage_windows == [(1, 2)]
    again = Behaviour.from_settings(json.loads(json.dumps(behaviour.to_settings())), "b")
    assert again == behaviour


def test_update_is_all_or_nothing() -> None:
    behaviour = Behaviour(pending_ratio=0.1)
    with pytest.raises(ConfigError):
        behaviour.update({"outage": True, "timeout_ratio": 2.0})
    assert behaviour.outage is False and behaviour.timeout_ratio == 0.0
    behaviour.update({"outage": True})
    assert behaviour.outage is True and behaviour.pending_ratio == 0.1


def test_constructor_validates_too() -> None:
    with pytest.raises(ConfigError):
        Behaviour(settle_success_ratio=3.0)


# --- Ledger ------------------------------------------------------------------


def _withhold(ledger: Ledger, order_no: str = "o1", amount: int = 500, account: str = CARD) -> tuple[Entry, bool]:
    return ledger.record(order_no, EntryKind.WITHHOLD, amount, "CNY", account, {"amount": amount, "account": account})


def test_identical_repeat_returns_the_existing_entry_without_a_new_debit() -> None:
    ledger = Ledger(default_balance=1_000)
    entry, new = _withhold(ledger)
    assert new
    ledger.execute("o1")
    again, new_again = _withhold(ledger)
    assert again is entry and not new_again
    ledger.execute("o1")  # idempotent
    assert ledger.debit_count("o1") == 1
    assert ledger.balance(CARD) == 500
    assert ledger.debits_by_order() == {"o1": 1}


def test_same_order_no_with_other_params_conflicts() -> None:
    ledger = Ledger()
    _withhold(ledger, amount=500)
    with pytest.raises(OrderNoConflict):
        _withhold(ledger, amount=501)
    with pytest.raises(OrderNoConflict):
        ledger.record("o1", EntryKind.PAYOUT, 500, "CNY", CARD, {"amount": 500, "account": CARD})


def test_closed_unknown_order_is_a_tombstone() -> None:
    ledger = Ledger()
    assert ledger.close("ghost") is None
    assert ledger.is_closed("ghost")
    with pytest.raises(OrderClosed):
        _withhold(ledger, order_no="ghost")
    assert ledger.entries() == [] and ledger.movements() == []


def test_close_of_a_known_order_changes_nothing() -> None:
    ledger = Ledger()
    entry, _ = _withhold(ledger)
    assert ledger.close("o1") is entry
    assert entry.status is EntryStatus.PENDING and not ledger.is_closed("o1")


def test_insufficient_balance_moves_nothing() -> None:
    ledger = Ledger(default_balance=100)
    _withhold(ledger, amount=500)
    with pytest.raises(InsufficientBalance):
        ledger.execute("o1")
    assert ledger.balance(CARD) == 100 and ledger.debit_count("o1") == 0
    failed = ledger.fail("o1", "INSUFFICIENT_FUNDS")
    assert failed.status is EntryStatus.FAILED and failed.final
    with pytest.raises(LedgerError):
        ledger.execute("o1")


def test_fail_does_not_touch_a_final_order() -> None:
    ledger = Ledger()
    _withhold(ledger)
    ledger.execute("o1")
    assert ledger.fail("o1", "CHANNEL_BUSY").status is EntryStatus.SUCCEEDED


def test_money_flows_and_totals() -> None:
    ledger = Ledger(default_balance=10_000, merchant_float=1_000)
    _withhold(ledger, amount=700)
    ledger.execute("o1")
    ledger.record("p1", EntryKind.PAYOUT, 1_500, "CNY", "6200001111", {"amount": 1_500})
    ledger.execute("p1")
    ledger.record("r1", EntryKind.REFUND, 200, "CNY", CARD, {"amount": 200}, original_order_no="o1")
    ledger.record("r2", EntryKind.REFUND, 100, "CNY", CARD, {"amount": 100}, original_order_no="o1")
    ledger.execute("r1")
    ledger.fail("r2", "CHANNEL_BUSY")
    assert ledger.refunded_total("o1") == 200
    assert ledger.balance(CARD) == 10_000 - 700 + 200
    assert ledger.balance("6200001111") == 10_000 + 1_500
    assert ledger.merchant_balance == 1_000 + 700 - 1_500 - 200
    totals = ledger.totals()
    assert totals["withhold_total"] == 700
    assert totals["payout_total"] == 1_500
    assert totals["refund_total"] == 200
    assert totals["debits"] == 3 and totals["orders"] == 4


def test_dump_masks_accounts_and_is_json() -> None:
    ledger = Ledger()
    _withhold(ledger)
    ledger.execute("o1")
    ledger.close("ghost")
    text = ledger.to_json()
    assert CARD not in text
    dump = json.loads(text)
    assert dump["entries"][0]["account"] == mask_account(CARD)
    assert dump["entries"][0]["account"].endswith("3445")
    assert dump["entries"][0]["debits"] == 1
    assert dump["closed"] == ["ghost"]


def test_frozen_accounts() -> None:
    ledger = Ledger()
    ledger.freeze(CARD)
    assert ledger.is_frozen(CARD)
    ledger.unfreeze(CARD)
    assert not ledger.is_frozen(CARD)


# --- callbacks and registry ----------------------------------------------------


def test_callback_policy_backs_off_and_caps() -> None:
    policy = CallbackPolicy(retry_delay_s=0.1, backoff=2.0, max_delay_s=0.5)
    assert [policy.delay(n) for n in range(1, 7)] == [0.0, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_body_ack() -> None:
    ack = body_ack(b"OK")
    assert ack(200, b"OK") and ack(200, b" ok\n")
    assert not ack(200, b"FAIL") and not ack(500, b"OK")


def test_simulator_registry() -> None:
    assert set(SIMULATORS) == {"sandbox", "alipay", "wechatpay"}
    with pytest.raises(KeyError, match="no simulator"):
        create_simulator("carrier-pigeon")
    sim = create_simulator("sandbox", Behaviour(seed=1), merchant_id="m1")
    assert sim.behaviour.seed == 1
    assert sim.adapter_settings()["merchant_id"] == "m1"


def test_simulators_are_the_registry_map_s_simulated_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    # one map: registering an adapter (with or without a simulator) in ADAPTERS is all it takes
    monkeypatch.setitem(ADAPTERS, "pigeon", AdapterEntry("channels.sandbox.adapter:build"))
    monkeypatch.setitem(
        ADAPTERS, "owl", AdapterEntry("channels.sandbox.adapter:build", simulator="channels.sandbox.simulator:create")
    )
    assert dict(SIMULATORS) == {name: e.simulator for name, e in ADAPTERS.items() if e.simulator is not None}
    assert "owl" in SIMULATORS and "pigeon" not in SIMULATORS
    with pytest.raises(KeyError, match="no simulator for adapter 'pigeon'"):
        create_simulator("pigeon")
    assert create_simulator("owl", merchant_id="m2").adapter_settings()["merchant_id"] == "m2"
    with pytest.raises(ConfigError, match="unknown adapter 'carrier-pigeon'"):
        factory_for("carrier-pigeon", key="channels[3]")


# --- OrderDesk -------------------------------------------------------------------


def _desk(behaviour: Behaviour | None = None, **kw: object) -> tuple[OrderDesk, list[str]]:
    finals: list[str] = []
    desk = OrderDesk(
        Ledger(default_balance=1_000, merchant_float=500),
        behaviour or Behaviour(settle_after_ms=(0, 0)),
        TaskSet(),
        lambda entry: finals.append(f"{entry.order_no}:{entry.code}"),
        **kw,  # type: ignore[arg-type]
    )
    return desk, finals


def _submit(desk: OrderDesk, order_no: str, amount: int, kind: EntryKind = EntryKind.WITHHOLD, **kw: object) -> Answer:
    return desk.submit(order_no, kind, amount, CARD, {"amount": amount}, **kw)  # type: ignore[arg-type]


async def test_desk_executes_once_and_answers_repeats_with_the_state() -> None:
    desk, finals = _desk()
    first = _submit(desk, "o1", 100)
    assert (first.code, first.delivery, first.entry.status) == ("OK", Delivery.ANSWER, EntryStatus.SUCCEEDED)
    repeat = _submit(desk, "o1", 100)
    assert repeat.code == "REPEAT" and repeat.entry is first.entry
    assert desk.ledger.debits_by_order() == {"o1": 1}
    assert finals == []  # notify_final is off


@pytest.mark.parametrize(
    ("amount", "code", "delivery", "debits"),
    [
        (101, "INSUFFICIENT_FUNDS", Delivery.ANSWER, 0),
        (103, "CHANNEL_BUSY", Delivery.ANSWER, 0),
        (105, "PROCESSING", Delivery.ANSWER, 0),
        (107, "OK", Delivery.TIMEOUT, 1),
        (108, "OK", Delivery.ERROR_5XX, 1),
        (109, "UNMAPPED", Delivery.ANSWER, 1),
    ],
)
async def test_desk_follows_the_fate(amount: int, code: str, delivery: Delivery, debits: int) -> None:
    desk, _ = _desk()
    answer = _submit(desk, "o1", amount)
    assert (answer.code, answer.delivery) == (code, delivery)
    assert desk.ledger.debit_count("o1") == debits


async def test_desk_settles_pending_orders_and_reports_them() -> None:
    desk, finals = _desk()
    _submit(desk, "ok", 105)
    _submit(desk, "ko", 106)
    await asyncio.wait_for(desk._tasks.join(), 2)
    assert sorted(finals) == ["ko:INSUFFICIENT_FUNDS", "ok:OK"]
    assert desk.ledger.debits_by_order() == {"ok": 1}


async def test_desk_precheck_and_notify_final() -> None:
    desk, finals = _desk(Behaviour(notify_final=True))
    refused = _submit(desk, "o1", 100, precheck=lambda entry: "AGREEMENT_INVALID")
    assert refused.code == "AGREEMENT_INVALID" and refused.entry.status is EntryStatus.FAILED
    _submit(desk, "o2", 100, precheck=lambda entry: None)
    assert finals == ["o1:AGREEMENT_INVALID", "o2:OK"]
    assert desk.ledger.debits_by_order() == {"o2": 1}


async def test_desk_shortfalls_and_frozen_accounts() -> None:
    desk, _ = _desk()
    assert _submit(desk, "big", 5_000).code == "INSUFFICIENT_FUNDS"
    assert _submit(desk, "payout", 600, kind=EntryKind.PAYOUT).code == "MERCHANT_BALANCE_INSUFFICIENT"
    desk.ledger.freeze(CARD)
    assert _submit(desk, "frozen", 100).code == "ACCOUNT_FROZEN"
    assert desk.ledger.movements() == []


@pytest.mark.parametrize("close_pending", [True, False])
async def test_desk_close(close_pending: bool) -> None:
    desk, finals = _desk(Behaviour(settle_after_ms=(50, 50)), close_pending=close_pending)
    assert desk.close("ghost") is None and desk.ledger.is_closed("ghost")
    pending = _submit(desk, "slow", 105).entry
    desk.close("slow")
    await asyncio.wait_for(desk._tasks.join(), 2)
    if close_pending:
        assert (pending.status, pending.code) == (EntryStatus.FAILED, "ORDER_CLOSED")
        assert desk.ledger.movements() == [] and finals == []
    else:
        assert pending.status is EntryStatus.SUCCEEDED and finals == ["slow:OK"]


# --- per-request work stays O(1) as a run goes on ---------------------------------------------------


class _NoScan(dict):  # type: ignore[type-arg]
    """A ledger table that refuses to be walked: what a per-request operation must never need."""

    def values(self):  # type: ignore[no-untyped-def,override]
        raise AssertionError("the ledger was scanned")

    items = __iter__ = values  # type: ignore[assignment]


def test_refund_sums_and_debit_counts_are_running_totals() -> None:
    ledger = Ledger()
    ledger._entries = _NoScan()  # type: ignore[assignment]
    ledger._movements = _NoScanList()  # type: ignore[assignment]
    ledger.record("o1", EntryKind.WITHHOLD, 1_000, "CNY", "acct-1", {"a": 1})
    ledger.execute("o1")
    for i in range(2_000):  # a long run's worth of other orders
        ledger.record(f"x{i}", EntryKind.WITHHOLD, 1, "CNY", "acct-2", {"i": i})
    ledger.record("r1", EntryKind.REFUND, 300, "CNY", "acct-1", {"r": 1}, original_order_no="o1")
    ledger.record("r2", EntryKind.REFUND, 200, "CNY", "acct-1", {"r": 2}, original_order_no="o1")
    assert ledger.refunded_total("o1") == 500  # pending refunds may still succeed: counted
    ledger.execute("r1")
    ledger.fail("r2", "DECLINED")
    ledger.fail("r2", "DECLINED")  # a final order is unchanged: not subtracted twice
    assert ledger.refunded_total("o1") == 300 and ledger.refunded_total("x1") == 0
    assert ledger.debit_count("o1") == 1 and ledger.debit_count("r1") == 1 and ledger.debit_count("r2") == 0
    assert ledger.by_txn_id(ledger.get("o1").txn_id) is ledger.get("o1")  # type: ignore[union-attr]


class _NoScanList(list):  # type: ignore[type-arg]
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the movements were scanned")


def test_the_sms_log_keeps_the_last_message_per_phone() -> None:
    log = SmsLog(clock=lambda: 42.0)
    log.send("13800138000", "111111", "S-1")
    log.send("13900139000", "222222", "S-2")
    log.send("13800138000", "333333", "S-3")
    assert log.last("13800138000") == Sms("13800138000", "333333", "S-3", 42.0)
    assert log.last("13900139000").code == "222222"
    with pytest.raises(KeyError):
        log.last("13700137000")
