"""Keys, official-SDK clients and adapters for the tests that check us against code we did not write.

The SDK objects are the independent side: python-alipay-sdk (``AliPay``) and
wechatpayv3 (``Core``). The fixtures are in this folder's ``conftest.py``.
"""

from __future__ import annotations

from typing import Any

from alipay import AliPay
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3.core import Core

from channels.alipay.adapter import AlipayChannel
from channels.alipay.adapter import build as build_alipay
from channels.registry import ChannelSpec
from channels.wechatpay.adapter import WeChatPayChannel
from channels.wechatpay.adapter import build as build_wechatpay
from tests.conformance.keys import new_key, private_pem, public_pem

Keys = dict[str, rsa.RSAPrivateKey]


def new_keys() -> Keys:
    """``merchant`` (ours), ``alipay`` (Alipay's) and ``platform`` (WeChat Pay's)."""
    return {name: new_key() for name in ("merchant", "alipay", "platform")}


# --- Alipay ------------------------------------------------------------------------

APP_ID = "2021000000000042"
USER_ID = "2088102146225135"


def alipay_sdk(keys: Keys, *, as_alipay: bool = False) -> AliPay:
    """The SDK as a merchant (signs with the merchant key), or with ``as_alipay`` holding Alipay's key."""
    own, other = ("alipay", "merchant") if as_alipay else ("merchant", "alipay")
    return AliPay(
        appid=APP_ID,
        app_private_key_string=private_pem(keys[own]),
        alipay_public_key_string=public_pem(keys[other]),
    )


def sdk_notify(sdk: AliPay, **overrides: str) -> dict[str, str]:
    """A trade notify as Alipay sends it: signed with the SDK's own canonical string (empties kept) and signer."""
    fields = {
        "notify_time": "2026-11-22 10:00:00",
        "notify_type": "trade_status_sync",
        "notify_id": "ac05099524730693a8b330c5ecf72da9786",
        "app_id": APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": "2026112222001",
        "out_trade_no": "W-NOTIFY-1",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "100.05",
        "gmt_payment": "2026-11-22 09:59:58",
        **overrides,
    }
    # sign and sign_type are not part of a notify's signed string
    canonical = "&".join(f"{k}={v}" for k, v in sdk._ordered_data(dict(fields)))
    return {**fields, "sign": sdk._sign(canonical), "sign_type": "RSA2"}


def alipay_channel(keys: Keys, gateway_url: str = "http://127.0.0.1:9/gateway.do", **settings: Any) -> AlipayChannel:
    base = {
        "app_id": APP_ID,
        "app_private_key": private_pem(keys["merchant"]),
        "alipay_public_key": public_pem(keys["alipay"]),
        "gateway_url": gateway_url,
        "alipay_user_id": USER_ID,
        **settings,
    }
    return build_alipay(ChannelSpec("ali-test", "alipay", base))


# --- WeChat Pay ----------------------------------------------------------------------

MCHID = "1900000109"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PLATFORM_ID = "PUB_KEY_ID_0114232134912410000000000000"
APIV3_KEY = "a12d3924fd499edac8a5efc0123456ab"


def wechatpay_sdk(keys: Keys) -> Core:
    return Core(
        mchid=MCHID,
        cert_serial_no=MERCHANT_SERIAL,
        private_key=private_pem(keys["merchant"]),
        apiv3_key=APIV3_KEY,
        public_key=public_pem(keys["platform"]),
        public_key_id=PLATFORM_ID,
    )


def wechatpay_channel(keys: Keys, base_url: str = "http://127.0.0.1:9") -> WeChatPayChannel:
    settings = {
        "mchid": MCHID,
        "appid": "wxd678efh567hg6787",
        "merchant_serial_no": MERCHANT_SERIAL,
        "private_key": private_pem(keys["merchant"]),
        "apiv3_key": APIV3_KEY,
        "platform_public_key": public_pem(keys["platform"]),
        "platform_public_key_id": PLATFORM_ID,
        "base_url": base_url,
    }
    return build_wechatpay(ChannelSpec("wx-test", "wechatpay", settings))
