import pytest

from channels.statement import StatementFormatError, yuan_to_minor


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("0", 0),
        ("0.01", 1),
        ("12.3", 1230),
        ("12.30", 1230),
        (" 100.00 ", 10000),
        ("-5.5", -550),
        ("92233720368547.58", 9223372036854758),
    ],
)
def test_yuan_strings_convert_exactly(text: str, fen: int) -> None:
    assert yuan_to_minor(text) == fen


@pytest.mark.parametrize("text", ["", "1.234", "1,00", "abc", "１２.00", "1e3", "0.1\n0", "--1", ".5", "NaN"])
def test_anything_else_names_line_and_column(text: str) -> None:
    with pytest.raises(StatementFormatError) as info:
        yuan_to_minor(text, line=7, column=3)
    assert info.value.line == 7 and info.value.column == 3
    assert str(info.value).startswith("line 7, column 3: ")
