"""Every word of the console in both languages, and every key the code and templates use exists."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.console.i18n import MESSAGES, pick_language, translator

CONSOLE = Path(__file__).resolve().parents[2] / "gateway" / "console"
# t('key') / t("key", ...) with a literal key; keys built at run time are checked by the pages' tests
_KEY = re.compile(r"""\bt\(\s*["']([a-z_]+\.[A-Za-z_.]*[A-Za-z_])["']\s*[,)]""")


def test_both_languages_have_the_same_keys() -> None:
    assert set(MESSAGES["zh"]) == set(MESSAGES["en"])


def test_both_languages_fill_in_the_same_values() -> None:
    for key, text in MESSAGES["zh"].items():
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", MESSAGES["en"][key])), key


def test_every_literal_key_exists() -> None:
    used = set()
    for path in [*CONSOLE.glob("*.py"), *(CONSOLE / "templates").glob("*.html")]:
        used |= set(_KEY.findall(path.read_text()))
    assert used, "the scan found no key at all"
    assert sorted(used - set(MESSAGES["en"])) == []


def test_language_choice() -> None:
    assert pick_language("en", "zh-CN") == "en"
    assert pick_language(None, "en-US,en;q=0.9") == "en"
    assert pick_language(None, "zh-TW,zh;q=0.9") == "zh"
    assert pick_language("fr", "fr-FR") == "zh"
    assert translator("en")("alert.review", n=3) == "3 flows wait for an operator's review"
    assert translator("zh")("no.such.key") == "no.such.key"
