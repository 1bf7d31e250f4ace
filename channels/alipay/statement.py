"""Alipay's trade bill (业务账单, ``bill_type=trade``): the parser, and the writer the simulator serves.

``alipay.data.dataservice.bill.downloadurl.query`` (``bill_type`` ``trade``,
``bill_date`` ``yyyy-MM-dd``) answers a ``bill_download_url`` valid for 30
seconds; it serves a zip of GBK-encoded CSV files, their names GBK without
the zip UTF-8 flag::

    <account>_<yyyymmdd>_业务明细.csv          the detail (parsed)
    <account>_<yyyymmdd>_业务明细(汇总).csv    the summary per store (checked when present)

The detail file::

    #支付宝业务明细查询
    #账号：[20880000000000000156]
    #起始日期：[2026年03月05日 00:00:00]   终止日期：[2026年03月06日 00:00:00]
    #-----------------------------------------业务明细列表----------------------------------------
    支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,...,订单金额（元）,商家实收（元）,...,退款批次号/请求号,服务费（元）,分润（元）,备注
    2026030522001400000000000001	,W1	,交易	,repayment	,2026-03-05 10:00:00,2026-03-05 10:00:01,...
    #-----------------------------------------业务明细列表结束------------------------------------
    #交易合计：1笔，商家实收共100.00元，商家优惠共0.00元
    #退款合计：0笔，商家实收退款共0.00元，商家优惠退款共0.00元
    #导出时间：[2026年03月06日 09:00:00]

Columns are found by their header names (the parenthesis of ``（元）`` is
full-width); cells are stripped of the tabs Alipay pads them with. A ``交易``
row is a withhold (our order number in ``商户订单号``); a ``退款`` row a refund
(our refund number in ``退款批次号/请求号``, the refunded order in
``商户订单号``), its amounts negative. Times are China time, given as naive
UTC. ``服务费（元）`` is printed as a deduction (negative on a trade, positive on
a refund that gives the fee back); the line's ``fee`` is what was charged,
so its negation. Alipay's bill has no payouts (transfers are on the
``signcustomer`` bill) and lists only trades that succeeded.

Checked: the markers, the column header, every row's width, amounts and
times, the footer's counts and sums against the rows, and the summary file's
合计 row. A truncated or corrupt archive is rejected (zip CRCs).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import IO, BinaryIO

from channels.contract import Operation
from channels.statement import (
    CHINA_TIME,
    LineStatus,
    StatementFormat,
    StatementFormatError,
    StatementLine,
)
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

ENCODING = "gbk"
DETAIL_SUFFIX = "_业务明细.csv"
SUMMARY_SUFFIX = "_业务明细(汇总).csv"
DETAIL_START = "#-----------------------------------------业务明细列表----------------------------------------"
DETAIL_END = "#-----------------------------------------业务明细列表结束------------------------------------"
SUMMARY_START = "#-----------------------------------------业务汇总列表----------------------------------------"
SUMMARY_END = "#----------------------------------------业务汇总列表结束-------------------------------------"
TRADE, REFUND = "交易", "退款"

DETAIL_COLUMNS = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
SUMMARY_COLUMNS = (
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
)
_REQUIRED = ("支付宝交易号", "商户订单号", "业务类型", "完成时间", "订单金额（元）", "商家实收（元）", "服务费（元）")
# Our refund number: 退款批次号/请求号, 退款批次号 in older bills.
_REFUND_NO = ("退款批次号/请求号", "退款批次号")
_START_DAY = re.compile(r"#起始日期：\[(\d{4})年(\d{2})月(\d{2})日")
_TRADE_TOTAL = re.compile(r"#交易合计：(\d+)笔(?:，商家实收共(-?[0-9.]+)元)?")
_REFUND_TOTAL = re.compile(r"#退款合计：(\d+)笔(?:，商家实收退款共(-?[0-9.]+)元)?")
_ZERO = "0.00"


# --- writing (the simulator's side) -------------------------------------------------------


def archive_names(account: str, day: date) -> tuple[str, str]:
    """(detail, summary) file names inside the zip."""
    stem = f"{account}_{day:%Y%m%d}"
    return stem + DETAIL_SUFFIX, stem + SUMMARY_SUFFIX


def download_name(account: str, day: date) -> str:
    return f"{account}_{day:%Y%m%d}.csv.zip"


def write_statement(
    lines: Iterable[StatementLine],
    out: BinaryIO,
    *,
    day: date,
    account: str,
    exported_at: datetime | None = None,
) -> None:
    """Write the trade bill of ``day`` as the zip Alipay serves, streaming. ``out`` must be seekable.

    Withholds become 交易 rows, refunds 退款 rows (others are not on this
    bill and are skipped); ``account`` is the bill's 账号 (the merchant PID
    followed by ``0156``).
    """
    detail_name, summary_name = archive_names(account, day)
    exported = exported_at or datetime.now(CHINA_TIME).replace(tzinfo=None)
    tally = Tally()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(_GbkName(detail_name, day), "w", force_zip64=True) as raw:
            with _gbk_text(raw) as text:
                _write_detail(text, lines, tally, day=day, account=account, exported=exported)
        with archive.open(_GbkName(summary_name, day), "w", force_zip64=True) as raw:
            with _gbk_text(raw) as text:
                _write_summary(text, tally, day=day, account=account, exported=exported)


def _write_detail(
    text: IO[str], lines: Iterable[StatementLine], tally: Tally, *, day: date, account: str, exported: datetime
) -> None:
    text.write(f"#支付宝业务明细查询\r\n#账号：[{account}]\r\n{_period(day)}\r\n{DETAIL_START}\r\n")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(DETAIL_COLUMNS)
    for line in lines:
        if line.status is not LineStatus.SUCCEEDED or line.operation not in FORMAT.covers:
            continue
        refund = line.operation is Operation.REFUND
        amount = -line.amount if refund else line.amount
        printed_fee = -line.fee  # printed as a deduction
        at = china_text(line.booked_at)
        tally.add(REFUND if refund else TRADE, amount)
        tally.sum("fee", printed_fee)
        writer.writerow(
            (
                f"{line.original_channel_txn_id if refund else line.channel_txn_id}\t",
                f"{line.original_channel_order_no if refund else line.channel_order_no}\t",
                f"{REFUND if refund else TRADE}\t",
                "repayment\t",
                at,
                at,
                "\t",
                "\t",
                "\t",
                "\t",
                "\t",
                fen_text(amount),
                fen_text(amount),
                _ZERO,
                _ZERO,
                _ZERO,
                _ZERO,
                _ZERO,
                "",
                _ZERO,
                _ZERO,
                f"{line.channel_order_no if refund else ''}\t",
                fen_text(printed_fee),
                _ZERO,
                "",
            )
        )
    text.write(f"{DETAIL_END}\r\n")
    text.write(f"#交易合计：{tally.count(TRADE)}笔，商家实收共{fen_text(tally.total(TRADE))}元，商家优惠共0.00元\r\n")
    text.write(
        f"#退款合计：{tally.count(REFUND)}笔，商家实收退款共{fen_text(tally.total(REFUND))}元，商家优惠退款共0.00元\r\n"
    )
    text.write(f"#导出时间：[{exported:%Y年%m月%d日 %H:%M:%S}]\r\n")


def _write_summary(text: IO[str], tally: Tally, *, day: date, account: str, exported: datetime) -> None:
    text.write(f"#支付宝业务汇总查询\r\n#账号：[{account}]\r\n{_period(day)}\r\n{SUMMARY_START}\r\n")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(SUMMARY_COLUMNS)
    amount = tally.total(TRADE) + tally.total(REFUND)
    fee = tally.total("fee")
    for store in ("\t", "合计"):
        writer.writerow(
            (
                store,
                "\t",
                tally.count(TRADE),
                tally.count(REFUND),
                fen_text(amount),
                fen_text(amount),
                _ZERO,
                _ZERO,
                _ZERO,
                fen_text(fee),
                _ZERO,
                fen_text(amount + fee),
            )
        )
    text.write(f"{SUMMARY_END}\r\n#导出时间：[{exported:%Y年%m月%d日 %H:%M:%S}]\r\n")


def _period(day: date) -> str:
    following = day + timedelta(days=1)
    return f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{following:%Y年%m月%d日} 00:00:00]"


class _GbkName(zipfile.ZipInfo):
    """A zip entry named in GBK without the UTF-8 flag, as Alipay's archives are."""

    def __init__(self, name: str, day: date) -> None:
        super().__init__(name, date_time=(day.year, day.month, day.day, 9, 0, 0))
        self.compress_type = zipfile.ZIP_DEFLATED

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # zipfile's hook for the name's bytes
        return self.filename.encode(ENCODING), self.flag_bits & ~0x800


@contextmanager
def _gbk_text(raw: IO[bytes]) -> Iterator[IO[str]]:
    """GBK text over a zip entry opened for writing; flushed and detached after (the entry closes itself)."""
    text = io.TextIOWrapper(raw, encoding=ENCODING, newline="")
    try:
        yield text
    finally:
        text.flush()
        text.detach()


# --- parsing ------------------------------------------------------------------------------


def iter_lines(stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    """Parse Alipay's trade bill zip (see the module docstring); raises StatementFormatError."""
    with _seekable(stream) as archive_stream:
        try:
            archive = zipfile.ZipFile(archive_stream, metadata_encoding=ENCODING)
        except (zipfile.BadZipFile, OSError) as exc:
            raise StatementFormatError(0, 0, f"not a zip archive (truncated?): {exc}") from None
        with archive:
            detail, summary = _members(archive)
            tally = Tally()
            yield from _read_member(archive, detail, lambda rows: _parse_detail(rows, day, tally))
            if summary is not None:
                yield from _read_member(archive, summary, lambda rows: _check_summary(rows, day, tally))


def _members(archive: zipfile.ZipFile) -> tuple[zipfile.ZipInfo, zipfile.ZipInfo | None]:
    details = [i for i in archive.infolist() if i.filename.endswith(DETAIL_SUFFIX)]
    summaries = [i for i in archive.infolist() if i.filename.endswith(SUMMARY_SUFFIX)]
    if len(details) != 1 or len(summaries) > 1:
        names = ", ".join(i.filename for i in archive.infolist()) or "nothing"
        raise StatementFormatError(0, 0, f"expected one *{DETAIL_SUFFIX} in the archive, it holds {names}")
    return details[0], summaries[0] if summaries else None


def _read_member(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    parse: Callable[[Iterator[tuple[int, list[str]]]], Iterator[StatementLine]],
) -> Iterator[StatementLine]:
    last = 0
    try:
        with archive.open(member) as raw, text_of(raw, ENCODING) as text:
            rows = _tracking(csv_rows(text, decoding="GBK"))
            for line in parse(rows):
                last = line.line_no
                yield line
    except StatementFormatError as exc:
        raise StatementFormatError(exc.line, exc.column, f"{member.filename}: {exc.problem}") from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise StatementFormatError(last, 0, f"{member.filename}: corrupt archive member: {exc}") from None


def _tracking(rows: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    """Rows with every cell stripped of the blanks and tabs Alipay pads them with."""
    for line_no, row in rows:
        yield line_no, [cell.strip() for cell in row]


def _parse_detail(rows: Iterator[tuple[int, list[str]]], day: date, tally: Tally) -> Iterator[StatementLine]:
    header_line = _preamble(rows, DETAIL_START, day)
    line_no, header = next(rows, (header_line + 1, None))
    if header is None:
        raise StatementFormatError(line_no, 0, "no column header after the 业务明细列表 marker: the file is truncated")
    columns = Columns(header, line_no, required=_REQUIRED)
    refund_no_column = next((name for name in _REFUND_NO if name in columns), None)
    if refund_no_column is None:
        raise StatementFormatError(line_no, 0, f"missing column {_REFUND_NO[0]!r}")
    last = line_no
    for line_no, row in rows:
        last = line_no
        if row and row[0].startswith("#"):
            if ",".join(row) != DETAIL_END:
                raise StatementFormatError(line_no, 1, f"expected the 业务明细列表结束 marker, found {row[0][:40]!r}")
            _check_footer(rows, line_no, tally)
            return
        yield _line(row, line_no, columns, refund_no_column, tally)
    raise StatementFormatError(last + 1, 0, "no 业务明细列表结束 marker: the file is truncated")


def _preamble(rows: Iterator[tuple[int, list[str]]], marker: str, day: date) -> int:
    """The ``#`` lines before ``marker``: the 起始日期 must be ``day``. Returns the marker's line."""
    for line_no, row in rows:
        text = ",".join(row)
        if text == marker:
            return line_no
        if not text.startswith("#"):
            raise StatementFormatError(line_no, 1, f"missing the marker {marker.strip('#-')!r}")
        start = _START_DAY.match(text)
        if start is not None:
            stated = date(*(int(part) for part in start.groups()))
            if stated != day:
                raise StatementFormatError(line_no, 0, f"this is the bill of {stated}, not of {day}")
    raise StatementFormatError(1, 0, f"missing the marker {marker.strip('#-')!r}")


def _line(row: list[str], line_no: int, columns: Columns, refund_no_column: str, tally: Tally) -> StatementLine:
    columns.check(row, line_no)
    index = columns.index

    def money(name: str) -> int:
        return yuan(row[index[name]], line_no, columns.column(name))

    kind = row[index["业务类型"]]
    if kind not in (TRADE, REFUND):
        raise StatementFormatError(line_no, columns.column("业务类型"), f"unknown 业务类型 {kind!r}")
    amount, received, printed_fee = money("订单金额（元）"), money("商家实收（元）"), money("服务费（元）")
    tally.add(kind, received)
    tally.sum("fee", printed_fee)
    finished = row[index["完成时间"]] or (row[index["创建时间"]] if "创建时间" in columns else "")
    booked_at = china_time(finished, line_no, columns.column("完成时间"))
    trade_no, out_trade_no = row[index["支付宝交易号"]], row[index["商户订单号"]]
    if not out_trade_no:
        raise StatementFormatError(line_no, columns.column("商户订单号"), "empty 商户订单号")
    if kind == TRADE:
        return StatementLine(
            line_no=line_no,
            channel_order_no=out_trade_no,
            operation=Operation.WITHHOLD,
            status=LineStatus.SUCCEEDED,
            amount=abs(amount),
            currency="CNY",
            fee=-printed_fee,
            booked_at=booked_at,
            channel_txn_id=trade_no,
        )
    refund_no = row[index[refund_no_column]]
    if not refund_no:
        raise StatementFormatError(line_no, columns.column(refund_no_column), f"a 退款 row without {refund_no_column}")
    return StatementLine(
        line_no=line_no,
        channel_order_no=refund_no,
        operation=Operation.REFUND,
        status=LineStatus.SUCCEEDED,
        amount=abs(amount),
        currency="CNY",
        fee=-printed_fee,
        booked_at=booked_at,
        channel_txn_id=trade_no,
        original_channel_order_no=out_trade_no,
        original_channel_txn_id=trade_no,
    )


def _check_footer(rows: Iterator[tuple[int, list[str]]], end_line: int, tally: Tally) -> None:
    """The 交易合计 / 退款合计 lines after the end marker must agree with the rows."""
    seen: set[str] = set()
    for line_no, row in rows:
        text = ",".join(row)
        for kind, pattern in ((TRADE, _TRADE_TOTAL), (REFUND, _REFUND_TOTAL)):
            found = pattern.search(text)
            if found is None:
                continue
            seen.add(kind)
            check_total(int(found.group(1)), tally.count(kind), f"{kind}合计 count", line_no, 0, money=False)
            if found.group(2) is not None:
                check_total(yuan(found.group(2), line_no, 0), tally.total(kind), f"{kind}合计 商家实收", line_no, 0)
    for kind in (TRADE, REFUND):
        if kind not in seen:
            raise StatementFormatError(end_line + 1, 0, f"no #{kind}合计 line after the detail: the file is truncated")


def _check_summary(rows: Iterator[tuple[int, list[str]]], day: date, tally: Tally) -> Iterator[StatementLine]:
    """The summary file's 合计 row must agree with the detail; it yields no lines."""
    marker_line = _preamble(rows, SUMMARY_START, day)
    line_no, header = next(rows, (marker_line + 1, None))
    if header is None:
        raise StatementFormatError(line_no, 0, "no column header after the 业务汇总列表 marker")
    columns = Columns(
        header, line_no, required=("门店编号", "交易订单总笔数", "退款订单总笔数", "订单金额（元）", "服务费（元）")
    )
    total: list[str] | None = None
    total_line = 0
    for line_no, row in rows:
        if row and row[0].startswith("#"):
            if ",".join(row) != SUMMARY_END:
                raise StatementFormatError(line_no, 1, f"expected the 业务汇总列表结束 marker, found {row[0][:40]!r}")
            break
        columns.check(row, line_no)
        if row[columns.index["门店编号"]] == "合计":
            total = row
            total_line = line_no
    else:
        raise StatementFormatError(line_no + 1, 0, "no 业务汇总列表结束 marker: the file is truncated")
    if total is None:
        return
    index = columns.index
    trades, refunds = total[index["交易订单总笔数"]], total[index["退款订单总笔数"]]
    if not (trades.isdigit() and refunds.isdigit()):
        raise StatementFormatError(total_line, columns.column("交易订单总笔数"), "counts are not numbers")
    check_total(
        int(trades), tally.count(TRADE), "交易订单总笔数", total_line, columns.column("交易订单总笔数"), money=False
    )
    check_total(
        int(refunds), tally.count(REFUND), "退款订单总笔数", total_line, columns.column("退款订单总笔数"), money=False
    )
    amount_column = columns.column("订单金额（元）")
    stated = yuan(total[index["订单金额（元）"]], total_line, amount_column)
    check_total(stated, tally.total(TRADE) + tally.total(REFUND), "订单金额", total_line, amount_column)
    fee_column = columns.column("服务费（元）")
    check_total(
        yuan(total[index["服务费（元）"]], total_line, fee_column), tally.total("fee"), "服务费", total_line, fee_column
    )
    yield from ()


@contextmanager
def _seekable(stream: BinaryIO) -> Iterator[IO[bytes]]:
    """The stream itself when it can seek (a zip needs to), else a temporary copy of it."""
    if stream.seekable():
        yield stream
        return
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as copy:
        shutil.copyfileobj(stream, copy)
        copy.seek(0)
        yield copy


FORMAT = StatementFormat(
    "alipay",
    iter_lines,
    covers=frozenset({Operation.WITHHOLD, Operation.REFUND}),
    lists_failures=False,
    description="Alipay trade bill (业务明细, zip of GBK CSV)",
)
