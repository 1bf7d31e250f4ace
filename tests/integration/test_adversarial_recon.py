"""Adversarial probes: statement files an operator imports that are not what they claim to be.

Starting from the sandbox bank's real statement of the day (three successes), each file is changed
one way (truncated, other columns, a BOM, GBK bytes, CRLF, a duplicated line, amounts that are not
minor units, negative or beyond int64, another day's header, a line booked on another day). Each is refused as
``INVALID_ARGUMENT`` naming ``content`` and the line, its run recorded FAILED with nothing of the
file kept (no lines staged, no items, no flow touched); never ``INTERNAL``. What is well formed but
only written differently (CRLF) is reconciled as the plain file is; one order listed twice is refused.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date

import grpc
import pytest

from channels.sandbox.statement import write_statement
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2, recon_pb2, recon_pb2_grpc
from tests.support.harness import Harness, running_gateway

pytestmark = pytest.mark.integration


def statement_of(h: Harness, day: date) -> bytes:
    out = io.BytesIO()
    write_statement(h.sims["bank-a"].statements.lines(day), out, day=day, merchant_id="sandbox-merchant")
    return out.getvalue()


async def successes(h: Harness, prefix: str, amounts: list[int]) -> None:
    """A bound card's withholds of ``amounts`` on bank-a, each SUCCEEDED."""
    card = luhn_card()
    await h.bind_card(card, ["bank-a"])
    for i, amount in enumerate(amounts):
        flow = await h.stub.Withhold(
            gateway_pb2.WithholdRequest(
                request_id=f"{prefix}-{i}",
                amount=gateway_pb2.Money(amount=amount, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
            ),
            metadata=h.md(),
        )
        assert flow.status == gateway_pb2.SUCCEEDED


def import_request(day: date, content: bytes, file_name: str) -> recon_pb2.ImportStatementRequest:
    return recon_pb2.ImportStatementRequest(
        channel="bank-a",
        business_day=day.isoformat(),
        format="sandbox",
        content=content,
        file_name=file_name,
        reason="adversarial probe",
    )


def lines_of(content: bytes) -> list[bytes]:
    return content.split(b"\n")


def detail(content: bytes, index: int = 0) -> tuple[list[bytes], int]:
    """The file's lines and the position of its ``index``-th detail line (after the column header)."""
    lines = lines_of(content)
    header = next(i for i, line in enumerate(lines) if line.startswith(b"order_no,"))
    return lines, header + 1 + index


def set_cell(content: bytes, column: int, value: bytes, index: int = 0) -> bytes:
    lines, at = detail(content, index)
    cells = lines[at].split(b",")
    cells[column] = value
    lines[at] = b",".join(cells)
    return b"\n".join(lines)


def truncated_mid_line(content: bytes) -> bytes:
    lines, at = detail(content, 1)
    return b"\n".join(lines[:at]) + b"\n" + lines[at][:12]


def without_trailer(content: bytes) -> bytes:
    return b"\n".join(line for line in lines_of(content) if not line.startswith(b"# end:"))


def other_columns(content: bytes) -> bytes:
    return content.replace(b"order_no,kind,", b"order,kind,", 1)


def one_column_short(content: bytes) -> bytes:
    lines, at = detail(content)
    lines[at] = lines[at].rsplit(b",", 1)[0]
    return b"\n".join(lines)


def other_day(content: bytes) -> bytes:
    lines = lines_of(content)
    return b"\n".join(b"# day: 2001-01-01" if line.startswith(b"# day:") else line for line in lines)


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda c: b"",
    "truncated in a line": truncated_mid_line,
    "no trailer": without_trailer,
    "unknown column": other_columns,
    "a short row": one_column_short,
    "a BOM": lambda c: b"\xef\xbb\xbf" + c,
    "GBK bytes": lambda c: set_cell(c, 7, "工行".encode("gbk")),
    "3 decimals": lambda c: set_cell(c, 3, b"100.005"),
    "a decimal amount": lambda c: set_cell(c, 3, b"100.00"),
    "a negative amount": lambda c: set_cell(c, 3, b"-100"),
    "beyond int64": lambda c: set_cell(c, 3, b"99999999999999999999"),
    "a full-width digit": lambda c: set_cell(c, 3, "１００".encode()),
    "another day's file": other_day,
    "a bad time": lambda c: set_cell(c, 6, b"2026-W50-1T00:00:00Z"),
    "booked years later": lambda c: set_cell(c, 6, b"2030-01-01T00:00:00.000000Z"),
    "booked the day before": lambda c: set_cell(c, 6, b"2001-01-01T00:00:00.000000Z"),
    "the summary off by a fen": lambda c: c.replace(b"# end: lines=3", b"# end: lines=4"),
}


async def test_malformed_statements_are_refused_whole_never_internal(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False)}) as h:
        await successes(h, "adv-recon", [10_000, 10_001, 10_002])
        sim = h.sims["bank-a"]
        day = sim.ledger.booking_day(sim.ledger.now())
        good = statement_of(h, day)
        assert b"# end: lines=3 " in good
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)

        async def imported(content: bytes) -> recon_pb2.ReconRun:
            return await recon.Import(import_request(day, content, "probe.csv"), metadata=h.op_md)

        wrong: list[str] = []
        for name, change in MALFORMED.items():
            try:
                run = await imported(change(good))
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.INVALID_ARGUMENT or "content" not in (err.details() or ""):
                    wrong.append(f"{name}: {err.code()} {err.details()}")
                continue
            wrong.append(f"{name}: accepted ({run.status}, {run.lines} lines)")
        assert not wrong, "\n".join(wrong)
        runs = await h.gateway.db.fetchall("SELECT id, status FROM recon_runs ORDER BY id")
        assert [r["status"] for r in runs] == ["FAILED"] * (len(MALFORMED) - 1)  # an empty file makes no run
        for table in ("recon_lines", "recon_items"):
            kept = await h.gateway.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
            assert kept is not None and kept["n"] == 0, table  # nothing of a refused file is kept

        # well formed, only written differently: the same reconciliation
        crlf = await imported(good.replace(b"\n", b"\r\n"))
        plain = await imported(good)
        assert (crlf.status, crlf.outcome, crlf.lines, crlf.matched) == ("SUCCEEDED", "consistent", 3, 3)
        assert (plain.status, plain.outcome, plain.lines, plain.matched) == ("SUCCEEDED", "consistent", 3, 3)


async def test_a_statement_listing_one_order_twice_is_refused_naming_both_lines(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False)}) as h:
        await successes(h, "adv-dup", [20_000, 20_001])
        sim = h.sims["bank-a"]
        day = sim.ledger.booking_day(sim.ledger.now())
        good = statement_of(h, day)
        lines, at = detail(good)
        amount = int(lines[at].split(b",")[3])
        fee = int(lines[at].split(b",")[5])
        twice = [*lines[: at + 1], lines[at], *lines[at + 1 :]]
        trailer = next(i for i, line in enumerate(twice) if line.startswith(b"# end:"))
        t = dict(kv.split(b"=") for kv in twice[trailer][len(b"# end: ") :].split(b" "))
        twice[trailer] = b"# end: lines=%d succeeded=%d withhold=%d payout=0 refund=0 fee=%d" % (
            int(t[b"lines"]) + 1,
            int(t[b"succeeded"]) + 1,
            int(t[b"withhold"]) + amount,
            int(t[b"fee"]) + fee,
        )
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await recon.Import(import_request(day, b"\n".join(twice), "twice.csv"), metadata=h.op_md)
        # one order debited twice by the bank's word, or a file written twice: never "consistent"
        order_no = lines[at].split(b",")[0].decode()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        said = f"import:twice.csv: line {at + 2}: order '{order_no}' is listed twice (lines {at + 1} and {at + 2})"
        assert said in (err.value.details() or ""), err.value
        [run] = await h.gateway.db.fetchall("SELECT status, error FROM recon_runs")
        assert run["status"] == "FAILED" and "listed twice" in run["error"]
        kept = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM recon_lines")
        assert kept is not None and kept["n"] == 0


async def test_a_statement_adding_up_beyond_int64_is_refused_not_internal(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False)}) as h:
        sim = h.sims["bank-a"]
        day = sim.ledger.booking_day(sim.ledger.now())
        for i in range(10):  # each line fits in int64 (18 digits), their sum does not
            sim.statements.faults.add_line(day, f"HUGE{i}", 999_999_999_999_999_999)
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)
        runs = (
            lambda: recon.Run(
                recon_pb2.RunReconRequest(channel="bank-a", business_day=day.isoformat(), reason="probe"),
                metadata=h.op_md,
            ),
            lambda: recon.Import(import_request(day, statement_of(h, day), "huge.csv"), metadata=h.op_md),
        )
        for call in runs:  # the bank's own statement, then the same file imported
            try:
                run = await call()
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "beyond int64" in (err.details() or ""), err
                continue
            assert run.status == "FAILED" and "beyond int64" in run.error, run
        listed = await recon.ListRuns(recon_pb2.ListReconRunsRequest(channel="bank-a"), metadata=h.op_md)
        assert [r.status for r in listed.runs] == ["FAILED", "FAILED"]
        kept = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM recon_lines")
        assert kept is not None and kept["n"] == 0
