"""Statements over HTTP: each adapter downloads its simulator's day, faults injected over the admin routes.

For each channel: a few hundred orders through the adapter and thousands more
booked straight into the simulator's ledger, one fault of each kind drawn at
random over ``POST /_admin/statement/faults``; the downloaded statement must
differ from the ledger by exactly those faults. Then what must never be
accepted: a file that does not match the channel's signature or hash.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.alipay import simulator as alipay_simulator
from channels.contract import Channel, Operation, SignRequest, WithholdOrder
from channels.registry import ChannelSpec, factory_for
from channels.sandbox import simulator as sandbox_simulator
from channels.simkit import Behaviour, EntryKind, Rendered, SimulatorHandle, create_simulator, stream_file
from channels.statement import StatementError, StatementFormatError, StatementLine, StatementUnavailable
from channels.statements import statement_format
from channels.wechatpay import simulator as wechatpay_simulator

CARD = "6222020000001234"
THROUGH_THE_ADAPTER = 200
STRAIGHT_INTO_THE_LEDGER = 3_000


@dataclass
class Rig:
    name: str
    sim: SimulatorHandle
    channel: Channel
    agreement_ref: str


@pytest.fixture(params=["sandbox", "alipay", "wechatpay"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    kw: dict[str, Any] = {} if request.param == "sandbox" else {"key_size": 1024}
    sim = create_simulator(request.param, Behaviour(), **kw)
    await sim.start()
    channel = factory_for(request.param)(ChannelSpec(f"{request.param}-st", request.param, sim.adapter_settings()))
    await channel.start()
    started = await channel.sign_agreement(SignRequest("SIGN1", CARD, "Zhang San", "110101199001011234", "138", "ICBC"))
    agreement = await channel.confirm_agreement(started.sign_ref, sim.sms_code(started.sign_ref))
    try:
        yield Rig(request.param, sim, channel, agreement.agreement_ref)
    finally:
        await channel.stop()
        await sim.stop()


def today(rig: Rig) -> date:
    return rig.sim.ledger.booking_day(rig.sim.ledger.now())


async def fetch_lines(rig: Rig, day: date, directory: Path) -> list[StatementLine]:
    fetched = await rig.channel.fetch_statement(day, str(directory))
    with open(fetched.path, "rb") as stream:
        lines = statement_format(fetched.format).iter_lines(stream, channel_id=rig.channel.channel_id, day=day)
        return [replace(line, line_no=0) for line in lines]  # compared across files: where a line was does not matter


async def test_a_busy_day_differs_from_the_ledger_by_exactly_the_injected_faults(rig: Rig, tmp_path: Path) -> None:
    rig.sim.ledger.fee_bps = 60
    orders = [
        WithholdOrder(
            f"HW{i:05d}", 10_000 + i * 100 + (1 if i % 10 == 0 else 0), "CNY", rig.agreement_ref, CARD, "ICBC"
        )
        for i in range(THROUGH_THE_ADAPTER)
    ]  # every tenth is declined (magic amount ...01)
    for start in range(0, len(orders), 25):
        await asyncio.gather(*(rig.channel.withhold(order) for order in orders[start : start + 25]))
    ledger = rig.sim.ledger
    for i in range(STRAIGHT_INTO_THE_LEDGER):
        ledger.record(f"LW{i:05d}", EntryKind.WITHHOLD, 5_000 + i, "CNY", f"acct{i}", {})
        ledger.execute(f"LW{i:05d}")
    day = today(rig)
    before = {line.channel_order_no: line for line in await fetch_lines(rig, day, tmp_path / "before")}
    spec = {"random": {"day": day.isoformat(), "seed": 16, "drop": 1, "amount": 1, "fee": 1, "next_day": 1, "extra": 1}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{rig.sim.base_url}/_admin/statement/faults", json=spec) as answer:
            assert answer.status == 200
            picked = (await answer.json())["picked"]
    after = {line.channel_order_no: line for line in await fetch_lines(rig, day, tmp_path / "after")}

    fmt = statement_format(rig.name)
    succeeded = THROUGH_THE_ADAPTER - THROUGH_THE_ADAPTER // 10 + STRAIGHT_INTO_THE_LEDGER
    assert len(before) == succeeded + (THROUGH_THE_ADAPTER // 10 if fmt.lists_failures else 0)
    missing = set(before) - set(after)
    assert missing == {*picked["drop"], *picked["next_day"]}
    assert set(after) - set(before) == set(picked["extra"])
    changed = {no for no in set(before) & set(after) if before[no] != after[no]}
    assert changed == {*picked["amount"], *picked["fee"]}
    [(amount_order, amount)] = picked["amount"].items()
    [(fee_order, fee)] = picked["fee"].items()
    assert after[amount_order].amount == amount != before[amount_order].amount
    assert after[fee_order].fee == fee != before[fee_order].fee
    following = {line.channel_order_no for line in rig.sim.statements.lines(day + timedelta(days=1))}
    assert following == set(picked["next_day"])  # the line moved, it did not vanish


async def test_the_line_dated_on_the_next_day_is_on_the_next_days_statement(rig: Rig, tmp_path: Path) -> None:
    await rig.channel.withhold(WithholdOrder("LATE1", 12_300, "CNY", rig.agreement_ref, CARD, "ICBC"))
    day = today(rig)
    rig.sim.statements.faults.date_next_day("LATE1")
    assert "LATE1" not in {line.channel_order_no for line in await fetch_lines(rig, day, tmp_path / "a")}
    # The next day is not published yet; from Python, a test can look at what it will say.
    following = rig.sim.statements.lines(day + timedelta(days=1))
    assert [line.channel_order_no for line in following] == ["LATE1"]


def _flip_a_byte(rendered: Rendered) -> None:
    with open(rendered.path, "r+b") as file:
        file.seek(rendered.size // 2)
        byte = file.read(1)
        file.seek(rendered.size // 2)
        file.write(bytes([byte[0] ^ 0x01]))


async def test_a_file_that_does_not_match_its_signature_or_hash_is_refused(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(50):
        await rig.channel.withhold(WithholdOrder(f"TW{i}", 20_000 + i * 100, "CNY", rig.agreement_ref, CARD, "ICBC"))
    day = today(rig)

    async def tampered(request: Any, rendered: Rendered, **kw: Any) -> Any:
        _flip_a_byte(rendered)  # after the simulator signed or hashed it: what a broken proxy or an attacker does
        return await stream_file(request, rendered, **kw)

    module = {"sandbox": sandbox_simulator, "alipay": alipay_simulator, "wechatpay": wechatpay_simulator}[rig.name]
    monkeypatch.setattr(module, "stream_file", tampered)
    if rig.name == "alipay":
        # Alipay's bill carries no digest: the zip's own checks refuse it when it is read.
        with pytest.raises(StatementFormatError):
            await fetch_lines(rig, day, tmp_path)
        return
    with pytest.raises(StatementError) as caught:
        await rig.channel.fetch_statement(day, str(tmp_path))
    assert not isinstance(caught.value, StatementUnavailable)
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


async def test_an_expired_download_url_is_unavailable(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rig.name == "sandbox":
        pytest.skip("the sandbox serves the file in the answer itself")
    module = alipay_simulator if rig.name == "alipay" else wechatpay_simulator
    monkeypatch.setattr(module, "BILL_URL_TTL_S", 0.0)
    with pytest.raises(StatementUnavailable):
        await rig.channel.fetch_statement(today(rig), str(tmp_path))
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


async def test_statements_need_the_capability_and_the_right_credentials(rig: Rig, tmp_path: Path) -> None:
    assert Operation.STATEMENT in rig.channel.operations
    if rig.name != "sandbox":
        return
    settings = {**rig.sim.adapter_settings(), "secret": "not-the-secret"}
    stranger = factory_for("sandbox")(ChannelSpec("sbx-wrong", "sandbox", settings))
    async with stranger:  # type: ignore[attr-defined]
        with pytest.raises(StatementError) as caught:
            await stranger.fetch_statement(today(rig), str(tmp_path))
        assert not isinstance(caught.value, StatementUnavailable)
    without = factory_for("sandbox")(
        ChannelSpec("sbx-none", "sandbox", {**rig.sim.adapter_settings(), "operations": ["withhold"]})
    )
    with pytest.raises(StatementUnavailable):
        await without.fetch_statement(today(rig), str(tmp_path))


async def test_a_slow_statement_is_not_held_to_an_orders_timeout(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendering a large day takes the channel a while; the order timeout (0.5 s here) must not cut the fetch."""
    settings = {**rig.sim.adapter_settings(), "timeout_s": 0.5, "connect_timeout_s": 0.2}
    hasty = factory_for(rig.name)(ChannelSpec(f"{rig.name}-hasty", rig.name, settings))
    render = type(rig.sim.statements).render

    async def slow_render(self: Any, day: date, write: Any) -> Rendered:
        await asyncio.sleep(1.0)
        return await render(self, day, write)

    monkeypatch.setattr(type(rig.sim.statements), "render", slow_render)
    await hasty.start()  # type: ignore[attr-defined]
    try:
        fetched = await hasty.fetch_statement(today(rig), str(tmp_path))
    finally:
        await hasty.stop()
    assert os.path.exists(fetched.path)
