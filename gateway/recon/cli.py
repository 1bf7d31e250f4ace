"""``paygate recon ...``: reconciliation from the command line (operators with the gateway's configuration).

::

    paygate recon run      --channel C --day YYYY-MM-DD               download the statement and reconcile
    paygate recon import   --channel C --day D --file F --format FMT --operator NAME   a bank's file, by hand
    paygate recon runs     [--channel C] [--day D]                    the runs, newest first
    paygate recon discrepancies [--channel C] [--day D] [--run N] [--open]
    paygate recon mark     ID --resolution EXPLAINED|RESOLVED --reason TEXT --operator NAME   (audited)
    paygate recon report   --day D [--csv FILE]                       the daily withhold report (代扣日报)

Every command takes ``--config FILE`` (default: ``PAYGATE_CONFIG`` or ``paygate.toml``) and prints
bilingual (Chinese / English) headers. Exit status 0 on success, 1 when the run is inconsistent or
failed (``run``, ``import``), 2 for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date

from gateway.config import ConfigError
from gateway.errors import GatewayError, InvalidInput
from gateway.plans.spec import due_date
from gateway.recon.model import CRITICAL, ItemRow, Resolution, RunRow, RunStatus, Trigger
from gateway.recon.service import Reconciler


def _day(text: str) -> date:
    try:
        return due_date(text, "day")  # the API's rule: exactly YYYY-MM-DD (no ISO week dates)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(f"{exc.problem}: {text[:32]!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate recon", description="reconciliation (对账)")
    parser.add_argument("--config", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="download the channel's statement and reconcile it")
    run.add_argument("--channel", required=True)
    run.add_argument("--day", type=_day, required=True)
    run.add_argument("--operator", default="cli")
    imp = sub.add_parser("import", help="reconcile a statement file brought by hand")
    imp.add_argument("--channel", required=True)
    imp.add_argument("--day", type=_day, required=True)
    imp.add_argument("--file", required=True)
    imp.add_argument("--format", required=True, help="sandbox / alipay / wechatpay / generic-csv")
    imp.add_argument("--operator", required=True)
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--channel", default="")
    runs.add_argument("--day", type=_day, default=None)
    runs.add_argument("--limit", type=int, default=50)
    disc = sub.add_parser("discrepancies", help="list discrepancies (of the current runs unless --run)")
    disc.add_argument("--channel", default="")
    disc.add_argument("--day", type=_day, default=None)
    disc.add_argument("--run", type=int, default=None)
    disc.add_argument("--open", action="store_true")
    mark = sub.add_parser("mark", help="mark a discrepancy explained or resolved (audited)")
    mark.add_argument("id", type=int)
    mark.add_argument("--resolution", required=True, choices=["EXPLAINED", "RESOLVED"])
    mark.add_argument("--reason", required=True)
    mark.add_argument("--operator", required=True)
    report = sub.add_parser("report", help="the daily withhold report (代扣日报)")
    report.add_argument("--day", type=_day, required=True)
    report.add_argument("--channel", default="")
    report.add_argument("--csv", default=None, help="also write the report as CSV to this file")
    return parser


def format_run(run: RunRow) -> str:
    state = run.outcome if run.status is RunStatus.SUCCEEDED else run.status.value
    text = (
        f"run 运行 #{run.id} {run.channel} {run.day} seq={run.seq} {state}"
        f" lines 行数={run.lines} matched 匹配={run.matched} discrepancies 差异={run.discrepancies}"
        f" resolved 已核定={run.resolved} carried 挂账={run.carried}"
    )
    if run.superseded_by:
        text += f" superseded by 已被取代 #{run.superseded_by}"
    if run.error:
        text += f"\n  error 错误: {run.error}"
    return text


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_item(item: ItemRow) -> str:
    flag = "!" if item.item_class in CRITICAL else " "
    ours = f"{item.local_status or '-'} {_or_dash(item.local_amount)}"
    theirs = f"{item.line_status or '-'} {_or_dash(item.line_amount)}"
    fees = f"fee 手续费 {_or_dash(item.local_fee)}/{_or_dash(item.line_fee)}"
    return (
        f"{flag} #{item.id} {item.day} {item.channel} {item.item_class.value:<22} {item.channel_order_no}"
        f" ours 本地[{ours}] statement 对账单[{theirs}] {fees} {item.resolution.value}"
        + (f" ({item.resolved_by}: {item.resolution_reason})" if item.resolved_by else "")
    )


@asynccontextmanager
async def _reconciler(config_path: str | None) -> AsyncIterator[Reconciler]:
    from gateway.app import build_reconciler, build_registry, build_router  # the composition root's builders
    from gateway.config import load
    from gateway.store.db import Database

    config = load(config_path)
    registry = build_registry(config)
    router = build_router(config, registry)
    db = Database(config.database)
    await db.start()
    await registry.start()
    try:
        yield build_reconciler(config, db, registry, router)
    finally:
        await registry.stop()
        await db.stop()


async def _main(args: argparse.Namespace) -> int:
    async with _reconciler(args.config) as recon:
        if args.command in ("run", "import"):
            if args.command == "run":
                run = await recon.reconcile(args.channel, args.day, trigger=Trigger.MANUAL, operator=args.operator)
            else:
                run = await recon.import_file(args.channel, args.day, args.file, args.format, operator=args.operator)
            print(format_run(run))
            for item in await recon.discrepancies(run_id=run.id):
                print(format_item(item))
            return 0 if run.status is RunStatus.SUCCEEDED and run.outcome == "consistent" else 1
        if args.command == "runs":
            for run in await recon.runs(channel=args.channel, day=args.day, limit=args.limit):
                print(format_run(run))
            return 0
        if args.command == "discrepancies":
            items = await recon.discrepancies(run_id=args.run, day=args.day, channel=args.channel, open_only=args.open)
            for item in items:
                print(format_item(item))
            print(f"{len(items)} discrepancies 条差异")
            return 0
        if args.command == "mark":
            item = await recon.mark(args.id, Resolution(args.resolution), operator=args.operator, reason=args.reason)
            print(format_item(item))
            return 0
        if args.command == "report":
            from gateway.recon.report import daily_report, render_csv, render_text

            report = await daily_report(recon, args.day, channel=args.channel)
            print(render_text(report))
            if args.csv:
                await asyncio.to_thread(render_csv, report, args.csv)
            return 0
    raise AssertionError(args.command)  # pragma: no cover


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        return asyncio.run(_main(args))
    except (GatewayError, ConfigError) as exc:
        print(f"paygate recon: {exc}", file=sys.stderr)
        return 2
