"""Twilio: X-Twilio-Signature over URL + sorted form params, against Twilio's own RequestValidator.

tests/fixtures/twilio/vectors.json was signed by twilio 9.13.0's RequestValidator
(`compute_signature`), not by hooklane's `sign()`; the tests below also run the
SDK live both ways: what hooklane signs the SDK validates, what the SDK signs
hooklane verifies.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from conftest import FIXTURES, request_of
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from hooklane.shared.config import ConfigError, describe
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import twilio
from hooklane.shared.providers.base import SignatureError

TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://hooks.example.com/webhooks/twilio"
FORM = (FIXTURES / "twilio" / "completed.form").read_bytes()
VECTORS = json.loads((FIXTURES / "twilio" / "vectors.json").read_text(encoding="utf-8"))


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify(body: bytes, headers: dict[str, str], url: str = PUBLIC, method: str = "POST",
           secrets: list[bytes] | None = None, public_url: str | None = None) -> None:
    twilio.verify(body, lower(headers), [TOKEN.encode()] if secrets is None else secrets,
                  request=request_of(url, method), options=twilio.Options(public_url=public_url))


def sdk_signature(url: str, params: dict[str, str] | None = None, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params or {})


@pytest.mark.parametrize("vector", VECTORS, ids=[v["why"][:60] for v in VECTORS])
def test_signature_vector_signed_by_twilios_request_validator(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    if vector["valid"]:
        verify(body, vector["headers"], vector["url"], vector["method"])
    else:
        with pytest.raises(SignatureError):
            verify(body, vector["headers"], vector["url"], vector["method"])


def test_proxy_needs_public_url_then_the_internal_url_verifies() -> None:
    headers = {"X-Twilio-Signature": sdk_signature(PUBLIC, dict(parse_qsl(FORM.decode())))}
    internal = "http://10.0.0.7:8000/webhooks/twilio"
    with pytest.raises(SignatureError):
        verify(FORM, headers, internal)
    verify(FORM, headers, internal, public_url=PUBLIC)


def test_public_url_keeps_the_query_as_received() -> None:
    url = PUBLIC + "?token=abc&x=%20y"
    headers = {"X-Twilio-Signature": sdk_signature(url, dict(parse_qsl(FORM.decode())))}
    verify(FORM, headers, "http://10.0.0.7:8000/webhooks/twilio?token=abc&x=%20y", public_url=PUBLIC)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_what_hooklane_signs_twilios_validator_accepts(method: str) -> None:
    url = PUBLIC + ("?" + FORM.decode() if method == "GET" else "")
    body = b"" if method == "GET" else FORM
    headers = twilio.sign(body, TOKEN.encode(), request=request_of(url, method))
    params = {} if method == "GET" else dict(parse_qsl(FORM.decode(), keep_blank_values=True))
    assert RequestValidator(TOKEN).validate(url, params, headers["X-Twilio-Signature"])


def test_json_body_signed_by_hooklane_passes_twilios_body_hash_check() -> None:
    body = b'{"CallSid":"CA1","CallStatus":"completed"}'
    url = PUBLIC + "?bodySHA256=" + hashlib.sha256(body).hexdigest()
    headers = twilio.sign(body, TOKEN.encode(), request=request_of(url))
    assert RequestValidator(TOKEN).validate(url, body.decode(), headers["X-Twilio-Signature"])
    verify(body, headers, url)


def test_json_body_without_body_hash_in_the_url_is_refused() -> None:
    body = b'{"CallSid":"CA1"}'
    with pytest.raises(SignatureError, match="bodySHA256"):
        verify(body, {"X-Twilio-Signature": sdk_signature(PUBLIC)}, PUBLIC)


form_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(params=st.dictionaries(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij_", min_size=1, max_size=10),
                              form_values, min_size=1, max_size=8))
def test_any_form_twilio_signs_verifies_and_any_change_is_refused(params: dict[str, str]) -> None:
    body = urlencode(params).encode()
    headers = {"X-Twilio-Signature": sdk_signature(PUBLIC, params)}
    verify(body, headers)
    changed = dict(params)
    key = next(iter(changed))
    changed[key] += "x"
    with pytest.raises(SignatureError):
        verify(urlencode(changed).encode(), headers)


def test_any_token_of_a_rotation_list_verifies() -> None:
    headers = {"X-Twilio-Signature": sdk_signature(PUBLIC, dict(parse_qsl(FORM.decode())))}
    verify(FORM, headers, secrets=[b"new-token", TOKEN.encode()])
    with pytest.raises(SignatureError):
        verify(FORM, headers, secrets=[b"new-token"])
    with pytest.raises(SignatureError):
        verify(FORM, headers, secrets=[])


@pytest.mark.parametrize("value", [
    "", "   ", "not base64!", "AAAA", "=" * 28, "é" * 28, "YWJj\nZGVm", sdk_signature(PUBLIC) + "x",
    sdk_signature(PUBLIC)[:-1],
])
def test_malformed_signature_header_is_a_signature_error(value: str) -> None:
    with pytest.raises(SignatureError):
        verify(FORM, {"X-Twilio-Signature": value})


def test_missing_signature_header_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify(FORM, {})


@pytest.mark.parametrize("settings_value", ["algorithm=HMAC_MD5", "key=k,algorithm=RSA"])
def test_unknown_signature_algorithm_is_refused(settings_value: str) -> None:
    headers = {"X-Twilio-Signature": sdk_signature(PUBLIC, dict(parse_qsl(FORM.decode()))),
               "X-Twilio-Webhooks-Signature-Settings": settings_value}
    with pytest.raises(SignatureError, match="algorithm"):
        verify(FORM, headers)


@pytest.mark.parametrize("body", [b"\xff\xfe=1", b"a=%ff", b"a=%C3%28"])
def test_form_body_that_is_not_utf8_is_a_signature_error(body: bytes) -> None:
    with pytest.raises(SignatureError):
        verify(body, {"X-Twilio-Signature": sdk_signature(PUBLIC)})


@settings(max_examples=300, deadline=None)
@given(signature=st.text(max_size=80), settings_value=st.text(max_size=60), body=st.binary(max_size=120),
       query=st.text(max_size=60), method=st.sampled_from(["POST", "GET"]))
def test_any_request_is_accepted_or_a_signature_error(signature: str, settings_value: str, body: bytes, query: str,
                                                      method: str) -> None:
    headers = {"X-Twilio-Signature": signature, "X-Twilio-Webhooks-Signature-Settings": settings_value}
    try:
        verify(body, headers, PUBLIC + "?" + query, method)
    except SignatureError:
        pass


@settings(max_examples=100, deadline=None)
@given(port=st.text(max_size=8), host=st.text(alphabet="abc.-:[]@", max_size=20))
def test_odd_request_urls_are_a_signature_error_never_a_crash(port: str, host: str) -> None:
    try:
        verify(FORM, {"X-Twilio-Signature": sdk_signature(PUBLIC)}, f"https://{host}:{port}/webhooks/twilio")
    except SignatureError:
        pass


# --------------------------------------------------------------------------- wire format and config


@pytest.mark.parametrize(("body", "method", "reason"), [
    (FORM, "POST", None),
    (b"", "GET", None),
    (b'{"CallSid":"CA1"}', "POST", None),
    (b"", "POST", "empty body"),
    (b"\x00\x01binary", "POST", "body must be application/x-www-form-urlencoded or a JSON object"),
    (b"just text", "POST", "body must be application/x-www-form-urlencoded or a JSON object"),
])
def test_ingest_body_check_takes_forms_json_and_gets(body: bytes, method: str, reason: str | None) -> None:
    assert twilio.check_body(body, method) == reason


def test_parse_reads_the_form_a_get_query_and_json() -> None:
    def d(body: bytes, method: str = "POST", query: dict[str, str] | None = None) -> Delivery:
        return Delivery(id="0" * 32, source="tw", provider="twilio", received_at="2026-01-01T00:00:00.000000Z",
                        body=body, method=method, query=query or {})

    assert twilio.parse(d(FORM))["CallStatus"] == "completed"
    assert twilio.parse(d(b"", "GET", {"CallSid": "CA1", "CallStatus": "ringing"}))["CallStatus"] == "ringing"
    assert twilio.parse(d(b'{"CallStatus":"busy"}'))["CallStatus"] == "busy"
    with pytest.raises(ValueError):
        twilio.parse(d(b'{"x": NaN}'))


@pytest.mark.parametrize(("value", "message"), [
    ("hooks.example.com/webhooks/tw", "absolute http"),
    ("https://hooks.example.com/webhooks/tw?token=x", "without a query"),
    (42, "as a string"),
])
def test_bad_public_url_fails_config_naming_the_key(make_config: Any, value: Any, message: str) -> None:
    text = f"""
[[sources]]
name = "tw"
provider = "twilio"
secrets = ["env:TW_TOKEN"]
public_url = {json.dumps(value)}
"""
    with pytest.raises(ConfigError, match=rf"sources\[0\]\.public_url: .*{message}"):
        make_config(text, env={"TW_TOKEN": TOKEN})


def test_twilio_source_takes_public_url_and_refuses_other_providers_keys(make_config: Any) -> None:
    base = '[[sources]]\nname = "tw"\nprovider = "twilio"\nsecrets = ["env:TW_TOKEN"]\n'
    config = make_config(base + f'public_url = "{PUBLIC}"\n', env={"TW_TOKEN": TOKEN})
    assert config.sources["tw"].options == twilio.Options(public_url=PUBLIC)
    with pytest.raises(ConfigError, match=r"sources\[0\]\.signature_header: unknown key"):
        make_config(base + 'signature_header = "x"\n', env={"TW_TOKEN": TOKEN})



def test_check_config_says_which_url_twilio_signatures_are_checked_against(make_config: Any) -> None:
    base = '[[sources]]\nname = "tw"\nprovider = "twilio"\nsecrets = ["env:TW_TOKEN"]\n'
    assert "over the URL ingest sees (set public_url behind a proxy)" in describe(
        make_config(base, env={"TW_TOKEN": TOKEN}))
    assert f"over {PUBLIC} + query + form" in describe(
        make_config(base + f'public_url = "{PUBLIC}"\n', env={"TW_TOKEN": TOKEN}))


# --------------------------------------------------------------------------- identity


def twilio_event(params: dict[str, str]) -> Any:
    body = urlencode(params).encode()
    d = Delivery(id="0" * 32, source="twilio", provider="twilio", received_at="2026-01-01T00:00:00.000000Z", body=body)
    return twilio.normalize(twilio.parse(d), d)


def test_redelivered_callback_keeps_its_id_and_each_progress_event_has_its_own() -> None:
    params = twilio.PROVIDER.samples()["ringing"]
    first = twilio_event(params)
    assert twilio_event(dict(reversed(list(params.items())))).id == first.id  # same fields, another order
    assert twilio_event({**params, "SequenceNumber": "2"}).id != first.id
    assert twilio_event({**params, "CallStatus": "in-progress"}).id != first.id


def test_callback_without_call_sid_is_identified_by_its_body() -> None:
    params = {k: v for k, v in twilio.PROVIDER.samples()["completed"].items() if k != "CallSid"}
    assert twilio_event(params).id == "twilio:" + hashlib.sha256(urlencode(params).encode()).hexdigest()


@pytest.mark.parametrize(("direction", "phone", "canonical"), [
    ("inbound", "+14155550100", "inbound"),
    ("outbound-api", "+14155550199", "outbound"),
    ("outbound-dial", "+14155550199", "outbound"),
    ("trunking-originating", None, None),
])
def test_remote_party_follows_the_direction(direction: str, phone: str | None, canonical: str | None) -> None:
    call = twilio_event({**twilio.PROVIDER.samples()["completed"], "Direction": direction}).call
    assert (call.direction, call.phone) == (canonical, phone)
