"""Telnyx: Ed25519 verification against an independent signer (PyNaCl), keys, malformed headers, mapping.

tests/fixtures/telnyx/vectors.json was signed with PyNaCl (libsodium), not with
our `sign()` (which uses `cryptography`/OpenSSL), so the two implementations
check each other. Telnyx signs server-side: the private keys are test keys.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import nacl.signing
import pytest
from conftest import FIXTURES, TELNYX_SIGNING_KEY, TELNYX_SIGNING_KEY_OLD, TEST_ENV
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklane.operators import sending
from hooklane.shared.config import ConfigError
from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Event
from hooklane.shared.providers import telnyx
from hooklane.shared.providers.base import SignatureError

PUBLIC_KEYS = [TEST_ENV["TELNYX_PUBLIC_KEY"].encode(), TEST_ENV["TELNYX_PUBLIC_KEY_OLD"].encode()]
VECTORS = json.loads((FIXTURES / "telnyx" / "vectors.json").read_text(encoding="utf-8"))
GOOD = VECTORS[0]
BODY = GOOD["body"].encode()
TS = GOOD["timestamp"]
SIG = GOOD["headers"]["telnyx-signature-ed25519"]


def verify(body: bytes, headers: dict[str, str], *, now: float = TS, keys: list[bytes] | None = None,
           tolerance: int = 300) -> None:
    telnyx.verify(body, headers, PUBLIC_KEYS if keys is None else keys, tolerance=tolerance, now=lambda: now)


def good_headers(**over: str) -> dict[str, str]:
    return {"telnyx-signature-ed25519": SIG, "telnyx-timestamp": str(TS), **over}


# --------------------------------------------------------------------------- vectors and the two implementations


@pytest.mark.parametrize("vector", VECTORS, ids=[v["why"][:50] for v in VECTORS])
def test_signature_vector(vector: dict[str, Any]) -> None:
    args = (vector["body"].encode(), vector["headers"])
    if vector["valid"]:
        verify(*args, now=vector["now"])
    else:
        with pytest.raises(SignatureError):
            verify(*args, now=vector["now"])


def test_our_signature_verifies_with_pynacl_and_round_trips() -> None:
    body = '{"data":{"event_type":"call.answered","id":"x","payload":{"from":"Zoë"}}}'.encode()
    headers = telnyx.sign(body, TELNYX_SIGNING_KEY, timestamp=1_750_000_000)
    assert headers["telnyx-timestamp"] == "1750000000"
    key = nacl.signing.VerifyKey(base64.b64decode(PUBLIC_KEYS[0]))
    key.verify(b"1750000000|" + body, base64.b64decode(headers["telnyx-signature-ed25519"]))
    verify(body, headers, now=1_750_000_000)


def test_the_previous_public_key_of_a_rotation_list_verifies() -> None:
    headers = telnyx.sign(BODY, TELNYX_SIGNING_KEY_OLD, timestamp=TS)
    verify(BODY, headers)
    with pytest.raises(SignatureError, match="does not match"):
        verify(BODY, headers, keys=PUBLIC_KEYS[:1])


def test_a_private_key_configured_as_the_secret_verifies_by_its_public_key() -> None:
    # How `hooklane dev` and the tests hold a key that can also sign.
    verify(BODY, good_headers(), keys=[TELNYX_SIGNING_KEY])


@pytest.mark.parametrize("form", [
    TELNYX_SIGNING_KEY.replace(b"\n", b" "),  # one line, as an env file holds it
    TELNYX_SIGNING_KEY.replace(b"\n", b"\\n"),  # literal \n escapes
    TELNYX_SIGNING_KEY.replace(b"\n", b"\r\n"),
], ids=["spaces", "escaped-newlines", "crlf"])
def test_a_pem_private_key_may_be_written_on_one_line(form: bytes) -> None:
    telnyx.check_secret(form)
    verify(BODY, telnyx.sign(BODY, form, timestamp=TS))


def test_sign_refuses_a_public_key_with_a_reason() -> None:
    with pytest.raises(ValueError, match="private key"):
        telnyx.sign(BODY, PUBLIC_KEYS[0])
    with pytest.raises(sending.SendError, match="private key"):
        sending.build_delivery("telnyx", None, "call.hangup", secret=PUBLIC_KEYS[0])


def test_no_configured_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="no public key"):
        verify(BODY, good_headers(), keys=[])


@pytest.mark.parametrize(("skew", "accepted"), [(0, True), (300, True), (-300, True), (301, False), (-301, False),
                                                (300.5, False)])
def test_timestamp_window_edges(skew: float, accepted: bool) -> None:
    if accepted:
        verify(BODY, good_headers(), now=TS + skew)
    else:
        with pytest.raises(SignatureError, match="tolerance"):
            verify(BODY, good_headers(), now=TS + skew)


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("over", [
    {"telnyx-signature-ed25519": ""},
    {"telnyx-timestamp": ""},
    {"telnyx-signature-ed25519": SIG + "!!"},  # b64decode would drop these
    {"telnyx-signature-ed25519": SIG[:40] + " " + SIG[40:]},
    {"telnyx-signature-ed25519": SIG[:-4]},  # 63 bytes... or bad padding: either way not a signature
    {"telnyx-signature-ed25519": base64.b64encode(base64.b64decode(SIG) + b"\x00").decode()},  # 65 bytes
    {"telnyx-signature-ed25519": base64.b64encode(base64.b64decode(SIG)[:63]).decode()},  # 63 bytes
    {"telnyx-signature-ed25519": "é" * 88},
    {"telnyx-signature-ed25519": base64.b64decode(SIG).hex()},  # hex, not base64
    {"telnyx-timestamp": f"{TS}.0"},
    {"telnyx-timestamp": "١٧٤٨٨٧٤١٩٢"},
    {"telnyx-timestamp": str(TS * 1000)},  # milliseconds
], ids=lambda o: repr(o)[:60])
def test_malformed_header_is_a_signature_error(over: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, good_headers(**over))


@pytest.mark.parametrize("missing", ["telnyx-signature-ed25519", "telnyx-timestamp"])
def test_missing_header_is_refused(missing: str) -> None:
    headers = good_headers()
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing}"):
        verify(BODY, headers)


def test_standard_webhooks_headers_are_not_a_telnyx_signature() -> None:
    # What telnyx-python's generated webhooks.unwrap() checked before v4.90.0: Telnyx never sends it.
    with pytest.raises(SignatureError, match="missing telnyx-signature-ed25519"):
        verify(BODY, {"webhook-id": "msg_1", "webhook-timestamp": str(TS), "webhook-signature": "v1," + SIG[:44]})


@settings(max_examples=400, deadline=None)
@given(signature=st.one_of(st.text(max_size=100), st.binary(min_size=60, max_size=68).map(
    lambda b: base64.b64encode(b).decode())), timestamp=st.one_of(st.text(max_size=14), st.just(str(TS))))
def test_any_header_text_is_accepted_or_a_signature_error(signature: str, timestamp: str) -> None:
    try:
        verify(BODY, good_headers(**{"telnyx-signature-ed25519": signature, "telnyx-timestamp": timestamp}))
    except SignatureError:
        pass


# --------------------------------------------------------------------------- keys at config load


def ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.mark.parametrize(("value", "reason"), [
    ("not base64 at all!", "base64"),
    (base64.b64encode(b"\x01" * 31).decode(), "32 bytes"),
    (base64.b64encode(b"\x01" * 64).decode(), "32 bytes"),
    (base64.b64encode(b"\x01" * 32).decode().rstrip("=") + " x", "base64"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM"),
    (ec_pem().decode(), "not an Ed25519 key"),
])
def test_a_key_that_can_never_verify_fails_the_config_naming_it(make_config: Any, value: str, reason: str) -> None:
    text = '[[sources]]\nname = "tx"\nprovider = "telnyx"\nsecrets = ["env:TELNYX_PUBLIC_KEY", "env:BAD_KEY"]\n'
    with pytest.raises(ConfigError, match=rf"^sources\[0\]\.secrets\[1\]: .*{reason}") as refused:
        make_config(text, env={"BAD_KEY": value})
    assert value.strip() not in str(refused.value)


def test_public_and_private_keys_load_as_source_secrets(make_config: Any) -> None:
    text = '[[sources]]\nname = "tx"\nprovider = "telnyx"\nsecrets = ["env:TELNYX_PUBLIC_KEY", "env:SIGNING"]\n'
    config = make_config(text, env={"SIGNING": TELNYX_SIGNING_KEY.decode()})
    assert len(config.sources["tx"].secrets) == 2


# --------------------------------------------------------------------------- mapping


def event(payload: dict[str, Any]) -> Event:
    body = json.dumps(payload).encode()
    return telnyx.normalize(json.loads(body), Delivery(id="0" * 32, source="tx", provider="telnyx",
                                                        received_at="2026-01-01T00:00:00.000000Z", body=body))


def sample(name: str, **payload: Any) -> dict[str, Any]:
    out = copy.deepcopy(telnyx.PROVIDER.samples()[name])
    out["data"]["payload"].update(payload)
    return out


@pytest.mark.parametrize(("cause", "expected"), [
    ("normal_clearing", "call.completed"), ("time_limit", "call.completed"), ("unspecified", "call.completed"),
    ("user_busy", "call.failed"), ("call_rejected", "call.failed"), ("timeout", "call.failed"),
    ("no_answer", "call.failed"), ("not_found", "call.failed"), ("originator_cancel", "call.failed"),
    (None, "call.completed"),
])
def test_hangup_cause_decides_completed_or_failed(cause: str | None, expected: str) -> None:
    e = event(sample("call.hangup", hangup_cause=cause))
    assert (e.type, e.call.outcome) == (expected, cause)
    assert e.call.ended_at == e.occurred_at
    assert (e.call.duration_seconds is None) == (expected == "call.failed")


def test_completed_hangup_duration_runs_from_start_time_to_the_event() -> None:
    assert event(sample("call.hangup")).call.duration_seconds == 164.5
    assert event(sample("call.hangup", start_time="not a time")).call.duration_seconds is None
    assert event(sample("call.hangup", start_time="2030-01-01T00:00:00Z")).call.duration_seconds is None


@pytest.mark.parametrize(("direction", "expected", "phone"), [
    ("incoming", "inbound", "+13125550100"), ("outgoing", "outbound", "+13125550199"), (None, None, None)])
def test_direction_and_remote_party_on_call_initiated(direction: str | None, expected: str | None,
                                                      phone: str | None) -> None:
    e = event(sample("call.initiated", direction=direction))
    assert (e.call.direction, e.call.phone) == (expected, phone)


def test_recording_url_prefers_mp3_then_wav_then_the_public_urls() -> None:
    assert event(sample("call.recording.saved", recording_urls={"wav": "w"})).call.recording_url == "w"
    assert event(sample("call.recording.saved", recording_urls={},
                        public_recording_urls={"mp3": "p"})).call.recording_url == "p"


def test_identity_is_the_event_id_and_commands_ids_stay_in_metadata() -> None:
    e = event(sample("call.answered"))
    assert e.id == "tx:f3e1b3a9-9c47-4a5e-8d0e-2a7c1b1e4c11"
    assert e.call.id == "428c31b6-7af4-4bcb-b7f5-5013ef9657c1"  # call_leg_id: on every event, recordings too
    assert e.call.metadata["call_control_id"].startswith("v3:")
    assert e.call.metadata["call_session_id"] == "428c31b6-abf3-3bc1-b7f4-5013ef9657c1"
