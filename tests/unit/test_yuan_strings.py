"""Adversarial probe: amounts written in yuan (channel notices, statements, the console's forms).

Exactly two decimals at most, ASCII digits only, no exponent, no sign where none belongs, never a float:
anything else is refused, never rounded.
"""

from __future__ import annotations

import pytest

from channels.alipay.wire import yuan_to_fen
from channels.statement import StatementFormatError, yuan_to_minor
from gateway.console.views import parse_yuan
from gateway.errors import InvalidInput

BAD = ["1.234", "1e2", "1E2", "0x10", "１２.３０", "١٢", "12.", ".5", "+1.00", "1_000", "nan", "inf", "", " ", "1.2.3"]


@pytest.mark.parametrize("text", BAD)
def test_a_channels_yuan_string_that_is_not_exact_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(text)


@pytest.mark.parametrize("text", [*BAD, "12345678901234567.00"])
def test_a_statements_yuan_string_that_is_not_exact_is_refused(text: str) -> None:
    with pytest.raises(StatementFormatError):
        yuan_to_minor(text)


@pytest.mark.parametrize("text", [t for t in BAD if t.strip()] + ["10000000000000.01", "-10000000000000.01"])
def test_an_operators_yuan_amount_that_is_not_exact_or_too_large_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_yuan(text, "delta")
    assert err.value.field == "delta"


def test_exact_amounts_are_read_exactly() -> None:
    assert yuan_to_fen("0.07") == 7 and yuan_to_fen("100") == 10_000 and yuan_to_fen("12.3") == 1_230
    assert yuan_to_minor("-12.30") == -1_230 and yuan_to_minor("0.06000", zero_padded=True) == 6
    assert parse_yuan("1,000.01", "delta") == 100_001 and parse_yuan("  ", "delta") is None
    assert parse_yuan("10000000000000.00", "delta") == 10**15  # the bound itself


@pytest.mark.parametrize("text", ["1,0.5", "1,5", "1,00", "10,00.00", ",100", "100,", "1,,000", "1,000,00", "1,0000"])
def test_commas_other_than_thousands_groups_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_yuan(text, "delta")
    assert err.value.field == "delta" and "1,000.00" in str(err.value)


def test_thousands_groups_are_read_exactly() -> None:
    assert parse_yuan("1,000", "delta") == 100_000 and parse_yuan("-12,345,678.9", "delta") == -1_234_567_890
    assert parse_yuan("999,999.99", "delta") == 99_999_999
