"""The statement parsers against hand-written samples of each format, their malformed variants, and round trips.

The samples in tests/fixtures/statements/ were written by hand from the
published descriptions (the channels' documentation and its examples; ours
in docs/RECONCILIATION.md), not produced by our writers, so a writer and its
parser cannot agree on a mistake unnoticed. Round trips writer -> parser run
on large generated days.
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from channels._template import statement as template_statement
from channels.alipay import statement as alipay
from channels.contract import Operation
from channels.sandbox import statement as sandbox
from channels.statement import LineStatus, StatementFormatError, StatementLine
from channels.statements import parser_for
from channels.wechatpay import statement as wechatpay

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "statements"
DAY = date(2026, 3, 5)
W, P, R = Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND
OK, FAILED = LineStatus.SUCCEEDED, LineStatus.FAILED


def parse(fmt: str, data: bytes, day: date = DAY) -> list[StatementLine]:
    return list(parser_for(fmt)(io.BytesIO(data), channel_id="c1", day=day))


def failure(fmt: str, data: bytes, day: date = DAY) -> StatementFormatError:
    with pytest.raises(StatementFormatError) as caught:
        parse(fmt, data, day)
    return caught.value


def fixture(*parts: str) -> bytes:
    return FIXTURES.joinpath(*parts).read_bytes()


def edit(data: bytes, old: str, new: str, *, encoding: str = "utf-8") -> bytes:
    text = data.decode(encoding)
    assert old in text, old
    return text.replace(old, new, 1).encode(encoding)


# --- sandbox ---------------------------------------------------------------------------------

SANDBOX = fixture("sandbox", "2026-03-05.csv")


def test_sandbox_sample() -> None:
    lines = parse("sandbox", SANDBOX)
    assert lines == [
        StatementLine(
            6, "W20260305001", W, OK, 10000, "CNY", 30, datetime(2026, 3, 4, 16, 0, 1, 250000), "SBX000000000101"
        ),
        StatementLine(7, "W20260305002", W, FAILED, 12301, "CNY", 0, datetime(2026, 3, 5, 1, 15), "SBX000000000102"),
        StatementLine(
            8, "P20260305001", P, OK, 500000, "CNY", 150, datetime(2026, 3, 5, 3, 30, 0, 1), "SBX000000000103"
        ),
        StatementLine(
            9,
            "R20260305001",
            R,
            OK,
            2500,
            "CNY",
            0,
            datetime(2026, 3, 5, 15, 59, 59, 999999),
            "SBX000000000104",
            "W20260305001",
            "SBX000000000101",
        ),
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "column"),
    [
        (",10000,CNY,30,", ",100.00,CNY,30,", 6, 4),  # the sandbox books minor units, never yuan
        (",10000,CNY,30,", ",-10000,CNY,30,", 6, 4),
        ("2026-03-05T01:15:00.000000Z", "2026-03-05 01:15:00", 7, 7),  # not UTC
        ("2026-03-05T01:15:00.000000Z", "2026-13-05T01:15:00.000000Z", 7, 7),
        (",SBX000000000103,,", ",SBX000000000103,", 8, 10),  # a column short
        (",SBX000000000103,,", ",SBX000000000103,,,", 8, 11),  # a column too many
        ("payout,SUCCEEDED", "transfer,SUCCEEDED", 8, 2),
        ("withhold,FAILED", "withhold,DECLINED", 7, 3),
        ("refund=2500", "refund=2501", 10, 0),  # the trailer disagrees with the rows
        ("lines=4", "lines=5", 10, 0),
        ("fee=180", "fee=179", 10, 0),
        ("# day: 2026-03-05", "# day: 2026-03-04", 3, 0),  # another day's statement
        ("# sandbox statement v1", "# sandbox statement v2", 1, 1),
        ("txn_id,original_order_no", "txn,original_order_no", 5, 8),  # unknown column
        # an ISO week date (2026-W10-4 is 2026-03-05): fromisoformat reads it, we take only yyyy-mm-dd
        ("2026-03-05T01:15:00.000000Z", "2026-W10-4T01:15:00.000000Z", 7, 7),
        ("2026-03-05T01:15:00.000000Z", "2026-03-05T01:15Z", 7, 7),
        # booked outside the day in the file's timezone (+08:00: 2026-03-04T16:00Z to 2026-03-05T16:00Z)
        ("2026-03-05T01:15:00.000000Z", "2026-03-05T16:00:00.000000Z", 7, 7),
        ("2026-03-05T01:15:00.000000Z", "2026-03-04T15:59:59.999999Z", 7, 7),
        ("# timezone: +08:00", "# timezone: Asia/Shanghai", 4, 0),
    ],
)
def test_sandbox_malformed(old: str, new: str, line: int, column: int) -> None:
    error = failure("sandbox", edit(SANDBOX, old, new))
    assert (error.line, error.column) == (line, column), error


def test_sandbox_truncated_and_trailing_text() -> None:
    cut = SANDBOX[: SANDBOX.index(b"# end:")]
    assert failure("sandbox", cut).line == 10
    assert failure("sandbox", SANDBOX + b"W9,withhold,SUCCEEDED,1,CNY,0,2026-03-05T00:00:00Z,T,,\n").line == 11
    assert failure("sandbox", b"").line == 1


def test_sandbox_columns_are_read_by_name() -> None:
    text = SANDBOX.decode()
    header = "order_no,kind,status,amount,currency,fee,booked_at,txn_id,original_order_no,original_txn_id"
    swapped = "kind,order_no,status,amount,currency,fee,booked_at,txn_id,original_order_no,original_txn_id"
    rows = [
        ",".join([row.split(",")[1], row.split(",")[0], *row.split(",")[2:]])
        if row and not row.startswith("#")
        else row
        for row in text.split("\n")
    ]
    reordered = "\n".join(rows).replace(
        ",".join([header.split(",")[1], header.split(",")[0], *header.split(",")[2:]]), swapped
    )
    assert parse("sandbox", reordered.encode()) == parse("sandbox", SANDBOX)


def test_sandbox_not_utf8_names_the_line() -> None:
    error = failure("sandbox", SANDBOX.replace(b"W20260305002", b"W2026\xff0305002"))
    assert error.line >= 1 and "UTF-8" in error.problem


# --- Alipay ----------------------------------------------------------------------------------

ALIPAY_DETAIL = fixture("alipay", "20880000000000000156_20260305_业务明细.csv")
ALIPAY_SUMMARY = fixture("alipay", "20880000000000000156_20260305_业务明细(汇总).csv")
ALIPAY_DETAIL_NAME = "20880000000000000156_20260305_业务明细.csv"
ALIPAY_SUMMARY_NAME = "20880000000000000156_20260305_业务明细(汇总).csv"


class _GbkEntry(zipfile.ZipInfo):
    """A zip entry named in GBK without the UTF-8 flag, as Alipay's archives have them (test-side)."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def alipay_zip(
    detail: bytes = ALIPAY_DETAIL, summary: bytes | None = ALIPAY_SUMMARY, *, gbk_names: bool = True
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in ((ALIPAY_DETAIL_NAME, detail), (ALIPAY_SUMMARY_NAME, summary)):
            if data is not None:
                entry = _GbkEntry(name) if gbk_names else zipfile.ZipInfo(name)
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, data)
    return buffer.getvalue()


def gbk_edit(data: bytes, old: str, new: str) -> bytes:
    return edit(data, old, new, encoding="gbk")


ALIPAY_LINES = [
    StatementLine(
        6, "W20260305001", W, OK, 2000, "CNY", 12, datetime(2026, 3, 4, 16, 6, 15), "2026030522001004720299453898"
    ),
    StatementLine(
        7, "W20260305002", W, OK, 123456, "CNY", 741, datetime(2026, 3, 5, 4, 30, 1), "2026030522001004900267628590"
    ),
    StatementLine(
        8,
        "R20260305001",
        R,
        OK,
        500,
        "CNY",
        -3,  # a refund gives its share of the fee back
        datetime(2026, 3, 5, 15, 59, 59),
        "2026030522001004720299453898",
        "W20260305001",
        "2026030522001004720299453898",
    ),
]


@pytest.mark.parametrize("gbk_names", [True, False])
def test_alipay_sample(gbk_names: bool) -> None:
    assert parse("alipay", alipay_zip(gbk_names=gbk_names)) == ALIPAY_LINES


def test_alipay_without_summary_file_and_from_a_stream_that_cannot_seek() -> None:
    assert parse("alipay", alipay_zip(summary=None)) == ALIPAY_LINES

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    stream = io.BufferedReader(Pipe(alipay_zip()))
    assert not stream.seekable()
    assert list(alipay.iter_lines(stream, channel_id="c1", day=DAY)) == ALIPAY_LINES  # type: ignore[arg-type]


def test_alipay_columns_are_read_by_name() -> None:
    text = ALIPAY_DETAIL.decode("gbk").split("\r\n")
    swapped = []
    for i, row in enumerate(text):
        cells = row.split(",")
        if 4 <= i <= 7:  # the header and the three rows: move 服务费 to the front
            cells = [cells[22], *cells[:22], *cells[23:]]
        swapped.append(",".join(cells))
    assert parse("alipay", alipay_zip("\r\n".join(swapped).encode("gbk"))) == ALIPAY_LINES


def test_alipay_older_refund_column_name() -> None:
    """Older bills call the refund number column 退款批次号; the parser takes either name."""
    older = gbk_edit(ALIPAY_DETAIL, ",退款批次号/请求号,", ",退款批次号,")
    assert parse("alipay", alipay_zip(older)) == ALIPAY_LINES
    neither = gbk_edit(ALIPAY_DETAIL, ",退款批次号/请求号,", ",退款单号,")
    assert "退款批次号/请求号" in failure("alipay", alipay_zip(neither)).problem


@pytest.mark.parametrize(
    ("old", "new", "line", "column"),
    [
        (",1234.56,1234.56,", ",1234.567,1234.56,", 7, 12),
        (",1234.56,1234.56,", ",1,234.56,1234.56,", 7, 26),  # a comma inside an amount: a column too many
        ("2026-03-05 12:30:01", "2026-03-05 25:30:01", 7, 6),
        ("2026-03-05 12:30:01", "2026/03/05 12:30:01", 7, 6),
        (",交易\t,第2期", ",转账\t,第2期", 7, 3),
        (",R20260305001\t,", ",\t,", 8, 22),  # a refund without its request number
        ("#交易合计：2笔", "#交易合计：3笔", 10, 0),
        ("商家实收共1254.56元", "商家实收共1254.55元", 10, 0),
        ("#退款合计：1笔", "#退款合计：0笔", 11, 0),
        ("[2026年03月05日 00:00:00]", "[2026年03月04日 00:00:00]", 3, 0),  # another day's bill
        ("业务明细列表----", "业务明细----", 5, 1),
        (",商家实收（元）,", ",商家收入（元）,", 5, 0),
    ],
)
def test_alipay_detail_malformed(old: str, new: str, line: int, column: int) -> None:
    error = failure("alipay", alipay_zip(gbk_edit(ALIPAY_DETAIL, old, new)))
    assert (error.line, error.column) == (line, column), error
    assert ALIPAY_DETAIL_NAME in str(error)


def test_alipay_truncated_detail_and_missing_footer() -> None:
    text = ALIPAY_DETAIL.decode("gbk")
    cut = text[: text.index("#-----------------------------------------业务明细列表结束")]
    assert failure("alipay", alipay_zip(cut.encode("gbk"))).line == 9
    no_footer = text[: text.index("#交易合计")]
    error = failure("alipay", alipay_zip(no_footer.encode("gbk")))
    assert error.line == 10 and "交易合计" in error.problem


def test_alipay_summary_must_agree() -> None:
    error = failure(
        "alipay",
        alipay_zip(
            summary=gbk_edit(
                ALIPAY_SUMMARY,
                "合计,\t,2,1,1249.56,1249.56,0.00,0.00,0.00,-7.50",
                "合计,\t,2,1,1249.56,1249.56,0.00,0.00,0.00,-7.51",
            )
        ),
    )
    assert (error.line, error.column) == (7, 10) and ALIPAY_SUMMARY_NAME in str(error)
    error = failure("alipay", alipay_zip(summary=gbk_edit(ALIPAY_SUMMARY, "合计,\t,2,1,", "合计,\t,3,1,")))
    assert (error.line, error.column) == (7, 3)


def test_alipay_broken_archives() -> None:
    whole = alipay_zip()
    assert failure("alipay", whole[:-40]).line == 0  # the central directory is gone
    assert failure("alipay", "<html>下载超时,请重新下载</html>".encode()).line == 0
    offset = len(whole) // 3  # somewhere inside the compressed detail
    corrupt = whole[:offset] + bytes([whole[offset] ^ 0xFF]) + whole[offset + 1 :]
    error = failure("alipay", corrupt)
    assert ALIPAY_DETAIL_NAME in str(error) or error.line == 0
    two_details = io.BytesIO()
    with zipfile.ZipFile(two_details, "w") as archive:
        archive.writestr("a" + alipay.DETAIL_SUFFIX, ALIPAY_DETAIL)
        archive.writestr("b" + alipay.DETAIL_SUFFIX, ALIPAY_DETAIL)
    assert "expected one" in failure("alipay", two_details.getvalue()).problem


def test_alipay_not_gbk() -> None:
    error = failure("alipay", alipay_zip(ALIPAY_DETAIL.replace("第2期".encode("gbk"), b"\xff\xff\xff")))
    assert "GBK" in error.problem


# --- WeChat Pay ------------------------------------------------------------------------------

WECHAT = fixture("wechatpay", "2014-11-10_ALL.csv")
WECHAT_DAY = date(2014, 11, 10)
WECHAT_LINES = [
    StatementLine(
        2, "1415640626", W, OK, 1, "CNY", 0, datetime(2014, 11, 10, 8, 33, 45), "1001690740201411100005734289"
    ),
    StatementLine(
        3, "1415635270", W, OK, 1, "CNY", 0, datetime(2014, 11, 10, 8, 46, 14), "1002780740201411100005729794"
    ),
    StatementLine(
        4,
        "RF1415640626",
        R,
        OK,
        1,
        "CNY",
        0,
        datetime(2014, 11, 10, 10, 0, 0),
        "50000300012014111000010000000",
        "1415640626",
        "1001690740201411100005734289",
    ),
]


def test_wechatpay_sample_plain_and_gzip() -> None:
    assert parse("wechatpay", WECHAT, WECHAT_DAY) == WECHAT_LINES
    assert parse("wechatpay", gzip.compress(WECHAT), WECHAT_DAY) == WECHAT_LINES
    assert parse("wechatpay", "\ufeff".encode() + WECHAT, WECHAT_DAY) == WECHAT_LINES  # a BOM


@pytest.mark.parametrize(
    ("old", "new", "line", "column"),
    [
        ("`MICROPAY,`SUCCESS,`CFT", "`MICROPAY,SUCCESS,`CFT", 2, 10),  # a cell without its backtick
        ("`CNY,`0.01,`0.0,", "`CNY,`0.011,`0.0,", 2, 13),
        ("`CNY,`0.01,`0.0,", "`CNY,`1e-2,`0.0,", 2, 13),
        ("`2014-11-10 16:46:14", "`2014-11-10T16:46:14", 3, 1),
        ("`0.60%,`0.01,`0.00,`\r\n`2014-11-10 18", "`0.60%,`0.01,`0.00,`,`\r\n`2014-11-10 18", 3, 28),
        ("`REFUND,", "`REVOKE,", 4, 10),
        ("`ORIGINAL,`SUCCESS,", "`ORIGINAL,`REFUNDING,", 4, 20),
        ("`0.00000,", "`0.00001,", 4, 23),  # padding past the fen must be zeros
        ("`3,`0.02", "`2,`0.02", 6, 1),  # the summary disagrees with the rows
        ("`0.02,`0.01,`0.0,`0,", "`0.03,`0.01,`0.0,`0,", 6, 2),
        ("`0.0,`0,`0.02,`0.01", "`0.0,`0.01,`0.02,`0.01", 6, 5),
        (",手续费,", ",服务费,", 1, 0),  # a required column missing
    ],
)
def test_wechatpay_malformed(old: str, new: str, line: int, column: int) -> None:
    error = failure("wechatpay", edit(WECHAT, old, new), WECHAT_DAY)
    assert (error.line, error.column) == (line, column), error


def test_wechatpay_truncated() -> None:
    no_summary = WECHAT[: WECHAT.index("总交易单数".encode())]
    assert failure("wechatpay", no_summary, WECHAT_DAY).line == 5
    packed = gzip.compress(WECHAT)
    error = failure("wechatpay", packed[: len(packed) - 12], WECHAT_DAY)
    assert "gzip" in error.problem or "truncated" in error.problem
    assert failure("wechatpay", WECHAT + b"`x\r\n", WECHAT_DAY).line == 7


def test_wechatpay_success_bill_layout_by_column_names() -> None:
    """The SUCCESS bill has fewer columns; the same parser reads it by name."""
    text = (
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
        "应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注\r\n"
        "`2014-11-10 16:33:45,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1001690740201411100005734289,`1415640626,"
        "`085e9858e3ba5186aafcbaed1,`MICROPAY,`SUCCESS,`CFT,`CNY,`100.00,`0.00,`t,`,`0.60,`0.60%,`100.00,`\r\n"
        "总交易单数,应结订单总金额,手续费总金额,订单总金额\r\n`1,`100.00,`0.60,`100.00\r\n"
    )
    [line] = parse("wechatpay", text.encode(), WECHAT_DAY)
    assert (line.channel_order_no, line.amount, line.fee) == ("1415640626", 10000, 60)


# --- generic-csv -----------------------------------------------------------------------------

GENERIC = fixture("generic-csv", "2026-03-05.csv")


def test_generic_csv_sample() -> None:
    assert parse("generic-csv", GENERIC) == [
        StatementLine(4, "W20260305001", W, OK, 10000, "CNY", 60, datetime(2026, 3, 4, 16, 0, 1), "BOE0001"),
        StatementLine(5, "P20260305001", P, OK, 500000, "CNY", 150, datetime(2026, 3, 5, 4, 0, 0), "BOE0002"),
        StatementLine(
            6, "R20260305001", R, OK, 3000, "CNY", 0, datetime(2026, 3, 5, 15, 59, 59), "BOE0003", "W20260305001"
        ),
        StatementLine(7, "W20260305002", W, FAILED, 12301, "CNY", 0, datetime(2026, 3, 5, 9, 0, 0), "BOE0004"),
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "column"),
    [
        ("amount=5253.01", "amount=5253.02", 8, 0),
        ("lines=4", "lines=3", 8, 0),
        (",100.00,0.60,", ",-100.00,0.60,", 4, 4),
        (",100.00,0.60,", ",100.001,0.60,", 4, 4),
        ("W20260305001,withhold,SUCCEEDED", "W20260305001,deposit,SUCCEEDED", 4, 2),
        ("W20260305001,withhold,SUCCEEDED", "W20260305001,withhold,PENDING", 4, 3),
        ("2026-03-05 00:00:01", "05/03/2026 00:00:01", 4, 7),
        ("CNY,2026-03-05 23:59:59", "RMB元,2026-03-05 23:59:59", 6, 6),
        ("# timezone: Asia/Shanghai", "# timezone: Mars/Olympus", 2, 0),
        (",booked_at,", ",booked,", 3, 0),
        (",BOE0004,,declined", ",BOE0004,declined", 7, 10),
        ("2026-03-05 00:00:01", "2026-W10-4 00:00:01", 4, 7),  # an ISO week date, read as 03-05 by fromisoformat
        ("2026-03-05T12:00:00+08:00", "2026-W10-4T12:00:00+08:00", 5, 7),
    ],
)
def test_generic_csv_malformed(old: str, new: str, line: int, column: int) -> None:
    error = failure("generic-csv", edit(GENERIC, old, new))
    assert (error.line, error.column) == (line, column), error


def test_generic_csv_needs_a_header() -> None:
    assert "header" in failure("generic-csv", b"# nothing but comments\n").problem


# --- round trips: writer -> parser, large generated days --------------------------------------


def generated_day(
    count: int, *, seed: int, day: date = DAY, operations: tuple[Operation, ...] = (W, P, R)
) -> list[StatementLine]:
    rng = random.Random(seed)
    start = datetime(day.year, day.month, day.day) - timedelta(hours=8)  # the day in China time, as naive UTC
    lines = []
    for i in range(count):
        operation = rng.choice(operations)
        at = start + timedelta(seconds=rng.randrange(86_400), microseconds=rng.randrange(1_000_000))
        amount = rng.randint(1, 10_000_000)
        refund = operation is R
        lines.append(
            StatementLine(
                line_no=0,
                channel_order_no=f"{operation.value[0].upper()}{seed}-{i:07d}",
                operation=operation,
                status=FAILED if rng.random() < 0.05 else OK,
                amount=amount,
                currency="CNY",
                fee=0 if refund else amount * 60 // 10_000,
                booked_at=at,
                channel_txn_id=f"T{i:012d}",
                original_channel_order_no=f"W{seed}-orig{i}" if refund else "",
                original_channel_txn_id=f"O{i:012d}" if refund else "",
            )
        )
    return lines


def round_trip(
    write: Callable[[list[StatementLine], io.BytesIO], None], fmt: str, lines: list[StatementLine]
) -> list[StatementLine]:
    buffer = io.BytesIO()
    write(lines, buffer)
    buffer.seek(0)
    return [replace(line, line_no=0) for line in parser_for(fmt)(buffer, channel_id="c1", day=DAY)]


def test_sandbox_round_trip_of_a_large_day() -> None:
    lines = generated_day(20_000, seed=1)
    back = round_trip(lambda ls, out: sandbox.write_statement(ls, out, day=DAY, merchant_id="m1"), "sandbox", lines)
    assert back == lines


def to_the_second(line: StatementLine) -> StatementLine:
    return replace(line, booked_at=line.booked_at.replace(microsecond=0))


def test_alipay_round_trip_of_a_large_day() -> None:
    lines = generated_day(20_000, seed=2)
    back = round_trip(lambda ls, out: alipay.write_statement(ls, out, day=DAY, account="2088x0156"), "alipay", lines)
    expected = [
        to_the_second(replace(line, channel_txn_id=line.original_channel_txn_id) if line.operation is R else line)
        for line in lines
        if line.status is OK and line.operation is not P  # Alipay's trade bill: succeeded trades and refunds
    ]
    assert back == expected


def test_wechatpay_round_trip_of_a_large_day() -> None:
    lines = generated_day(20_000, seed=3)
    back = round_trip(
        lambda ls, out: wechatpay.write_statement(ls, out, day=DAY, appid="wx1", mchid="1900000001"), "wechatpay", lines
    )
    assert back == [to_the_second(line) for line in lines if line.status is OK and line.operation is not P]


def test_template_round_trip() -> None:
    lines = [
        replace(line, original_channel_order_no="", original_channel_txn_id="") for line in generated_day(500, seed=4)
    ]
    buffer = io.BytesIO()
    template_statement.write_statement(lines, buffer, day=DAY)
    buffer.seek(0)
    back = [replace(line, line_no=0) for line in template_statement.iter_lines(buffer, channel_id="t", day=DAY)]
    assert back == [to_the_second(line) for line in lines if line.status is OK]


def test_wechatpay_older_and_refund_layouts() -> None:
    """The layout of the older documentation's example, and a REFUND bill (public SDK test data), by column names."""
    older = (
        "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,"
        "代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\n"
        "`2014-11-10 16:33:45,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1001690740201411100005734289,`1415640626,"
        "`085e9858e3ba5186aafcbaed1,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`0.01,`0.0,`0,`0,`0,`0,`,`,`被扫支付测试,`订单额外描述,`0,`0.60%\n"
        "`2014-11-10 16:46:14,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1002780740201411100005729794,`1415635270,"
        "`085e9858e90ca40c0b5aee463,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`0.01,`0.0,`0,`0,`0,`0,`,`,`被扫支付测试,`订单额外描述,`0,`0.60%\n"
        "总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额\n"
        "`2,`0.02,`0.0,`0.0,`0"
    )
    assert [line.amount for line in parse("wechatpay", older.encode(), WECHAT_DAY)] == [1, 1]
    assert "总交易额" in failure("wechatpay", older.replace("`2,`0.02,", "`2,`0.03,").encode(), WECHAT_DAY).problem
    refund_bill = (
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
        "应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
        "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n"
        "`2019-07-23 20:53:36,`wx1,`1900000001,`0,`,`4200000001,`W1,`o1,`JSAPI,`REFUND,`CFT,`CNY,`0.00,`0.00,"
        "`2019-07-23 20:53:36,`2019-07-23 20:53:40,`5030000001,`R1,`0.01,`0.00,`ORIGINAL,`SUCCESS,`x,`y,"
        "`-0.02000,`0.60%,`0.00,`0.01,`\n"
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n"
        "`1,`0.00,`0.01,`0.00,`-0.02000,`0.00,`0.01"
    )
    [refund] = parse("wechatpay", refund_bill.encode(), date(2019, 7, 23))
    assert (refund.channel_order_no, refund.operation, refund.amount, refund.fee) == ("R1", R, 1, -2)
    assert (refund.original_channel_order_no, refund.channel_txn_id) == ("W1", "5030000001")
