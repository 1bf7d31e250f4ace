"""The Alipay cashiers (collect orders) against python-alipay-sdk and the published API, not our wire module.

Sources, per test:

* WAP / app pay order strings: python-alipay-sdk ``sign_data`` (the SDK's
  own builder of the string the browser or the Alipay app takes: sorted
  ``k=quote_plus(v)``, ``sign`` last) and ``api_alipay_trade_wap_pay`` /
  ``api_alipay_trade_app_pay`` (which parameters go in, ``product_code``
  QUICK_MSECURITY_PAY; for WAP the published alipay.trade.wap.pay page says
  QUICK_WAP_WAY, where the SDK writes QUICK_WAP_PAY);
* ``time_expire``: "订单绝对超时时间, 格式为yyyy-MM-dd HH:mm:ss", Alipay's clock
  (China time); after it "去支付就会报错: 订单参数异常" (yq.aliyun.com/articles/710964);
* precreate: the success and failure answers documented in the SDK's
  ``api_alipay_trade_precreate`` docstring, signed with the SDK's signer;
* close: ``ACQ.TRADE_NOT_EXIST`` (交易不存在) for a trade the payer never
  opened (precreate, WAP and app pay create the trade only then);
* notify: the SDK's canonical string and signer (``sdk_side.sdk_notify``).
"""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from alipay import AliPay

from channels.contract import (
    AWAITING_PAYMENT,
    CashierKind,
    CollectOrder,
    Operation,
    OrderRef,
    OutcomeStatus,
    PayerHints,
    notice_matches,
)
from tests.unit.channels.platform_double import Reply, platform
from tests.unit.channels.sdk_side import APP_ID, Keys, alipay_channel, sdk_notify

EXPIRES = datetime(2026, 11, 22, 2, 30, 0, tzinfo=UTC)  # 2026-11-22 10:30:00 in China
NOTIFY = "https://pay.example/callbacks/ali"


def _order(kind: CashierKind, **changes: Any) -> CollectOrder:
    fields: dict[str, Any] = {
        "channel_order_no": "C-ALI-1",
        "amount": 12_345,
        "currency": "CNY",
        "cashier": kind,
        "expires_at": EXPIRES,
        "description": "loan 42 repayment",
        "notify_url": NOTIFY,
        "payer": PayerHints(return_url="https://app.example/back"),
    }
    return CollectOrder(**{**fields, **changes})


def _signed_answer(sdk: AliPay, method: str, body: dict[str, Any]) -> Reply:
    segment = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Reply(body=f'{{"{method.replace(".", "_")}_response":{segment},"sign":"{sdk._sign(segment)}"}}')


def _params(order_string: str) -> dict[str, str]:
    pairs = parse_qsl(order_string, keep_blank_values=True, strict_parsing=True)
    assert len(dict(pairs)) == len(pairs)
    return dict(pairs)


def _sdk_builds_the_same_string(sdk: AliPay, order_string: str) -> dict[str, str]:
    """The SDK's own ``sign_data`` over our parameters gives our exact string: same signature, same encoding."""
    params = _params(order_string)
    params.pop("sign")
    assert sdk.sign_data(dict(params)) == order_string
    return params


# --- WAP and app pay: order strings the SDK would have built --------------------------------


async def test_app_pay_order_string_is_the_sdks(keys: Keys, merchant_sdk: AliPay) -> None:
    channel = alipay_channel(keys)
    started = await channel.create_collect(_order(CashierKind.IN_APP))
    assert (started.outcome.status, started.outcome.code) == (OutcomeStatus.PENDING, AWAITING_PAYMENT)
    assert started.cashier is not None and started.cashier.kind is CashierKind.IN_APP
    params = _sdk_builds_the_same_string(merchant_sdk, started.cashier.order_string)
    # what api_alipay_trade_app_pay puts in, with the order's expiry
    sdk_params = _params(
        merchant_sdk.api_alipay_trade_app_pay(
            "loan 42 repayment", "C-ALI-1", "123.45", notify_url=NOTIFY, time_expire="2026-11-22 10:30:00"
        )
    )
    for name in ("app_id", "method", "charset", "sign_type", "version", "notify_url"):
        assert params[name] == sdk_params[name], name
    assert json.loads(params["biz_content"]) == json.loads(sdk_params["biz_content"])
    assert params["app_id"] == APP_ID


async def test_wap_pay_url_is_the_gateway_with_the_sdks_order_string(keys: Keys, merchant_sdk: AliPay) -> None:
    channel = alipay_channel(keys, "https://openapi.alipay.com/gateway.do")
    started = await channel.create_collect(_order(CashierKind.H5))
    assert started.cashier is not None and started.cashier.kind is CashierKind.H5
    gateway, _, order_string = started.cashier.url.partition("?")
    assert gateway == "https://openapi.alipay.com/gateway.do"  # the SDK's README: gateway + "?" + order string
    params = _sdk_builds_the_same_string(merchant_sdk, order_string)
    assert params["method"] == "alipay.trade.wap.pay"
    assert params["return_url"] == "https://app.example/back"
    biz = json.loads(params["biz_content"])
    sdk_biz = json.loads(
        _params(
            merchant_sdk.api_alipay_trade_wap_pay(
                "loan 42 repayment",
                "C-ALI-1",
                "123.45",
                return_url="https://app.example/back",
                notify_url=NOTIFY,
                time_expire="2026-11-22 10:30:00",
                quit_url="https://app.example/back",
                product_code="QUICK_WAP_WAY",  # the published page's product code (the SDK writes QUICK_WAP_PAY)
            )
        )["biz_content"]
    )
    assert biz == sdk_biz


def test_the_sdk_writes_another_wap_product_code() -> None:
    # why the test above passes product_code explicitly: the SDK's default differs from the API page's
    assert "QUICK_WAP_PAY" in inspect.getsource(AliPay.api_alipay_trade_wap_pay)


async def test_a_chinese_subject_is_signed_as_sent(keys: Keys, merchant_sdk: AliPay, alipay_side_sdk: AliPay) -> None:
    channel = alipay_channel(keys)
    started = await channel.create_collect(_order(CashierKind.IN_APP, description="借款 42 号 第 3 期还款"))
    assert started.cashier is not None
    params = _params(started.cashier.order_string)
    signature = params.pop("sign")
    # the request rule of the API docs: every parameter but sign, empties dropped, sorted, k=v joined by &
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v)
    assert alipay_side_sdk._verify(content, signature)  # Alipay's side checks it with the merchant's public key
    assert json.loads(params["biz_content"])["subject"] == "借款 42 号 第 3 期还款"


async def test_client_side_cashiers_send_nothing(keys: Keys, alipay_side_sdk: AliPay) -> None:
    async with platform(lambda seen: Reply(500)) as p:
        async with alipay_channel(keys, f"{p.url}/gateway.do") as channel:
            for kind in (CashierKind.H5, CashierKind.IN_APP):
                assert (await channel.create_collect(_order(kind))).cashier is not None
    assert p.received == []  # the payer's browser / the Alipay app brings them to Alipay


# --- precreate (QR) ----------------------------------------------------------------------------


def _precreate_answers(sdk_doc: str) -> list[dict[str, Any]]:
    decoder, found, i = json.JSONDecoder(), [], sdk_doc.find("{")
    while i != -1:
        obj, end = decoder.raw_decode(sdk_doc, i)
        found.append(obj["alipay_trade_precreate_response"])
        i = sdk_doc.find("{", end)
    return found


DOCUMENTED_SUCCESS, DOCUMENTED_FAILURE = _precreate_answers(inspect.getdoc(AliPay.api_alipay_trade_precreate) or "")


async def test_precreate_sends_the_order_and_hands_out_the_qr_code(keys: Keys, alipay_side_sdk: AliPay) -> None:
    answer = {**DOCUMENTED_SUCCESS, "out_trade_no": "C-ALI-1"}
    async with platform(lambda seen: _signed_answer(alipay_side_sdk, seen.form["method"], answer)) as p:
        async with alipay_channel(keys, f"{p.url}/gateway.do") as channel:
            started = await channel.create_collect(_order(CashierKind.QR))
    seen = p.received[0]
    assert seen.form["method"] == "alipay.trade.precreate" and seen.form["notify_url"] == NOTIFY
    biz = json.loads(seen.form["biz_content"])
    assert biz == {
        "out_trade_no": "C-ALI-1",
        "total_amount": "123.45",
        "subject": "loan 42 repayment",
        "time_expire": "2026-11-22 10:30:00",  # absolute, China time
        "product_code": "FACE_TO_FACE_PAYMENT",
    }
    form = {k: v for k, v in seen.form.items() if k != "sign"}
    assert alipay_side_sdk._verify("&".join(f"{k}={v}" for k, v in sorted(form.items()) if v), seen.form["sign"])
    assert started.cashier is not None and started.cashier.qr_code == DOCUMENTED_SUCCESS["qr_code"]
    assert started.outcome.code == AWAITING_PAYMENT


async def test_precreate_refused_over_the_limit_is_a_safe_failure(keys: Keys, alipay_side_sdk: AliPay) -> None:
    async with platform(lambda seen: _signed_answer(alipay_side_sdk, seen.form["method"], DOCUMENTED_FAILURE)) as p:
        async with alipay_channel(keys, f"{p.url}/gateway.do") as channel:
            started = await channel.create_collect(_order(CashierKind.QR))
    assert DOCUMENTED_FAILURE["sub_code"] == "ACQ.TOTAL_FEE_EXCEED"
    assert started.cashier is None
    assert (started.outcome.status, started.outcome.safe_elsewhere) == (OutcomeStatus.FAILED, True)


# --- close of a trade the payer never opened ----------------------------------------------------

NOT_EXIST = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "交易不存在"}


@pytest.mark.parametrize(("expired_s", "closed"), [(-30, False), (61, True)])
async def test_a_never_opened_cashier_counts_as_closed_only_after_time_expire(
    keys: Keys, alipay_side_sdk: AliPay, expired_s: int, closed: bool
) -> None:
    expires_at = datetime.now(UTC) - timedelta(seconds=expired_s)
    ref = OrderRef("C-ALI-2", Operation.COLLECT, 100, "CNY", expires_at=expires_at)
    async with platform(lambda seen: _signed_answer(alipay_side_sdk, seen.form["method"], NOT_EXIST)) as p:
        async with alipay_channel(keys, f"{p.url}/gateway.do") as channel:
            outcome = await channel.close_order(ref)
    assert p.received[0].form["method"] == "alipay.trade.close"
    if closed:
        # Alipay refuses to create the trade after time_expire (+ the default 60 s grace for its clock)
        assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (OutcomeStatus.FAILED, "ORDER_CLOSED", True)
    else:
        # before it, "no such trade" says nothing: the payer may still open the cashier
        assert outcome.status is OutcomeStatus.PENDING and outcome.not_found


async def test_a_withhold_that_does_not_exist_is_never_closed_by_expiry(keys: Keys, alipay_side_sdk: AliPay) -> None:
    ref = OrderRef("W-ALI-3", Operation.WITHHOLD, 100, "CNY", expires_at=datetime.now(UTC) - timedelta(days=1))
    async with platform(lambda seen: _signed_answer(alipay_side_sdk, seen.form["method"], NOT_EXIST)) as p:
        async with alipay_channel(keys, f"{p.url}/gateway.do") as channel:
            outcome = await channel.close_order(ref)
    assert outcome.status is OutcomeStatus.PENDING  # the expiry rule is the cashier's, not a withhold's


# --- the payment's notify ----------------------------------------------------------------------


def test_a_cashier_payment_notify_is_a_payment_notice(
    keys: Keys, alipay_side_sdk: AliPay, merchant_sdk: AliPay
) -> None:
    notify = sdk_notify(alipay_side_sdk, out_trade_no="C-ALI-1", total_amount="123.45", receipt_amount="123.45")
    data = dict(notify)
    assert merchant_sdk.verify(data, data.pop("sign"))
    notice = alipay_channel(keys).parse_callback({}, urlencode(notify).encode())
    assert notice_matches(notice.operation, Operation.COLLECT)  # a trade notify does not say which kind of trade
    assert (notice.channel_order_no, notice.amount, notice.outcome.status) == (
        "C-ALI-1",
        12_345,
        OutcomeStatus.SUCCEEDED,
    )
