"""Retell: the verifier against retell-sdk's own signer and verifier, malformed headers, and the mapping decisions.

tests/fixtures/retell/vectors.json was computed with retell-sdk 6.2.13's
``symmetric["sign"]`` (the helper behind ``Retell.verify``), not with our `sign()`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import FIXTURES, TEST_ENV
from hypothesis import given, settings
from hypothesis import strategies as st
from retell.lib.webhook_auth import symmetric

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Event
from hooklane.shared.providers import retell
from hooklane.shared.providers.base import SignatureError

KEYS = [TEST_ENV["RETELL_API_KEY"].encode(), TEST_ENV["RETELL_API_KEY_OLD"].encode()]
VECTORS = json.loads((FIXTURES / "retell" / "vectors.json").read_text(encoding="utf-8"))
GOOD = VECTORS[0]
NOW_MS = GOOD["now_ms"]
BODY = GOOD["body"].encode()
HEADER = GOOD["headers"]["X-Retell-Signature"]


def verify(body: bytes, header: str | None, *, now_ms: int = NOW_MS, secrets: list[bytes] | None = None,
           tolerance: int = 300) -> None:
    headers = {} if header is None else {"x-retell-signature": header}
    retell.verify(body, headers, KEYS if secrets is None else secrets, tolerance=tolerance,
                  now=lambda: now_ms / 1000)


def sdk_accepts(body: bytes, header: str, now_ms: int, keys: list[bytes]) -> bool:
    return any(symmetric["verify"](body.decode(), k.decode(), header, {"timestamp": now_ms}) for k in keys)


# --------------------------------------------------------------------------- the SDK's word


@pytest.mark.parametrize("vector", VECTORS, ids=[v["why"][:50] for v in VECTORS])
def test_vector_verdict_is_the_sdks(vector: dict[str, Any]) -> None:
    body, header = vector["body"].encode(), vector["headers"]["X-Retell-Signature"]
    assert sdk_accepts(body, header, vector["now_ms"], KEYS) is vector["valid"]
    if vector["valid"]:
        verify(body, header, now_ms=vector["now_ms"])
    else:
        with pytest.raises(SignatureError):
            verify(body, header, now_ms=vector["now_ms"])


def test_our_signature_passes_the_sdks_verifier() -> None:
    body = '{"event":"call_started","call":{"call_id":"c1","metadata":{"who":"Zoë, 日本"}}}'.encode()
    header = retell.sign(body, KEYS[0], timestamp=1_750_000_000)["x-retell-signature"]
    assert header.startswith("v=1750000000000,d=")
    assert symmetric["verify"](body.decode(), KEYS[0].decode(), header, {"timestamp": 1_750_000_000_000})
    verify(body, header, now_ms=1_750_000_000_000)


def test_sign_without_timestamp_signs_now_in_milliseconds() -> None:
    import time

    header = retell.sign(BODY, KEYS[0])["x-retell-signature"]
    retell.verify(BODY, {"x-retell-signature": header}, KEYS, tolerance=300, now=time.time)
    assert symmetric["verify"](BODY.decode(), KEYS[0].decode(), header)  # the SDK, on its wall clock


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("where", [0, len(BODY) // 2, -1])
def test_a_flipped_body_byte_is_refused(where: int) -> None:
    body = bytearray(BODY)
    body[where] ^= 0x01
    with pytest.raises(SignatureError):
        verify(bytes(body), HEADER)


def test_wrong_or_no_api_key_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, HEADER, secrets=[b"key_somebody_else"])
    with pytest.raises(SignatureError, match="no signing secret"):
        verify(BODY, HEADER, secrets=[])


def test_tolerance_is_configurable_in_seconds_and_compared_in_milliseconds() -> None:
    verify(BODY, HEADER, now_ms=NOW_MS + 600_000, tolerance=600)
    with pytest.raises(SignatureError):
        verify(BODY, HEADER, now_ms=NOW_MS + 60_001, tolerance=60)


@pytest.mark.parametrize("header", [
    None, "", "   ",
    HEADER.replace("v=", "V="), HEADER.replace(",d=", ", d="), HEADER.replace(",", ";"),
    HEADER + ",x=1", "x=1," + HEADER, HEADER[:-1], HEADER + "0", HEADER.replace("d=", "d=sha256="),
    "v=,d=" + HEADER.split("d=")[1], "v=-1" + HEADER[HEADER.index(","):],
    "v=" + "١٧١٤٦٠٨٤٩١٧٣٦" + HEADER[HEADER.index(","):],  # Arabic-Indic digits: \\d matches them, 0-9 does not
    "v=" + "9" * 17 + HEADER[HEADER.index(","):],
    HEADER.replace("v=", "v=0x"), HEADER + "\x00", "d=" + HEADER.split("d=")[1] + ",v=" + str(NOW_MS),
], ids=lambda h: repr(h)[:40])
def test_malformed_signature_header_is_a_signature_error(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header)


def test_surrounding_whitespace_is_http_padding() -> None:
    verify(BODY, f"  {HEADER} ")


def test_a_huge_timestamp_is_a_401_where_the_sdk_raises() -> None:
    # int() of more than 4300 digits raises ValueError: the SDK would turn a forged header into a 500.
    header = "v=" + "1" * 5000 + HEADER[HEADER.index(","):]
    with pytest.raises(ValueError):
        symmetric["verify"](BODY.decode(), KEYS[0].decode(), header, {"timestamp": NOW_MS})
    with pytest.raises(SignatureError):
        verify(BODY, header)


@settings(max_examples=400, deadline=None)
@given(header=st.one_of(st.text(max_size=120), st.builds(lambda a, b: f"v={a},d={b}", st.text(max_size=20),
                                                          st.text(max_size=70))))
def test_any_header_text_is_accepted_or_a_signature_error(header: str) -> None:
    try:
        verify(BODY, header)
    except SignatureError:
        pass


# --------------------------------------------------------------------------- mapping


def event(payload: dict[str, Any]) -> Event:
    body = json.dumps(payload).encode()
    return retell.normalize(json.loads(body), Delivery(id="0" * 32, source="rt", provider="retell",
                                                        received_at="2026-01-01T00:00:00.000000Z", body=body))


def ended(**call: Any) -> dict[str, Any]:
    payload = copy.deepcopy(retell.PROVIDER.samples()["call_ended"])
    payload["call"].update(call)
    return payload


@pytest.mark.parametrize(("status", "reason", "expected"), [
    ("ended", "user_hangup", "call.completed"),
    ("ended", "agent_hangup", "call.completed"),
    ("ended", "voicemail_reached", "call.completed"),  # connected, to a machine
    ("ended", "max_duration_reached", "call.completed"),
    ("ended", "call_transfer", "call.completed"),
    ("not_connected", "dial_no_answer", "call.failed"),
    ("not_connected", None, "call.failed"),
    ("error", "error_llm_websocket_open", "call.failed"),
    ("ended", "dial_busy", "call.failed"),
    ("ended", "dial_failed", "call.failed"),
    ("ended", "invalid_destination", "call.failed"),
    ("ended", "marked_as_spam", "call.failed"),
    ("ended", "registered_call_timeout", "call.failed"),
    ("ended", "credit_exhausted", "call.failed"),
])
def test_call_ended_is_failed_when_the_call_never_connected(status: str, reason: str | None, expected: str) -> None:
    e = event(ended(call_status=status, disconnection_reason=reason))
    assert e.type == expected
    assert e.call.outcome == reason


@pytest.mark.parametrize(("direction", "phone"), [("inbound", "+12137771234"), ("outbound", "+14155559876"),
                                                  (None, None), ("sideways", None)])
def test_phone_is_the_remote_party(direction: str | None, phone: str | None) -> None:
    assert event(ended(direction=direction)).call.phone == phone  # from +12137771234, to +14155559876


def test_call_ended_carries_duration_in_seconds_recording_and_transcript() -> None:
    e = event(ended(duration_ms=15791))
    assert e.call.duration_seconds == 15.791
    assert e.call.recording_url and e.call.transcript
    assert e.occurred_at == e.call.ended_at == "2024-05-02T00:08:11.736000Z"


def test_call_analyzed_is_transcript_ready_with_summary_and_extraction() -> None:
    e = event(retell.PROVIDER.samples()["call_analyzed"])
    assert e.type == "transcript.ready"
    assert e.call.summary.startswith("The patient confirmed")
    assert e.call.extraction == {"appointment_confirmed": True, "appointment_time": "Thursday 15:00"}


def test_once_per_call_events_are_identified_by_event_and_call_id() -> None:
    one = event(ended())
    again = ended()
    again["call"]["transcript"] = "re-rendered on a retry"
    assert event(again).id == one.id == "rt:call_ended:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"


@pytest.mark.parametrize("name", ["transcript_updated", "transfer_started", "transfer_ended"])
def test_events_that_repeat_within_a_call_are_identified_by_their_body(name: str) -> None:
    first = retell.PROVIDER.samples()[name]
    second = copy.deepcopy(first)
    second["call"]["transcript"] += "User: And one more thing.\n"
    assert event(first).id != event(second).id
    assert event(first).id == event(copy.deepcopy(first)).id


def test_unknown_and_chat_events_flow_on() -> None:
    e = event({"event": "chat_ended", "chat": {"chat_id": "ch_1"}})
    assert (e.type, e.provider_type, e.call.id) == ("retell.chat_ended", "chat_ended", None)
