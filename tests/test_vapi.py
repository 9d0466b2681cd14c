"""Vapi: the three authentication modes chosen per source, and one completion per call.

Vapi publishes no signer SDK; tests/fixtures/vapi/vectors.json follows
docs.vapi.ai/server-url/server-authentication and was signed with stdlib hmac,
not with hooklane's code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FIXTURES, request_of
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklane.shared.config import ConfigError
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import vapi
from hooklane.shared.providers.base import SignatureError

VECTORS = json.loads((FIXTURES / "vapi" / "vectors.json").read_text(encoding="utf-8"))
SOURCE = '[[sources]]\nname = "vapi"\nprovider = "vapi"\nsecrets = ["env:VAPI_SECRET"]\n'


def verify(vector: dict[str, Any], body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
    vapi.verify(vector["body"].encode() if body is None else body,
                {k.lower(): v for k, v in (vector["headers"] if headers is None else headers).items()},
                [vector["secret"].encode()], tolerance=300, now=lambda: float(vector.get("now", 0)),
                request=request_of("https://hooks.example.com/webhooks/vapi"), options=vapi.options(vector["options"]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["why"][:60] for v in VECTORS])
def test_authentication_vector(vector: dict[str, Any]) -> None:
    if vector["valid"]:
        verify(vector)
    else:
        with pytest.raises(SignatureError):
            verify(vector)


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["valid"]], ids=lambda v: v["why"][:50])
def test_sign_round_trips_in_every_mode(vector: dict[str, Any]) -> None:
    options = vapi.options(vector["options"])
    body = b'{"message":{"type":"hang"}}'
    headers = vapi.sign(body, vector["secret"].encode(), timestamp=int(vector.get("now", 0)), options=options)
    verify(vector, body, headers)


@pytest.mark.parametrize("mode", ["bearer", "secret", "hmac"])
def test_any_secret_of_a_rotation_list_authenticates(mode: str) -> None:
    vector = next(v for v in VECTORS if v["valid"] and v["options"] == {"auth": mode})
    vapi.verify(vector["body"].encode(), {k.lower(): v for k, v in vector["headers"].items()},
                [b"next", vector["secret"].encode()], tolerance=300, now=lambda: float(vector.get("now", 0)),
                request=request_of("https://h/x"), options=vapi.options(vector["options"]))


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["bearer", "secret", "hmac"]), value=st.text(max_size=140), ts=st.text(max_size=20))
def test_any_header_text_is_accepted_or_a_signature_error(mode: str, value: str, ts: str) -> None:
    vector = next(v for v in VECTORS if v["options"] == {"auth": mode})
    header = {"bearer": "authorization", "secret": "x-vapi-secret", "hmac": "x-signature"}[mode]
    try:
        verify(vector, headers={header: value, "x-timestamp": ts})
    except SignatureError:
        pass


@pytest.mark.parametrize(("keys", "message"), [
    ('auth = "oauth"', r"auth: must be one of bearer, secret, hmac"),
    ('auth = "bearer"\nsignature_header = "x-signature"', r"signature_header: only used with auth = \"hmac\""),
    ('auth = "hmac"\nheader = "x"', r"header: only used with auth"),
    ('auth = "hmac"\ntemplate = "{timestamp}.{body}.{nonce}"', r"template: unknown placeholder \{nonce\}"),
    ('auth = "hmac"\ninclude_timestamp = false\ntolerance_seconds = 60', r"tolerance_seconds: needs timestamp_header"),
    ('auth = "secret"\ntolerance_seconds = 60', r"tolerance_seconds: auth = 'secret' sends no timestamp"),
    ('auth = "hmac"\nalgorithm = "md5"', r"algorithm: must be one of sha1, sha256, sha512"),
    ('auth = "hmac"\ninclude_timestamp = false\ntemplate = "{timestamp}.{body}"', r"template: uses \{timestamp\}"),
])
def test_unusable_auth_settings_fail_config_naming_the_key(make_config: Any, keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"sources\[0\]\.{message}"):
        make_config(SOURCE + keys + "\n", env={"VAPI_SECRET": "s"})


def test_default_auth_is_bearer(make_config: Any) -> None:
    assert make_config(SOURCE, env={"VAPI_SECRET": "s"}).sources["vapi"].options == vapi.Options()


# --------------------------------------------------------------------------- one completion per call


def event(payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    d = Delivery(id="0" * 32, source="vapi", provider="vapi", received_at="2026-01-01T00:00:00.000000Z", body=body)
    return vapi.normalize(json.loads(body), d)


def test_a_call_completes_once_although_status_ended_and_the_report_both_arrive() -> None:
    ended = json.loads((FIXTURES / "vapi" / "status-update--ended.json").read_text())
    report = json.loads((FIXTURES / "vapi" / "end-of-call-report.json").read_text())
    assert ended["message"]["call"]["id"] == report["message"]["call"]["id"]
    types = [event(ended).type, event(report).type]
    assert types == ["call.completed", "transcript.ready"]


@pytest.mark.parametrize(("reason", "started", "expected"), [
    ("customer-ended-call", True, "call.completed"),
    ("assistant-ended-call", True, "call.completed"),
    ("silence-timed-out", True, "call.completed"),
    ("customer-did-not-answer", False, "call.failed"),
    ("customer-busy", False, "call.failed"),
    ("twilio-failed-to-connect-call", False, "call.failed"),
    ("sip-outbound-call-failed-to-connect", False, "call.failed"),
    ("call.start.error-get-assistant", False, "call.failed"),
    ("assistant-request-returned-error", False, "call.failed"),
    ("call.ringing.hook-executed-say", False, "call.failed"),
    ("manually-canceled", False, "call.failed"),
    ("manually-canceled", True, "call.completed"),
    (None, True, "call.completed"),
])
def test_ended_reason_decides_completed_or_failed(reason: str | None, started: bool, expected: str) -> None:
    payload = json.loads((FIXTURES / "vapi" / "status-update--ended.json").read_text())
    payload["message"]["endedReason"] = reason
    if not started:
        payload["message"]["call"].pop("startedAt", None)
    assert event(payload).type == expected


def test_repeating_messages_of_one_call_get_distinct_ids_and_a_redelivery_the_same() -> None:
    payload = json.loads((FIXTURES / "vapi" / "transcript.json").read_text())
    first = event(payload).id
    assert event(payload).id == first
    payload["message"]["timestamp"] += 1500
    assert event(payload).id != first
