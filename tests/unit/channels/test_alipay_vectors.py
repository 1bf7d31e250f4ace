"""The Alipay adapter against answers and notifies that do not come from ``channels/alipay/wire.py``.

Every vector is built from python-alipay-sdk's own code paths (its signer
``_sign``, its canonical string ``_ordered_data``, its verification
``verify``, the answers its docstrings document) or from the published API
documentation, and served by a stand-in platform that shares no code with our
wire module or simulator (``platform_double``). Sources, per test:

* refund: the answer shape of ``alipay.trade.refund``; Alipay's developer
  article "alipay.trade.refund 如何判断退款是否成功" (developer.aliyun.com/article/707647):
  ``code 10000`` only says the call succeeded, money moved only when
  ``fund_change`` is ``Y``;
* transfer query: alipay-sdk-java-all ``v3/docs/AlipayFundTransCommonApi.md``:
  ``product_code`` and ``biz_scene`` "如果传递了out_biz_no则该字段为必传";
* notify with an empty field: python-alipay-sdk ``verify`` / ``_ordered_data``
  and the Java SDK's ``getSignCheckContentV1`` keep ``key=`` for empty values;
* inst_name: alipay-sdk-java-all ``BankcardExtInfo``: ``inst_name`` is the
  "机构名称" (the example in the transfer docs: 招商银行);
* balance: ``alipay.fund.account.query`` takes ``alipay_user_id`` (the
  merchant's 2088... id; AlipayFundAccountQueryModel);
* credential refusals: python-alipay-sdk ``_verify_and_return_sync_response``
  documents them unsigned (no ``sign``, or ``"sign": ""``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest
from alipay import AliPay
from alipay.exceptions import AliPayException

from channels.alipay.adapter import AlipayChannel
from channels.contract import (
    CallbackRejected,
    ChannelRejected,
    Operation,
    OrderRef,
    OutcomeStatus,
    PayoutOrder,
    RefundOrder,
    WithholdOrder,
)
from channels.registry import ChannelConfigError
from tests.unit.channels.platform_double import Received, Reply, platform
from tests.unit.channels.sdk_side import USER_ID, Keys, alipay_channel, sdk_notify


def _channel(keys: Keys, gateway_url: str, **settings: Any) -> AlipayChannel:
    return alipay_channel(keys, gateway_url, **settings)


def _signed_answer(sdk: AliPay, method: str, body: dict[str, Any]) -> Reply:
    """``{"<method>_response": {...}, "sign": ...}`` signed over the object's exact text by the SDK's signer."""
    segment = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    name = method.replace(".", "_") + "_response"
    return Reply(body=f'{{"{name}":{segment},"sign":"{sdk._sign(segment)}"}}')


def _answering(sdk: AliPay, bodies: dict[str, dict[str, Any]]) -> Callable[[Received], Reply]:
    return lambda seen: _signed_answer(sdk, seen.form["method"], bodies[seen.form["method"]])


def _biz(seen: Received) -> dict[str, Any]:
    biz = json.loads(seen.form["biz_content"])
    assert isinstance(biz, dict)
    return biz


# --- 1. refund: 10000 with fund_change = N is not a success --------------------------------


# the documented answer of alipay.trade.refund (developer.aliyun.com/article/707647), this refund's numbers
REFUND_ANSWER = {
    "code": "10000",
    "msg": "Success",
    "buyer_logon_id": "150****8675",
    "buyer_user_id": "2088702939584880",
    "fund_change": "Y",
    "gmt_refund_pay": "2018-08-01 14:16:22",
    "out_trade_no": "W-REF-1",
    "refund_fee": "12.34",
    "send_back_fee": "0.00",
    "trade_no": "2018080121001004890510526853",
}


@pytest.mark.parametrize(("fund_change", "status"), [("Y", OutcomeStatus.SUCCEEDED), ("N", OutcomeStatus.PENDING)])
async def test_refund_succeeds_only_when_fund_change_is_y(
    keys: Keys, alipay_side_sdk: AliPay, fund_change: str, status: OutcomeStatus
) -> None:
    answer = {**REFUND_ANSWER, "fund_change": fund_change}
    async with platform(_answering(alipay_side_sdk, {"alipay.trade.refund": answer})) as p:
        async with _channel(keys, p.url) as channel:
            outcome = await channel.refund(RefundOrder("R-1", "W-REF-1", "", 1_234, 5_000, "CNY"))
    assert outcome.status is status
    assert not outcome.definite or outcome.amount == 1_234
    if status is OutcomeStatus.PENDING:
        # accepted, money not (yet) moved by this call: the refund query decides, never a guess
        assert outcome.code == "REFUND_ACCEPTED" and not outcome.safe_elsewhere


# --- 2. transfer query by out_biz_no carries product_code and biz_scene --------------------


@pytest.mark.parametrize(
    ("bank_code", "product_code"),
    [(None, "TRANS_BANKCARD_NO_PWD"), ("ICBC", "TRANS_BANKCARD_NO_PWD"), ("ALIPAY", "TRANS_ACCOUNT_NO_PWD")],
)
async def test_transfer_query_by_out_biz_no_sends_the_required_fields(
    keys: Keys, alipay_side_sdk: AliPay, bank_code: str | None, product_code: str
) -> None:
    answer = {
        "code": "10000",
        "msg": "Success",
        "order_id": "20190801110070000006380000250621",
        "out_biz_no": "P-Q-1",
        "status": "SUCCESS",
        "trans_amount": "1.00",
    }
    async with platform(_answering(alipay_side_sdk, {"alipay.fund.trans.common.query": answer})) as p:
        async with _channel(keys, p.url) as channel:
            ref = OrderRef("P-Q-1", Operation.PAYOUT, 100, "CNY")
            outcome = await channel.query(ref if bank_code is None else replace(ref, bank_code=bank_code))
    biz = _biz(p.received[0])
    # AlipayFundTransCommonApi.md: with out_biz_no, product_code and biz_scene are required
    assert biz["out_biz_no"] == "P-Q-1"
    assert biz["product_code"] == product_code
    assert biz["biz_scene"] == "DIRECT_TRANSFER"
    assert outcome.status is OutcomeStatus.SUCCEEDED and outcome.amount == 100


# --- 3. a notify with an empty field is genuine -------------------------------------------


def _sdk_notify(sdk: AliPay) -> dict[str, str]:
    """A trade notify carrying an empty field, signed over the SDK's canonical string (which keeps ``key=``)."""
    return sdk_notify(sdk, out_trade_no="W-EMPTY-1", passback_params="")


def test_a_notify_carrying_an_empty_field_is_accepted(
    keys: Keys, alipay_side_sdk: AliPay, merchant_sdk: AliPay
) -> None:
    notify = _sdk_notify(alipay_side_sdk)
    data = dict(notify)
    signature = data.pop("sign")
    assert merchant_sdk.verify(data, signature)  # the SDK's own verification calls it genuine
    channel = _channel(keys, "http://127.0.0.1:9/gateway.do")
    notice = channel.parse_callback({}, urlencode(notify).encode())
    assert (notice.channel_order_no, notice.operation, notice.amount) == ("W-EMPTY-1", Operation.WITHHOLD, 10_005)
    assert notice.outcome.status is OutcomeStatus.SUCCEEDED


def test_the_empty_field_is_part_of_what_is_checked(keys: Keys, alipay_side_sdk: AliPay) -> None:
    channel = _channel(keys, "http://127.0.0.1:9/gateway.do")
    notify = _sdk_notify(alipay_side_sdk)
    for forged in ({**notify, "passback_params": "x"}, {k: v for k, v in notify.items() if k != "passback_params"}):
        with pytest.raises(CallbackRejected, match="signature"):
            channel.parse_callback({}, urlencode(forged).encode())


# --- 5. inst_name is the institution's name; the balance query names the merchant ----------


@pytest.mark.parametrize(
    ("bank_code", "settings", "inst_name"),
    [("CMB", {}, "招商银行"), ("nbbank", {"institution_names": {"NBBANK": "宁波银行"}}, "宁波银行")],
)
async def test_bank_card_payout_names_the_institution(
    keys: Keys, alipay_side_sdk: AliPay, bank_code: str, settings: dict[str, Any], inst_name: str
) -> None:
    answer = {
        "code": "10000",
        "msg": "Success",
        "out_biz_no": "P-1",
        "order_id": "20190801110070000006380000250621",
        "pay_fund_order_id": "20190801110070001506380000251556",
        "status": "SUCCESS",
        "trans_date": "2019-08-21 00:00:00",
    }
    async with platform(_answering(alipay_side_sdk, {"alipay.fund.trans.uni.transfer": answer})) as p:
        async with _channel(keys, p.url, **settings) as channel:
            outcome = await channel.payout(PayoutOrder("P-1", 100, "CNY", "6225880000001234", "王五", bank_code))
    payee = _biz(p.received[0])["payee_info"]
    assert payee["bankcard_ext_info"]["inst_name"] == inst_name  # BankcardExtInfo.inst_name: 机构名称
    assert outcome.status is OutcomeStatus.SUCCEEDED


async def test_a_bank_without_institution_name_is_refused_before_sending(keys: Keys, alipay_side_sdk: AliPay) -> None:
    async with platform(_answering(alipay_side_sdk, {})) as p:
        async with _channel(keys, p.url) as channel:
            outcome = await channel.payout(PayoutOrder("P-2", 100, "CNY", "6225880000001234", "王五", "XYZBANK"))
    assert p.received == []
    assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (OutcomeStatus.FAILED, "BANK_NOT_SUPPORTED", True)


def test_institution_names_setting_is_validated(keys: Keys) -> None:
    with pytest.raises(ChannelConfigError, match="institution_names"):
        _channel(keys, "http://127.0.0.1:9/gateway.do", institution_names={"CMB": ""})


async def test_balance_query_sends_the_merchants_alipay_user_id(keys: Keys, alipay_side_sdk: AliPay) -> None:
    answer = {"code": "10000", "msg": "Success", "available_amount": "1234.56", "freeze_amount": "0.00"}
    async with platform(_answering(alipay_side_sdk, {"alipay.fund.account.query": answer})) as p:
        async with _channel(keys, p.url) as channel, _channel(keys, p.url, alipay_user_id="") as unconfigured:
            balance = await channel.balance()
            with pytest.raises(ChannelConfigError, match="alipay_user_id"):
                await unconfigured.balance()
    assert balance.available == 123_456
    assert len(p.received) == 1  # the unconfigured one sent nothing
    assert _biz(p.received[0]) == {"alipay_user_id": USER_ID, "account_type": "ACCTRANS_ACCOUNT"}


# --- credentials refused: a definite, safe failure the gateway acts on ------------------------


def _sdk_documented_refusals() -> list[str]:
    """The failed answers python-alipay-sdk documents in ``_verify_and_return_sync_response``, as raw text."""
    doc = inspect.getdoc(AliPay._verify_and_return_sync_response) or ""
    decoder = json.JSONDecoder()
    found: list[str] = []
    i = doc.find("{")
    while i != -1:
        obj, end = decoder.raw_decode(doc, i)
        if isinstance(obj, dict) and obj:
            found.append(json.dumps(obj))
        i = doc.find("{", end)
    return found


def test_the_sdk_documents_unsigned_refusals() -> None:
    refusals = [json.loads(text) for text in _sdk_documented_refusals()]
    sub_codes = {body["sub_code"] for r in refusals for body in r.values() if isinstance(body, dict)}
    assert "isv.invalid-app-id" in sub_codes
    assert all(not r.get("sign") for r in refusals)


@pytest.mark.parametrize("sub_code", ["isv.invalid-app-id", "isv.invalid-signature"])
@pytest.mark.parametrize("shape", ["method_response", "error_response"])
async def test_unsigned_credential_refusal_is_a_credentials_failure(
    keys: Keys, merchant_sdk: AliPay, sub_code: str, shape: str
) -> None:
    # the SDK's documented shapes: under <method>_response with no sign, or error_response with "sign": ""
    first, second = (json.loads(text) for text in _sdk_documented_refusals())
    template = first["alipay_trade_query_response"] if shape == "method_response" else second["error_response"]
    body = {**template, "code": "40002", "sub_code": sub_code}

    def answer(seen: Received) -> Reply:
        name = seen.form["method"].replace(".", "_") + "_response"
        if shape == "method_response":
            return Reply(body=json.dumps({name: body}, ensure_ascii=False))
        return Reply(body=json.dumps({"error_response": body, "sign": ""}, ensure_ascii=False))

    with pytest.raises(AliPayException):  # the SDK, too, refuses to read it as a verified answer
        merchant_sdk._verify_and_return_sync_response(answer(_query_form()).body, "alipay_trade_query_response")
    async with platform(answer) as p:
        async with _channel(keys, p.url) as channel:
            withheld = await channel.withhold(WithholdOrder("W-CR-1", 100, "CNY", "A1", "6222020000001234", "ICBC"))
            queried = await channel.query(OrderRef("W-CR-0", Operation.WITHHOLD, 100, "CNY"))
            # refused before processing: definite, safe elsewhere, and flagged for the gateway
            assert (withheld.status, withheld.code) == (OutcomeStatus.FAILED, "CREDENTIALS_REJECTED")
            assert withheld.raw_code == sub_code
            assert withheld.safe_elsewhere and withheld.credentials_rejected
            # a refused query says nothing about the earlier order, but it is still a refusal of our credentials
            assert queried.status is OutcomeStatus.PENDING and queried.credentials_rejected
            with pytest.raises(ChannelRejected) as rejected:
                await channel.balance()
            assert rejected.value.credentials_rejected


def _query_form() -> Received:
    return Received("POST", "/gateway.do", {}, b"", {"method": "alipay.trade.query"})


async def test_any_other_unsigned_answer_stays_unverified(keys: Keys) -> None:
    unsigned_success = {"alipay_trade_pay_response": {"code": "10000", "msg": "Success", "trade_no": "T1"}}
    unsigned_decline = {
        "alipay_trade_pay_response": {"code": "40004", "sub_code": "ACQ.BUYER_BALANCE_NOT_ENOUGH", "msg": "x"}
    }
    for text in (json.dumps(unsigned_success), json.dumps(unsigned_decline)):
        async with platform(lambda _seen, text=text: Reply(body=text)) as p:
            async with _channel(keys, p.url) as channel:
                outcome = await channel.withhold(WithholdOrder("W-U-1", 100, "CNY", "A1", "6222020000001234", "ICBC"))
        assert (outcome.status, outcome.code) == (OutcomeStatus.PENDING, "UNVERIFIED_RESPONSE")
        assert not outcome.credentials_rejected
