"""WeChat Pay's trade bill (交易账单, ``bill_type=ALL``): the parser, and the writer the simulator serves.

``GET /v3/bill/tradebill?bill_date=yyyy-MM-dd&bill_type=ALL&tar_type=GZIP``
answers ``hash_type`` (``SHA1``), ``hash_value`` and a ``download_url``; a
signed v3 GET of that URL streams the file, gzip-compressed (the answer is
not signed: the SHA-1 of what arrives must equal ``hash_value``). The file,
UTF-8 CSV (the two long lines cut here)::

    交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,...,手续费,费率,订单金额,...
    `2026-03-05 10:00:00,`wxd678efh567hg6787,`1900000001,`0,`,`42000001,`W1,`,`PAP,`SUCCESS,...,`0.60,`0.60%,`100.00,...
    总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
    `1,`100.00,`0.00,`0.00,`0.60,`100.00,`0.00

Every detail and summary cell starts with a backtick. Columns are found by
header name (the SUCCESS/REFUND bills and the older layouts with 总金额 are
read too). A ``SUCCESS`` row is a withhold (``商户订单号``; amount
``订单金额``, else ``应结订单金额``/``总金额``); a ``REFUND`` row a refund
(``商户退款单号``, refunding ``商户订单号``; amount ``申请退款金额``, else
``退款金额``; ``退款状态`` SUCCESS or PROCESSING means the money left the
account, FAIL or CLOSED that it did not); a ``REVOKED`` row a withhold
reversed (status FAILED). ``手续费`` is what was charged (negative when a
refund gives it back). Times are China time, given as naive UTC. Payouts are
not on a trade bill.

Checked: the header, every cell's backtick, row widths, amounts and times,
and the summary row against the detail rows (count and every total). A file
that ends before its summary (a truncated gzip) is rejected.
"""

from __future__ import annotations

import csv
import gzip
import io
import operator
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import IO, BinaryIO, cast

from channels.contract import Operation
from channels.statement import LineStatus, StatementFormat, StatementFormatError, StatementLine
from channels.statement_parsing import (
    Columns,
    Tally,
    check_total,
    china_text,
    china_time,
    csv_rows,
    fen_text,
    text_of,
    yuan,
)

GZIP_MAGIC = b"\x1f\x8b"
_TICKED = operator.methodcaller("startswith", "`")
DETAIL_COLUMNS = (
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
)
SUMMARY_COLUMNS = (
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
)
SUMMARY_HEAD = SUMMARY_COLUMNS[0]
# summary column -> the detail column it totals (the current layout, then the older ones' names)
_TOTALS = {
    "应结订单总金额": "应结订单金额",
    "退款总金额": "退款金额",
    "充值券退款总金额": "充值券退款金额",
    "手续费总金额": "手续费",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
    "总交易额": "总金额",
    "总退款金额": "退款金额",
    "总代金券或立减优惠退款金额": "代金券或立减优惠退款金额",
    "企业红包退款总金额": "企业红包退款金额",
}
_REQUIRED = ("交易时间", "微信订单号", "商户订单号", "交易状态", "货币种类", "手续费")
_TRADE_AMOUNT = ("订单金额", "应结订单金额", "总金额")
_REFUND_AMOUNT = ("申请退款金额", "退款金额")
_REFUND_STATUS = {
    "SUCCESS": LineStatus.SUCCEEDED,
    "PROCESSING": LineStatus.SUCCEEDED,  # already taken from the merchant's account
    "FAIL": LineStatus.FAILED,
    "CLOSED": LineStatus.FAILED,
}


# --- writing (the simulator's side) -------------------------------------------------------


def write_statement(
    lines: Iterable[StatementLine],
    out: BinaryIO,
    *,
    day: date,
    appid: str,
    mchid: str,
    compress: bool = True,
    rate: str = "0.60%",
) -> None:
    """Write the ALL trade bill of ``day`` (gzip when ``compress``), streaming. Payouts are skipped."""
    with _sink(out, compress) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        try:
            _write(text, lines, appid=appid, mchid=mchid, rate=rate)
            text.flush()
        finally:
            text.detach()


@contextmanager
def _sink(out: BinaryIO, compress: bool) -> Iterator[IO[bytes]]:
    if not compress:
        yield out
        return
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as packed:
        yield cast(IO[bytes], packed)


def _write(text: IO[str], lines: Iterable[StatementLine], *, appid: str, mchid: str, rate: str) -> None:
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(DETAIL_COLUMNS)
    tally = Tally()
    for line in lines:
        if line.operation not in FORMAT.covers or line.status is not LineStatus.SUCCEEDED:
            continue
        refund = line.operation is Operation.REFUND
        settled, refunded = (0, line.amount) if refund else (line.amount, 0)
        tally.lines += 1
        for column, amount in (("应结订单金额", settled), ("退款金额", refunded), ("手续费", line.fee)):
            tally.sum(column, amount)
        cells = (
            china_text(line.booked_at),
            appid,
            mchid,
            "0",
            "",
            line.original_channel_txn_id if refund else line.channel_txn_id,
            line.original_channel_order_no if refund else line.channel_order_no,
            "",
            "PAP",
            "REFUND" if refund else "SUCCESS",
            "OTHERS",
            line.currency,
            fen_text(settled),
            "0.00",
            line.channel_txn_id if refund else "0",
            line.channel_order_no if refund else "0",
            fen_text(refunded),
            "0.00",
            "ORIGINAL" if refund else "",
            "SUCCESS" if refund else "",
            "repayment",
            "",
            fen_text(line.fee),
            rate,
            fen_text(settled),
            fen_text(refunded),
            "",
        )
        writer.writerow([f"`{cell}" for cell in cells])
    writer.writerow(SUMMARY_COLUMNS)
    settled_total, refund_total = tally.total("应结订单金额"), tally.total("退款金额")
    summary = (
        str(tally.lines),
        fen_text(settled_total),
        fen_text(refund_total),
        "0.00",
        fen_text(tally.total("手续费")),
        fen_text(settled_total),
        fen_text(refund_total),
    )
    writer.writerow([f"`{cell}" for cell in summary])


# --- parsing ------------------------------------------------------------------------------


def iter_lines(stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    """Parse a WeChat Pay trade bill, gzip or plain (see the module docstring); raises StatementFormatError."""
    with _unpacked(stream) as raw, text_of(raw, "utf-8-sig") as text:
        last = 0
        try:
            for line in _parse(csv_rows(text, decoding="UTF-8")):
                last = line.line_no
                yield line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise StatementFormatError(last + 1, 0, f"corrupt or truncated gzip: {exc}") from None


@contextmanager
def _unpacked(stream: BinaryIO) -> Iterator[IO[bytes]]:
    """The bill's bytes: through gzip when it starts with the gzip magic (or cannot be looked at)."""
    if stream.seekable():
        start = stream.tell()
        magic = stream.read(2)
        stream.seek(start)
        if magic != GZIP_MAGIC:
            yield stream
            return
    with gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
        yield cast(IO[bytes], unpacked)


def _parse(rows: Iterator[tuple[int, list[str]]]) -> Iterator[StatementLine]:
    first = next(rows, None)
    if first is None:
        raise StatementFormatError(1, 0, "empty file: no header")
    columns = Columns(first[1], first[0], required=_REQUIRED)
    if not any(name in columns for name in _TRADE_AMOUNT):
        raise StatementFormatError(first[0], 0, f"missing column {_TRADE_AMOUNT[0]!r}")
    figures = _Figures(columns)
    count = 0
    last = first[0]
    for line_no, row in rows:
        last = line_no
        if row and row[0].strip() == SUMMARY_HEAD:
            _check_summary(row, line_no, rows, figures, count)
            return
        cells = _unticked(row, line_no)
        columns.check(cells, line_no)
        count += 1
        yield _line(cells, line_no, columns, figures.read(cells, line_no))
    raise StatementFormatError(last + 1, 0, "no summary (总交易单数 ...) after the detail: the file is truncated")


class _Figures:
    """The money columns this bill has: read once per row, and summed to check the summary with."""

    def __init__(self, columns: Columns) -> None:
        names = dict.fromkeys((*_TOTALS.values(), "手续费", *_TRADE_AMOUNT, *_REFUND_AMOUNT))
        self.where = [(name, columns.index[name], columns.column(name)) for name in names if name in columns]
        self.sums = dict.fromkeys((name for name, _, _ in self.where), 0)

    def read(self, cells: list[str], line_no: int) -> dict[str, int]:
        values = {}
        for name, index, column in self.where:
            values[name] = value = _yuan(cells[index], line_no, column)
            self.sums[name] += value
        return values


def _unticked(row: list[str], line_no: int) -> list[str]:
    """Cells without their leading backtick (every detail and summary cell has one)."""
    if all(map(_TICKED, row)):
        return [cell[1:] for cell in row]
    column = next(i for i, cell in enumerate(row) if cell[:1] != "`") + 1
    raise StatementFormatError(line_no, column, f"cell does not start with a backtick: {row[column - 1][:32]!r}")


def _yuan(text: str, line: int, column: int) -> int:
    """Yuan to fen; WeChat pads some figures with zeros past the fen (``0.06000``), which must be zeros."""
    return yuan(text, line, column, zero_padded=True)


def _line(cells: list[str], line_no: int, columns: Columns, figures: dict[str, int]) -> StatementLine:
    index = columns.index

    def cell(name: str) -> str:
        return cells[index[name]].strip() if name in index else ""

    def money(*names: str) -> int:
        name = next((n for n in names if n in figures), None)
        if name is None:
            raise StatementFormatError(columns.line, 0, f"missing column {names[0]!r}")
        return figures[name]

    state = cell("交易状态")
    booked_at = china_time(cell("交易时间"), line_no, columns.column("交易时间"))
    fee = money("手续费")
    order_no, txn_id = cell("商户订单号"), cell("微信订单号")
    if not order_no:
        raise StatementFormatError(line_no, columns.column("商户订单号"), "empty 商户订单号")
    currency = cell("货币种类") or "CNY"
    if state in ("SUCCESS", "REVOKED"):
        return StatementLine(
            line_no=line_no,
            channel_order_no=order_no,
            operation=Operation.WITHHOLD,
            status=LineStatus.SUCCEEDED if state == "SUCCESS" else LineStatus.FAILED,
            amount=money(*_TRADE_AMOUNT),
            currency=currency,
            fee=fee,
            booked_at=booked_at,
            channel_txn_id=txn_id,
        )
    if state != "REFUND":
        raise StatementFormatError(line_no, columns.column("交易状态"), f"unknown 交易状态 {state!r}")
    for name in ("商户退款单号", "微信退款单号", "退款状态"):
        if name not in index:
            raise StatementFormatError(columns.line, 0, f"a REFUND row, but no column {name!r}")
    refund_state = _REFUND_STATUS.get(cell("退款状态"))
    if refund_state is None:
        raise StatementFormatError(line_no, columns.column("退款状态"), f"unknown 退款状态 {cell('退款状态')!r}")
    refund_no = cell("商户退款单号")
    if not refund_no:
        raise StatementFormatError(line_no, columns.column("商户退款单号"), "empty 商户退款单号")
    return StatementLine(
        line_no=line_no,
        channel_order_no=refund_no,
        operation=Operation.REFUND,
        status=refund_state,
        amount=money(*_REFUND_AMOUNT),
        currency=currency,
        fee=fee,
        booked_at=booked_at,
        channel_txn_id=cell("微信退款单号"),
        original_channel_order_no=order_no,
        original_channel_txn_id=txn_id,
    )


def _check_summary(
    header: list[str], header_line: int, rows: Iterator[tuple[int, list[str]]], figures: _Figures, count: int
) -> None:
    summary = Columns(header, header_line, required=(SUMMARY_HEAD,))
    found = next(rows, None)
    if found is None:
        raise StatementFormatError(header_line + 1, 0, "no summary row: the file is truncated")
    line_no, row = found
    cells = _unticked(row, line_no)
    summary.check(cells, line_no)
    stated_count = cells[summary.index[SUMMARY_HEAD]]
    if not stated_count.isdigit():
        raise StatementFormatError(line_no, summary.column(SUMMARY_HEAD), f"not a count: {stated_count!r}")
    check_total(int(stated_count), count, SUMMARY_HEAD, line_no, summary.column(SUMMARY_HEAD), money=False)
    for name, totalled in _TOTALS.items():
        if name in summary and totalled in figures.sums:
            stated = _yuan(cells[summary.index[name]], line_no, summary.column(name))
            check_total(stated, figures.sums[totalled], name, line_no, summary.column(name))
    for later, extra in rows:
        if any(cell.strip() for cell in extra):
            raise StatementFormatError(later, 1, "text after the summary")


FORMAT = StatementFormat(
    "wechatpay",
    iter_lines,
    covers=frozenset({Operation.WITHHOLD, Operation.REFUND}),
    lists_failures=False,
    description="WeChat Pay v3 trade bill (ALL, gzip, backtick-prefixed CSV)",
)
