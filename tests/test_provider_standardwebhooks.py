"""Standard Webhooks: the verifier against the standardwebhooks and svix SDKs, their quirks, and pass-through.

tests/fixtures/standardwebhooks/vectors.json was signed with standardwebhooks
1.1.0's ``Webhook.sign``; each vector also records what svix 2.9.1's verifier
says of it ("valid", "invalid", or "raises" an exception that is not its
WebhookVerificationError), so every divergence from the SDK is on record and
checked against the SDK itself.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import standardwebhooks.webhooks
import svix.webhooks
from conftest import FIXTURES, TEST_ENV
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklane.operators import sending
from hooklane.shared.config import ConfigError
from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Event
from hooklane.shared.providers import standardwebhooks as sw
from hooklane.shared.providers.base import SignatureError, sha256_hex

SECRETS = [TEST_ENV["SW_SECRET"].encode(), TEST_ENV["SW_SECRET_OLD"].encode()]
VECTORS = json.loads((FIXTURES / "standardwebhooks" / "vectors.json").read_text(encoding="utf-8"))
GOOD = VECTORS[0]
BODY = GOOD["body"].encode()
TS = GOOD["timestamp"]


def verify(body: bytes, headers: dict[str, str], *, now: float = TS, secrets: list[bytes] | None = None) -> None:
    sw.verify(body, headers, SECRETS if secrets is None else secrets, tolerance=300, now=lambda: now)


def good_headers(**over: str) -> dict[str, str]:
    return {**GOOD["headers"], **over}


@pytest.fixture
def sdk_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Freeze the SDK's wall clock (it has no injectable one); the test sets now[0]."""
    now = [float(TS)]

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(now[0], tz)

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Frozen)
    yield now


def svix_verdict(body: bytes, headers: dict[str, str]) -> str:
    verdicts = []
    for secret in SECRETS:
        try:
            svix.webhooks.Webhook(secret.decode()).verify(body, headers)
            verdicts.append("valid")
        except svix.webhooks.WebhookVerificationError:
            verdicts.append("invalid")
        except Exception:  # what the SDK lets escape: a 500 for a receiver that only catches its error type
            verdicts.append("raises")
    return "valid" if "valid" in verdicts else verdicts[0]


# --------------------------------------------------------------------------- vectors, and the SDK's verdicts


@pytest.mark.parametrize("vector", VECTORS, ids=[v["why"][:50] for v in VECTORS])
def test_vector_verdict_and_the_sdks(vector: dict[str, Any], sdk_clock: list[float]) -> None:
    body, headers = vector["body"].encode(), vector["headers"]
    sdk_clock[0] = vector["now"]
    assert svix_verdict(body, headers) == vector["sdk"]
    if vector["valid"]:
        verify(body, {k.lower(): v for k, v in headers.items()}, now=vector["now"])
    else:
        with pytest.raises(SignatureError):
            verify(body, {k.lower(): v for k, v in headers.items()}, now=vector["now"])


def test_our_signature_passes_both_sdks(sdk_clock: list[float]) -> None:
    body = '{"type":"call.completed","data":{"note":"Zoë, 日本"}}'.encode()
    headers = sw.sign(body, SECRETS[0], timestamp=TS, delivery_id="msg_ours_1")
    assert headers["webhook-id"] == "msg_ours_1"
    standardwebhooks.webhooks.Webhook(SECRETS[0].decode()).verify(body, headers)
    svix.webhooks.Webhook(SECRETS[0].decode()).verify(body, headers)
    verify(body, headers)


def test_the_http_handlers_signature_verifies_here() -> None:
    # hooklane's own http handler signs with Standard Webhooks: one hooklane can feed another.
    from hooklane.workers.handlers.http import sign_standard_webhook

    headers = sign_standard_webhook(SECRETS[1], "src:call.completed:c1", TS, BODY)
    verify(BODY, headers)


def test_send_signs_the_delivery_id_it_sends() -> None:
    wire = sending.build_delivery("standardwebhooks", None, "call.completed", secret=SECRETS[0],
                                  delivery_id="msg_retry_keeps_me", timestamp=TS)
    assert wire.headers["webhook-id"] == "msg_retry_keeps_me"
    verify(wire.body, {k.lower(): v for k, v in wire.headers.items()})


# --------------------------------------------------------------------------- malformed: 401, never an exception


@pytest.mark.parametrize("signature", [
    "", "v1", "v1,", ",abc", "v1,abc,def", "v1 abc", "garbage",
    "v1,abc",  # bad padding: binascii.Error in the SDK
    "v1," + "A" * 43,  # unpadded
    "v1," + base64.b64encode(b"\x00" * 31).decode(),  # 31 bytes
    "v1," + base64.b64encode(b"\x00" * 64).decode(),  # a v1a-sized value under v1
    "v1,é" + "A" * 43,
    "v2," + GOOD["headers"]["webhook-signature"][3:],  # right bytes, unknown version
], ids=lambda s: repr(s)[:40])
def test_malformed_signature_is_a_signature_error(signature: str) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, good_headers(**{"webhook-signature": signature}))


@pytest.mark.parametrize("value", ["", "msg_é", "msg\x01", "msg_😀"])
def test_a_missing_or_non_ascii_id_is_refused(value: str) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, good_headers(**{"webhook-id": value}))


@pytest.mark.parametrize("timestamp", ["", f"{TS}.9", f"{TS}.0", "1e9", f"-{TS}", "١٧٤٦٥٢٣٣٨٠", str(TS * 1000)])
def test_a_timestamp_that_is_not_integer_seconds_is_refused(timestamp: str) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, good_headers(**{"webhook-timestamp": timestamp}))


def test_extra_spaces_between_entries_are_separators() -> None:
    sig = GOOD["headers"]["webhook-signature"]
    verify(BODY, good_headers(**{"webhook-signature": f"  v1a,{'A' * 86}==   {sig}  "}))


def test_a_non_utf8_body_is_verified_over_its_bytes() -> None:
    body = b'{"type":"x","data":"\xff\xfe"}'
    verify(body, sw.sign(body, SECRETS[0], timestamp=TS, delivery_id="msg_bin"))


def test_webhook_headers_win_over_svix_headers() -> None:
    forged = {**good_headers(), "svix-id": "msg_other", "svix-timestamp": str(TS), "svix-signature": "v1,xx"}
    verify(BODY, forged)
    with pytest.raises(SignatureError):
        verify(BODY, {**forged, "webhook-signature": "v1," + base64.b64encode(b"\x00" * 32).decode()})


@settings(max_examples=500, deadline=None)
@given(signature=st.one_of(
    st.text(max_size=120),
    st.lists(st.tuples(st.sampled_from(["v1", "v1a", "v2", "", "V1"]),
                       st.one_of(st.text(max_size=50), st.binary(max_size=40).map(
                           lambda b: base64.b64encode(b).decode()))), max_size=4).map(
        lambda es: " ".join(f"{v},{s}" for v, s in es))),
    msg_id=st.text(max_size=30), timestamp=st.one_of(st.just(str(TS)), st.text(max_size=14)))
def test_any_header_text_is_accepted_or_a_signature_error(signature: str, msg_id: str, timestamp: str) -> None:
    try:
        verify(BODY, {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature})
    except SignatureError:
        pass


# --------------------------------------------------------------------------- secrets


def test_the_sdks_lenient_secret_decoding_is_refused_at_config_load(make_config: Any) -> None:
    lenient = TEST_ENV["SW_SECRET"][:20] + "$" + TEST_ENV["SW_SECRET"][20:]
    # The SDK drops the '$' and verifies with the key it was meant to be: a typo that works by accident.
    assert standardwebhooks.webhooks.Webhook(lenient)._whsecret == sw.signing_key(SECRETS[0])
    text = '[[sources]]\nname = "sw"\nprovider = "standardwebhooks"\nsecrets = ["env:SW_SECRET", "env:LENIENT"]\n'
    with pytest.raises(ConfigError, match=r"^sources\[0\]\.secrets\[1\]: .*base64") as refused:
        make_config(text, env={"LENIENT": lenient})
    assert lenient not in str(refused.value)


@pytest.mark.parametrize("value", ["whsec_", "whsec_!!!!", "whsec_abcde", "whsec_ÄÖÜ", "whsec_YWJj ZGVm"])
def test_secrets_that_are_not_whsec_base64_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        sw.check_secret(value.encode())


@pytest.mark.parametrize("value", [TEST_ENV["SW_SECRET"], TEST_ENV["SW_SECRET_OLD"].rstrip("="),
                                   TEST_ENV["SW_SECRET"].removeprefix("whsec_")])
def test_unpadded_and_unprefixed_secrets_give_the_sdks_key(value: str) -> None:
    assert sw.signing_key(value.encode()) == standardwebhooks.webhooks.Webhook(value)._whsecret


def test_no_configured_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="no signing secret"):
        verify(BODY, good_headers(), secrets=[])


# --------------------------------------------------------------------------- pass-through


def event(payload: Any, delivery_id: str | None = None, headers: dict[str, str] | None = None) -> Event:
    body = json.dumps(payload).encode()
    return sw.normalize(json.loads(body), Delivery(id="0" * 32, source="sw", provider="standardwebhooks",
                                                    received_at="2026-01-01T00:00:00.000000Z", body=body,
                                                    headers=headers or {}, delivery_id=delivery_id))


@pytest.mark.parametrize("name", ["call.completed", "recording.ready", "campaign.paused"])
def test_canonical_types_pass_as_themselves(name: str) -> None:
    assert event({"type": name, "data": {}}).type == name


@pytest.mark.parametrize(("payload", "expected"), [
    ({"type": "invoice.paid"}, "standardwebhooks.invoice.paid"),
    ({"type": "Call.Completed"}, "standardwebhooks.Call.Completed"),
    ({"data": {}}, "standardwebhooks.message"),
    ({"type": ""}, "standardwebhooks.message"),
    ({"type": 7}, "standardwebhooks.message"),
    ({"type": ["call.completed"]}, "standardwebhooks.message"),
])
def test_other_or_missing_types_flow_on(payload: dict[str, Any], expected: str) -> None:
    assert event(payload).type == expected


@pytest.mark.parametrize("data", [None, [], "text", 3, {"call_id": {"nested": 1}, "phone": ["x"], "status": {}}])
def test_any_data_passes_through_without_call_fields(data: Any) -> None:
    e = event({"type": "call.updated", "data": data})
    assert e.raw["data"] == data
    assert (e.call.id, e.call.phone, e.call.status) == (None, None, None)


def test_identity_is_the_message_id_so_two_messages_with_the_same_bytes_are_two_events() -> None:
    payload = sw.PROVIDER.samples()["call.completed"]
    first = event(payload, delivery_id="msg_1", headers={"webhook-id": "msg_1"})
    retry = event(copy.deepcopy(payload), delivery_id="msg_1", headers={"webhook-id": "msg_1"})
    assert first.id == retry.id == "sw:msg_1" and first.delivery_id == "msg_1"
    assert event(payload, delivery_id="msg_2", headers={"webhook-id": "msg_2"}).id == "sw:msg_2"


def test_a_svix_spelled_message_is_identified_by_its_svix_id() -> None:
    assert event({"type": "x"}, headers={"svix-id": "msg_s"}).id == "sw:msg_s"
    assert event({"type": "x"}, headers={"webhook-id": "msg_w", "svix-id": "msg_s"}).id == "sw:msg_w"


def test_without_a_message_id_the_identity_is_the_body() -> None:
    payload = sw.PROVIDER.samples()["call.completed"]
    assert event(payload).id == event(copy.deepcopy(payload)).id == f"sw:{sha256_hex(json.dumps(payload).encode())}"


def test_the_id_a_request_is_verified_with_is_the_one_it_is_identified_by() -> None:
    # svix-* signing a message while an unsigned webhook-id rides along: verified with svix-id, the event would
    # be identified by an id anyone can change, and a replay within the tolerance would fan out again.
    svix = {k.replace("webhook-", "svix-"): v for k, v in good_headers().items()}
    verify(BODY, svix)
    with pytest.raises(SignatureError, match="webhook-signature"):
        verify(BODY, {**svix, "webhook-id": "msg_chosen_by_anyone"})
    assert sw.message_id(svix) == svix["svix-id"]


def test_event_time_is_the_payload_timestamp() -> None:
    assert event(sw.PROVIDER.samples()["call.completed"]).occurred_at == "2025-05-06T09:23:00.000000Z"
    assert event({"type": "x"}).occurred_at == "2026-01-01T00:00:00.000000Z"
