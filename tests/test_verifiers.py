"""Provider signature verifiers: frozen vectors, rotation, and every malformed header is a SignatureError.

The vectors in tests/fixtures/<provider>/vectors.json were computed with
`openssl dgst -sha256 -hmac` from each provider's document, not with our
`sign()`, so a verifier and a signer that agree on the wrong algorithm fail here.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import FIXTURES, TEST_ENV
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklane.ingest.auth import authenticate
from hooklane.shared.config import Secret, SourceConfig
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import SignatureError, VerificationError

# The secrets each signing provider's source is configured with (tests/conftest.py BASE_CONFIG).
CONFIGURED = {
    "volumereach": [TEST_ENV["VR_SECRET"].encode(), TEST_ENV["VR_SECRET_OLD"].encode()],
    "voxpria": [TEST_ENV["VOXPRIA_SECRET"].encode()],
    "volubile": [TEST_ENV["VOLUBILE_SECRET"].encode()],
}
SIGNING = sorted(CONFIGURED)
UNSIGNED = sorted(set(PROVIDERS) - set(SIGNING))
SIGNATURE_HEADER = {
    "volumereach": "x-webhook-signature",
    "voxpria": "x-voxpria-signature",
    "volubile": "x-webhook-signature",
}
PREFIX = {"volumereach": "sha256=", "voxpria": "sha256=", "volubile": ""}


def vectors(provider: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / provider / "vectors.json").read_text(encoding="utf-8"))


def signing_vectors() -> list[Any]:
    return [pytest.param(p, v, id=f"{p}-{i}-{'valid' if v['valid'] else 'invalid'}")
            for p in SIGNING for i, v in enumerate(vectors(p))]


def clock(vector: dict[str, Any]) -> Callable[[], float]:
    now = float(vector.get("now", vector.get("timestamp", 0)))
    return lambda: now


def lower(headers: dict[str, str]) -> dict[str, str]:
    # Ingest hands verifiers lower-case header names.
    return {k.lower(): v for k, v in headers.items()}


def good_vector(provider: str) -> dict[str, Any]:
    return next(v for v in vectors(provider) if v["valid"] and v["secret"] == CONFIGURED[provider][0].decode())


def verify(provider: str, body: bytes, headers: dict[str, str], secrets: list[bytes] | None = None,
           now: Callable[[], float] | None = None) -> None:
    v = good_vector(provider)
    PROVIDERS[provider].verify(body, headers, CONFIGURED[provider] if secrets is None else secrets,
                               tolerance=300, now=now or clock(v))


def with_signature(provider: str, value: str) -> tuple[bytes, dict[str, str]]:
    v = good_vector(provider)
    headers = lower(v["headers"])
    headers[SIGNATURE_HEADER[provider]] = value
    return v["body"].encode(), headers


def good_digest(provider: str) -> str:
    v = good_vector(provider)
    return lower(v["headers"])[SIGNATURE_HEADER[provider]][len(PREFIX[provider]):]


# --------------------------------------------------------------------------- frozen vectors


@pytest.mark.parametrize(("provider", "vector"), signing_vectors())
def test_signature_vector_from_the_provider_document(provider: str, vector: dict[str, Any]) -> None:
    body = vector["body"].encode("utf-8")
    headers = lower(vector["headers"])
    if vector["valid"]:
        PROVIDERS[provider].verify(body, headers, CONFIGURED[provider], tolerance=300, now=clock(vector))
    else:
        with pytest.raises(SignatureError):
            PROVIDERS[provider].verify(body, headers, CONFIGURED[provider], tolerance=300, now=clock(vector))


@pytest.mark.parametrize("provider", SIGNING)
def test_sign_produces_the_documented_signature(provider: str) -> None:
    v = good_vector(provider)
    headers = PROVIDERS[provider].sign(v["body"].encode(), v["secret"].encode(), timestamp=v.get("timestamp"))
    sent = lower(v["headers"])
    for name, value in lower(headers).items():
        assert sent[name] == value


@pytest.mark.parametrize("provider", SIGNING)
def test_sign_round_trips_through_verify(provider: str) -> None:
    body = '{"event":"call.completed","note":"é, ü, 日本"}'.encode()
    secret = CONFIGURED[provider][0]
    headers = lower(PROVIDERS[provider].sign(body, secret, timestamp=1_750_000_000))
    PROVIDERS[provider].verify(body, headers, [secret], tolerance=300, now=lambda: 1_750_000_000.0)


def test_volumereach_sign_without_timestamp_uses_the_current_time() -> None:
    import time

    body = b'{"event":"call.completed","data":{}}'
    headers = lower(PROVIDERS["volumereach"].sign(body, b"s"))
    PROVIDERS["volumereach"].verify(body, headers, [b"s"], tolerance=300, now=time.time)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("provider", SIGNING)
@pytest.mark.parametrize("position", ["first", "last"])
def test_any_secret_of_a_rotation_list_verifies(provider: str, position: str) -> None:
    v = good_vector(provider)
    secret = v["secret"].encode()
    rotation = [secret, b"next-secret"] if position == "first" else [b"next-secret", secret]
    verify(provider, v["body"].encode(), lower(v["headers"]), rotation)


@pytest.mark.parametrize("provider", SIGNING)
def test_wrong_secret_is_refused(provider: str) -> None:
    v = good_vector(provider)
    with pytest.raises(SignatureError):
        verify(provider, v["body"].encode(), lower(v["headers"]), [b"not-the-secret"])


@pytest.mark.parametrize("provider", SIGNING)
def test_no_configured_secret_is_refused(provider: str) -> None:
    v = good_vector(provider)
    with pytest.raises(SignatureError):
        verify(provider, v["body"].encode(), lower(v["headers"]), [])


# --------------------------------------------------------------------------- body


@pytest.mark.parametrize("provider", SIGNING)
@pytest.mark.parametrize("where", [0, "middle", -1])
def test_one_flipped_byte_in_the_body_is_refused(provider: str, where: int | str) -> None:
    v = good_vector(provider)
    body = bytearray(v["body"].encode())
    i = len(body) // 2 if where == "middle" else int(where)
    body[i] ^= 0x01
    with pytest.raises(SignatureError):
        verify(provider, bytes(body), lower(v["headers"]))


@pytest.mark.parametrize("provider", SIGNING)
def test_trailing_newline_added_to_the_body_is_refused(provider: str) -> None:
    v = good_vector(provider)
    with pytest.raises(SignatureError):
        verify(provider, v["body"].encode() + b"\n", lower(v["headers"]))


# --------------------------------------------------------------------------- headers


def required_headers() -> list[Any]:
    return [
        pytest.param("volumereach", "x-webhook-signature", id="volumereach-signature"),
        pytest.param("volumereach", "x-webhook-timestamp", id="volumereach-timestamp"),
        pytest.param("voxpria", "x-voxpria-signature", id="voxpria-signature"),
        pytest.param("volubile", "x-webhook-signature", id="volubile-signature"),
    ]


@pytest.mark.parametrize(("provider", "header"), required_headers())
def test_missing_header_is_refused(provider: str, header: str) -> None:
    v = good_vector(provider)
    headers = lower(v["headers"])
    del headers[header]
    with pytest.raises(SignatureError):
        verify(provider, v["body"].encode(), headers)


@pytest.mark.parametrize("provider", SIGNING)
def test_no_headers_at_all_is_refused(provider: str) -> None:
    with pytest.raises(SignatureError):
        verify(provider, good_vector(provider)["body"].encode(), {})


def test_volumereach_delivery_id_is_not_part_of_the_signature() -> None:
    v = good_vector("volumereach")
    headers = lower(v["headers"])
    del headers["x-webhook-delivery-id"]
    verify("volumereach", v["body"].encode(), headers)


@pytest.mark.parametrize("provider", SIGNING)
@pytest.mark.parametrize("value", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_empty_signature_header_is_refused(provider: str, value: str) -> None:
    with pytest.raises(SignatureError):
        verify(provider, *with_signature(provider, value))


def wrong_prefixes() -> list[Any]:
    cases = []
    for provider in ("volumereach", "voxpria"):
        for prefix in ("", "sha1=", "SHA256=", "sha256:", "sha512=", "v1="):
            cases.append(pytest.param(provider, prefix, id=f"{provider}-{prefix or 'bare'}"))
    for prefix in ("sha256=", "v1=", "hmac "):
        cases.append(pytest.param("volubile", prefix, id=f"volubile-{prefix.strip()}"))
    return cases


@pytest.mark.parametrize(("provider", "prefix"), wrong_prefixes())
def test_wrong_signature_prefix_is_refused(provider: str, prefix: str) -> None:
    with pytest.raises(SignatureError):
        verify(provider, *with_signature(provider, prefix + good_digest(provider)))


@pytest.mark.parametrize("provider", SIGNING)
def test_non_hex_digest_of_the_right_length_is_refused(provider: str) -> None:
    digest = good_digest(provider)
    for bad in ("g" * 64, "z" + digest[1:], digest[:-1] + "-", "0x" + digest[2:]):
        with pytest.raises(SignatureError):
            verify(provider, *with_signature(provider, PREFIX[provider] + bad))


@pytest.mark.parametrize("provider", SIGNING)
@pytest.mark.parametrize("length", [0, 2, 62, 63, 65, 66, 128])
def test_digest_of_the_wrong_length_is_refused(provider: str, length: int) -> None:
    digest = (good_digest(provider) * 2)[:length]
    with pytest.raises(SignatureError):
        verify(provider, *with_signature(provider, PREFIX[provider] + digest))


def garbage(provider: str) -> list[str]:
    d, p = good_digest(provider), PREFIX[provider]
    return [
        p + d + " extra",
        p + d + ",v2=" + d,
        p + d[:32] + " " + d[32:],
        p + d[:32] + "\n" + d[32:],
        p + d[:31] + " " + d[32:] + "0",
        *([p + " " + d] if p else []),  # between prefix and digest; without a prefix it is mere padding
        p + d + "\x00",
        "\x00" + p + d,
        p + d[:-1],
        "sha256=" + p + d,
    ]


@pytest.mark.parametrize("provider", SIGNING)
def test_signature_with_embedded_whitespace_or_garbage_is_refused(provider: str) -> None:
    for value in garbage(provider):
        with pytest.raises(SignatureError):
            verify(provider, *with_signature(provider, value))


@pytest.mark.parametrize("provider", SIGNING)
def test_surrounding_whitespace_is_http_padding_not_part_of_the_signature(provider: str) -> None:
    # HTTP strips optional whitespace around header values; a verifier that did not would refuse real deliveries.
    verify(provider, *with_signature(provider, "  " + PREFIX[provider] + good_digest(provider) + " "))


@pytest.mark.parametrize("provider", SIGNING)
def test_non_ascii_signature_is_refused(provider: str) -> None:
    d, p = good_digest(provider), PREFIX[provider]
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in d)  # ０-９ａ-ｆ: digits and letters, not hex
    for value in (p + "é" * 64, p + fullwidth, p + d[:-1] + "ß", "ｓｈａ２５６=" + d, p + "٠" * 64):
        with pytest.raises(SignatureError):
            verify(provider, *with_signature(provider, value))


@settings(max_examples=300, deadline=None)
@given(provider=st.sampled_from(SIGNING), value=st.text(max_size=140), timestamp=st.text(max_size=20))
def test_any_header_text_is_accepted_or_a_signature_error(provider: str, value: str, timestamp: str) -> None:
    body, headers = with_signature(provider, value)
    headers["x-webhook-timestamp"] = timestamp
    try:
        verify(provider, body, headers)
    except SignatureError:
        pass


# --------------------------------------------------------------------------- volumereach timestamp window


@pytest.mark.parametrize(("skew", "accepted"), [
    (0, True), (300, True), (-300, True), (301, False), (-301, False), (300.5, False), (86_400, False),
])
def test_volumereach_timestamp_window_edges(skew: float, accepted: bool) -> None:
    v = good_vector("volumereach")
    now = float(v["timestamp"]) + skew
    args = (v["body"].encode(), lower(v["headers"]), CONFIGURED["volumereach"])
    if accepted:
        PROVIDERS["volumereach"].verify(*args, tolerance=300, now=lambda: now)
    else:
        with pytest.raises(SignatureError):
            PROVIDERS["volumereach"].verify(*args, tolerance=300, now=lambda: now)


def test_volumereach_tolerance_is_configurable() -> None:
    v = good_vector("volumereach")
    args = (v["body"].encode(), lower(v["headers"]), CONFIGURED["volumereach"])
    PROVIDERS["volumereach"].verify(*args, tolerance=600, now=lambda: v["timestamp"] + 600.0)
    with pytest.raises(SignatureError):
        PROVIDERS["volumereach"].verify(*args, tolerance=60, now=lambda: v["timestamp"] + 61.0)


@pytest.mark.parametrize("timestamp", [
    "abc", "1741964715.0", "-1741964715", "+1741964715", "1741964715abc", "0x67d4", "1e9",
    "١٧٤١٩٦٤٧١٥", "１７４１９６４７１５", "9" * 13, "9" * 40, "17419 64715", "nan", "inf",
])
def test_volumereach_non_numeric_timestamp_is_refused(timestamp: str) -> None:
    v = good_vector("volumereach")
    headers = lower(v["headers"])
    headers["x-webhook-timestamp"] = timestamp
    with pytest.raises(SignatureError):
        verify("volumereach", v["body"].encode(), headers)


def test_volumereach_signature_is_bound_to_its_timestamp() -> None:
    v = good_vector("volumereach")
    headers = lower(v["headers"])
    headers["x-webhook-timestamp"] = str(v["timestamp"] - 1)
    with pytest.raises(SignatureError):
        verify("volumereach", v["body"].encode(), headers)


# --------------------------------------------------------------------------- unsigned providers


@pytest.mark.parametrize("provider", UNSIGNED)
def test_unsigned_providers_have_neither_verifier_nor_signer(provider: str) -> None:
    assert PROVIDERS[provider].verify is None
    assert PROVIDERS[provider].sign is None
    assert not PROVIDERS[provider].signs


def auth_vectors() -> list[Any]:
    return [pytest.param(p, v, id=f"{p}-{i}-{v['status'] or 'ok'}")
            for p in UNSIGNED for i, v in enumerate(vectors(p))]


@pytest.mark.parametrize(("provider", "vector"), auth_vectors())
def test_unsigned_provider_authenticates_by_token_and_ip(provider: str, vector: dict[str, Any]) -> None:
    source = SourceConfig(
        name="src",
        provider=provider,
        tokens=tuple(Secret(t.encode(), f"env:T{i}") for i, t in enumerate(vector["tokens"])),
        allow_ips=tuple(ipaddress.ip_network(c) for c in vector["allow_ips"]),
    )
    call = dict(body=b'{"type":"call_hungup","data":{}}', headers=lower(vector["headers"]),
                token=vector["token"], ip=vector["ip"])
    if vector["valid"]:
        authenticate(source, PROVIDERS[provider], **call)
    else:
        with pytest.raises(VerificationError) as refused:
            authenticate(source, PROVIDERS[provider], **call)
        assert refused.value.status == vector["status"]
