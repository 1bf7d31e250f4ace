"""The examples in docs/RECONCILIATION.md "Statement formats" are real files of their formats."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import date
from pathlib import Path

import pytest

from channels.statement import StatementLine
from channels.statements import parser_for

DOC = Path(__file__).resolve().parents[3] / "docs" / "RECONCILIATION.md"
FENCED = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def example(heading: str) -> str:
    """The first plain fenced block of the ``### heading`` section."""
    for section in DOC.read_text(encoding="utf-8").split("\n### ")[1:]:
        if section.startswith(heading):
            for language, body in FENCED.findall(section):
                if not language:
                    return body
    raise AssertionError(f"no example under '### {heading}'")


def parse(fmt: str, data: bytes, day: date) -> list[StatementLine]:
    return list(parser_for(fmt)(io.BytesIO(data), channel_id="doc", day=day))


@pytest.mark.parametrize(("heading", "fmt", "count"), [("sandbox", "sandbox", 3), ("generic-csv", "generic-csv", 3)])
def test_our_formats_examples_parse(heading: str, fmt: str, count: int) -> None:
    assert len(parse(fmt, example(heading).encode(), date(2026, 3, 5))) == count


def test_the_wechatpay_example_parses() -> None:
    lines = parse("wechatpay", example("WeChat Pay").replace("\n", "\r\n").encode(), date(2014, 11, 10))
    assert [line.channel_order_no for line in lines] == ["1415640626", "RF1415640626"]


def test_the_alipay_example_parses() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr(
            "20880000000000000156_20260305_业务明细.csv", example("Alipay").replace("\n", "\r\n").encode("gbk")
        )
    lines = parse("alipay", archive.getvalue(), date(2026, 3, 5))
    assert [(line.channel_order_no, line.amount, line.fee) for line in lines] == [("W1", 2000, 12), ("R1", 500, -3)]
