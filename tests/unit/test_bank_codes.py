"""Bank codes come from a configured set: per-bank state stays bounded by configuration, not by callers."""

from __future__ import annotations

import pytest

from gateway import validation as v
from gateway.config import from_mapping
from gateway.errors import InvalidInput


def test_an_unknown_bank_code_is_refused_naming_the_field() -> None:
    accepted = v.accepted_banks(["ICBC"], [frozenset({"XYZB"}), None])
    assert v.bank_code("ICBC", accepted) == "ICBC" and v.bank_code("XYZB", accepted) == "XYZB"
    for code in ("CCB", "ZZ99", "ICBC2"):
        with pytest.raises(InvalidInput) as refused:
            v.bank_code(code, accepted)
        assert refused.value.field == "bank_code" and code not in str(refused.value)
    with pytest.raises(InvalidInput, match="upper-case"):
        v.bank_code("icbc", accepted)


def test_the_default_set_is_the_documented_mainland_list() -> None:
    config = from_mapping({})
    assert config.banks.codes == v.MAINLAND_BANK_CODES
    assert {"ICBC", "ABC", "BOC", "CCB", "CMB", "PSBC"} <= config.banks.codes
    assert all(v.BANK_CODE.fullmatch(code) for code in v.MAINLAND_BANK_CODES)
    assert from_mapping({"banks": {"codes": ["ICBC", "XYZB"]}}).banks.codes == {"ICBC", "XYZB"}
