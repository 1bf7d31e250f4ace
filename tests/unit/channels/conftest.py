"""Fixtures for the tests that check the Alipay and WeChat Pay adapters against the official SDKs.

``keys`` are fresh per module: ``merchant`` (ours), ``alipay`` (Alipay's) and
``platform`` (WeChat Pay's). The SDK fixtures are the independent side.
"""

from __future__ import annotations

import pytest
from alipay import AliPay
from wechatpayv3.core import Core

from tests.unit.channels.sdk_side import Keys, alipay_sdk, new_keys, wechatpay_sdk


@pytest.fixture(scope="module")
def keys() -> Keys:
    return new_keys()


@pytest.fixture(scope="module")
def merchant_sdk(keys: Keys) -> AliPay:
    """python-alipay-sdk as a merchant: signs with the merchant key, verifies with Alipay's."""
    return alipay_sdk(keys)


@pytest.fixture(scope="module")
def alipay_side_sdk(keys: Keys) -> AliPay:
    """python-alipay-sdk's signer holding Alipay's key: signs answers and notifies as Alipay does."""
    return alipay_sdk(keys, as_alipay=True)


@pytest.fixture(scope="module")
def sdk(keys: Keys) -> Core:
    """wechatpayv3 ``Core`` as a merchant, trusting the platform public key (no certificate download)."""
    return wechatpay_sdk(keys)
