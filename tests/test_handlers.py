"""Handlers against real local peers: an HTTP server on 127.0.0.1 and Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from http_sink import HttpSink

from hooklane.shared.config import HandlerConfig, Secret
from hooklane.workers.errors import PermanentError, TransientError
from hooklane.workers.handlers.http import HttpHandler, parse_retry_after
from hooklane.workers.handlers.log import LogHandler
from hooklane.workers.handlers.suppression import SuppressionHandler, is_suppressed, normalize_phone

EVENT: dict[str, Any] = {
    "id": "vr:call.completed:call_1",
    "source": "vr",
    "type": "call.completed",
    "call": {"phone": "+1 (555) 123-4567", "outcome": "DNC"},
    "raw": {"secret_payload": "x" * 50},
}


def http(url: str, **kw: Any) -> HttpHandler:
    return HttpHandler(HandlerConfig(name="crm", type="http", url=url, **kw))


def hook(sink: HttpSink) -> str:
    return f"{sink.url}/hook"


def test_http_posts_the_event_as_json_with_the_event_id_as_idempotency_key(http_sink):
    http(hook(http_sink))(EVENT)
    [req] = http_sink.requests
    headers, body = req.headers, req.body
    assert json.loads(body) == EVENT
    assert headers["idempotency-key"] == EVENT["id"]
    assert headers["content-type"] == "application/json"
    assert "webhook-signature" not in headers


def test_http_signs_with_standard_webhooks_headers_a_receiver_can_verify(http_sink):
    key = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    http(hook(http_sink), secret=Secret(f"whsec_{key}".encode(), "env:CRM_SECRET"))(EVENT)
    [req] = http_sink.requests
    headers, body = req.headers, req.body
    # Verified the way the Standard Webhooks spec says a receiver does, independently of our signer.
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(base64.b64decode(key), signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert headers["webhook-id"] == EVENT["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425, 429])
def test_http_treats_server_errors_and_throttling_as_transient(http_sink, status):
    http_sink.script((status, {}, 0.0))
    with pytest.raises(TransientError) as info:
        http(hook(http_sink))(EVENT)
    assert info.value.status == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_http_treats_other_client_errors_as_permanent(http_sink, status):
    http_sink.script((status, {}, 0.0))
    with pytest.raises(PermanentError) as info:
        http(hook(http_sink))(EVENT)
    assert info.value.status == status


def test_http_redirects_are_not_followed_and_count_as_permanent(http_sink):
    http_sink.script((301, {"Location": "http://127.0.0.1:9/elsewhere"}, 0.0))
    with pytest.raises(PermanentError):
        http(hook(http_sink))(EVENT)


def test_http_honours_retry_after_on_429(http_sink):
    http_sink.script((429, {"Retry-After": "120"}, 0.0))
    with pytest.raises(TransientError) as info:
        http(hook(http_sink))(EVENT)
    assert info.value.retry_after == 120


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == pytest.approx(60)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_http_read_timeout_is_transient(http_sink):
    http_sink.script((200, {}, 1.0))
    with pytest.raises(TransientError, match="timeout"):
        http(hook(http_sink), timeout_seconds=0.2)(EVENT)


def test_http_connection_refused_is_transient_and_the_message_hides_credentials():
    with pytest.raises(TransientError) as info:
        http("http://user:hunter22@127.0.0.1:9/hook?api_key=sk_live_42")(EVENT)
    assert "hunter22" not in str(info.value) and "sk_live_42" not in str(info.value)
    assert "127.0.0.1:9/hook" in str(info.value)


def test_suppression_adds_the_phone_when_the_outcome_is_listed(fake_redis):
    handler = SuppressionHandler(
        HandlerConfig(name="dnc", type="suppression", outcomes=("DNC", "WRONG_NUMBER")), fake_redis, prefix="hl"
    )
    handler(EVENT)
    handler({**EVENT, "id": "other", "call": {"phone": "+15550000000", "outcome": "INTERESTED"}})
    assert fake_redis.smembers("hl:suppression") == {b"+15551234567"}
    record = is_suppressed(fake_redis, "hl", "suppression", "+1 555 123 4567")
    assert record["outcome"] == "DNC" and record["event_id"] == EVENT["id"]
    assert is_suppressed(fake_redis, "hl", "suppression", "+15550000000") is None


def test_suppression_ignores_events_without_a_phone_or_outcome(fake_redis):
    handler = SuppressionHandler(HandlerConfig(name="dnc", type="suppression", outcomes=("DNC",)), fake_redis,
                                 prefix="hl")
    handler({**EVENT, "call": {"phone": None, "outcome": "DNC"}})
    handler({**EVENT, "call": {"phone": "+1555", "outcome": None}})
    assert fake_redis.scard("hl:suppression") == 0


def test_phone_numbers_are_compared_in_one_form():
    assert normalize_phone("+1 (555) 123-4567") == normalize_phone("+15551234567") == "+15551234567"
    assert normalize_phone("0612345678") == "0612345678"


def test_log_handler_writes_one_line_without_the_raw_payload(capfd):
    from hooklane.shared import logs

    logs.configure("json")
    LogHandler(HandlerConfig(name="log", type="log"))(EVENT)
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x.get("event") == "event.logged"]
    assert line["canonical_event"]["id"] == EVENT["id"]
    assert "raw" not in line["canonical_event"]
