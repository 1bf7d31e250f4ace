"""``paygate recon ...`` against real MariaDB: import a bank's file by hand, list, mark, report."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.recon_seed import SeedAttempt, seed
from gateway.recon.cli import main
from gateway.store.db import Database, DatabaseConfig, migrate

DAY = "2026-03-05"


def write_config(path: Path, db: DatabaseConfig) -> None:
    path.write_text(
        f"""
[database]
host = "{db.host}"
port = {db.port}
database = "{db.database}"

[security]
account_hash_key = "recon-cli-test-hash-key-0123456789"

[[channels]]
id = "icbc-1"
adapter = "sandbox"
[channels.settings]
base_url = "http://127.0.0.1:9"
merchant_id = "icbc-merchant"
secret = "icbc-secret"
"""
    )


async def _seed(db_config: DatabaseConfig) -> None:
    await migrate(db_config)
    db = Database(db_config)
    await db.start()
    try:
        # 10:00 on 2026-03-05 in Shanghai
        at = datetime(2026, 3, 5, 2, 0, tzinfo=UTC).replace(tzinfo=None)
        rows = [SeedAttempt(f"ICBC{i}", 10_000 + i, "SUCCEEDED", at + timedelta(minutes=i)) for i in range(3)]
        await seed(db, "icbc-1", rows, created_at=at)
    finally:
        await db.stop()


def test_import_list_mark_and_report(
    db_config: DatabaseConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_seed(db_config))
    config = tmp_path / "paygate.toml"
    write_config(config, db_config)
    statement = tmp_path / "icbc-0305.csv"
    statement.write_text(
        "# timezone: Asia/Shanghai\n"
        "channel_order_no,operation,status,amount,fee,booked_at,channel_txn_id,original_channel_order_no\n"
        "ICBC0,withhold,SUCCEEDED,100.00,0.00,2026-03-05 10:00:01,T0,\n"
        "ICBC1,withhold,SUCCEEDED,100.01,0.00,2026-03-05 10:01:01,T1,\n"
        "ICBC2,withhold,SUCCEEDED,100.99,0.00,2026-03-05 10:02:01,T2,\n"
        "# total: lines=3 amount=301.00 fee=0.00\n"
    )
    args = ["--config", str(config)]
    code = main(
        [
            *args,
            "import",
            "--channel",
            "icbc-1",
            "--day",
            DAY,
            "--file",
            str(statement),
            "--format",
            "generic-csv",
            "--operator",
            "alice",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out  # inconsistent
    assert "lines 行数=3 matched 匹配=2 discrepancies 差异=1" in out
    assert "amount_mismatch" in out and "ICBC2" in out

    assert main([*args, "discrepancies", "--open"]) == 0
    listed = capsys.readouterr().out
    item_id = int(listed.split("#", 1)[1].split()[0])
    assert (
        main([*args, "mark", str(item_id), "--resolution", "EXPLAINED", "--reason", "bank typo", "--operator", "bob"])
        == 0
    )
    assert "EXPLAINED (bob: bank typo)" in capsys.readouterr().out
    assert main([*args, "discrepancies", "--open"]) == 0
    assert "0 discrepancies" in capsys.readouterr().out

    report = tmp_path / "report.csv"
    assert main([*args, "report", "--day", DAY, "--csv", str(report)]) == 0
    text = capsys.readouterr().out
    assert "代扣日报 daily withhold report 2026-03-05" in text
    rows = list(csv.reader(report.open(encoding="utf-8-sig")))
    assert rows[1][:9] == [DAY, "icbc-1", "withhold", "3", "0", "100.00%", "300.03", "0.00", "1"]

    assert (
        main(
            [
                *args,
                "import",
                "--channel",
                "icbc-1",
                "--day",
                DAY,
                "--file",
                str(statement),
                "--format",
                "nope",
                "--operator",
                "alice",
            ]
        )
        == 2
    )
    assert "format" in capsys.readouterr().err
