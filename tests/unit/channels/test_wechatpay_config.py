"""WeChat Pay adapter configuration: every bad setting is named; secrets stay out of repr."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from channels.config import ConfigError
from channels.registry import ChannelSpec
from channels.wechatpay.adapter import build


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def _settings(key: rsa.RSAPrivateKey) -> dict[str, object]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "mchid": "1900000109",
        "appid": "wx1",
        "merchant_serial_no": "ABC",
        "private_key": private,
        "apiv3_key": "k" * 32,
        "platform_public_key": public,
        "platform_public_key_id": "PUB_KEY_ID_1",
    }


def test_valid_settings_build_and_hide_secrets(key: rsa.RSAPrivateKey) -> None:
    channel = build(ChannelSpec("wx", "wechatpay", _settings(key)))
    text = repr(channel) + repr(channel._settings)
    assert "k" * 32 not in text and "PRIVATE" not in text


def test_platform_certificate_gives_the_serial(key: rsa.RSAPrivateKey, tmp_path) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x5157F09EFDC096DE)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "platform.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    settings = _settings(key)
    del settings["platform_public_key"], settings["platform_public_key_id"]
    channel = build(ChannelSpec("wx", "wechatpay", {**settings, "platform_certificate_path": str(path)}))
    assert channel._settings.platform_serial == "5157F09EFDC096DE"


@pytest.mark.parametrize(
    ("change", "key_name"),
    [
        ({"mchid": ""}, "ch.mchid"),
        ({"apiv3_key": "short"}, "ch.apiv3_key"),
        ({"private_key": "junk"}, "ch.private_key"),
        ({"private_key": None}, "ch.private_key"),
        ({"platform_public_key_id": None}, "ch.platform_public_key_id"),
        ({"platform_public_key": "junk"}, "ch.platform_public_key"),
        ({"platform_certificate": "junk"}, "ch.platform_public_key"),
        ({"base_url": "api.mch.weixin.qq.com"}, "ch.base_url"),
        ({"timeout_s": -1}, "ch.timeout_s"),
    ],
)
def test_bad_settings_are_named(key: rsa.RSAPrivateKey, change: dict[str, object], key_name: str) -> None:
    settings = {k: v for k, v in {**_settings(key), **change}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        build(ChannelSpec("wx", "wechatpay", settings, key="ch"))
    assert caught.value.key == key_name
