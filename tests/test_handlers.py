"""Handlers against real local peers: an HTTP server on 127.0.0.1 and Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
import standardwebhooks
from http_sink import HttpSink

from hooklane.shared.config import ConfigError, HandlerConfig, Secret
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


@pytest.mark.parametrize("form", ["whsec_", "bare", "unpadded"])
def test_http_signature_verifies_with_the_standardwebhooks_library(http_sink, form: str) -> None:
    key = base64.b64encode(b"0123456789abcdef0123456789abcde").decode()  # 31 bytes: one '=' of padding
    configured = {"whsec_": f"whsec_{key}", "bare": key, "unpadded": key.rstrip("=")}[form]
    http(hook(http_sink), secret=Secret(configured.encode(), "env:CRM_SECRET"))(EVENT)
    [req] = http_sink.requests

    # The receiver's side, as a user of the reference library writes it, with the secret in its usual form.
    payload = standardwebhooks.Webhook(f"whsec_{key}").verify(req.body, dict(req.headers))

    assert payload == EVENT


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


# Event ids are what the provider sent: any Unicode, even CR/LF. The key on the wire is the
# UTF-8 percent-encoding of every byte outside printable ASCII and of "%" (workers/handlers/http.py).
ODD_IDS = [
    ("vk:call_started:日本-1", "vk:call_started:%E6%97%A5%E6%9C%AC-1"),
    ("vk:call_started:📞-7", "vk:call_started:%F0%9F%93%9E-7"),
    ("vk:call_started:a\r\nX-Injected: 1", "vk:call_started:a%0D%0AX-Injected:%201"),
    ("vr:call.completed:Zoë", "vr:call.completed:Zo%C3%AB"),
    ("vr:call.completed:50%", "vr:call.completed:50%25"),
    ("vr:call.completed:tab\there ", "vr:call.completed:tab%09here%20"),
]


@pytest.mark.parametrize(("event_id", "key"), ODD_IDS)
def test_http_delivers_any_event_id_with_a_stable_percent_encoded_idempotency_key(http_sink, event_id, key):
    handler = http(hook(http_sink))
    event = {**EVENT, "id": event_id}
    handler(event)
    handler(event)  # a retry: the same key again
    first, second = http_sink.requests
    assert first.key == second.key == key
    assert unquote(first.key) == event_id
    assert "x-injected" not in first.headers
    assert json.loads(first.body)["id"] == event_id


def test_http_ids_differing_only_by_an_escape_get_distinct_keys(http_sink):
    handler = http(hook(http_sink))
    for event_id in ("vr:x:é", "vr:x:%C3%A9"):
        handler({**EVENT, "id": event_id})
    assert len({r.key for r in http_sink.requests}) == 2


@pytest.mark.parametrize(("event_id", "key"), ODD_IDS)
def test_http_signs_the_encoded_webhook_id_a_receiver_reads(http_sink, event_id, key):
    secret = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    http(hook(http_sink), secret=Secret(f"whsec_{secret}".encode(), "env:CRM_SECRET"))({**EVENT, "id": event_id})
    [req] = http_sink.requests
    assert req.headers["webhook-id"] == key
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    expected = base64.b64encode(hmac.new(base64.b64decode(secret), signed, hashlib.sha256).digest()).decode()
    assert req.headers["webhook-signature"] == f"v1,{expected}"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "\ud800"])
def test_http_an_event_that_is_no_json_is_a_permanent_failure_and_nothing_is_sent(http_sink, value):
    # Normalize refuses these now; an event stored in an older dead letter may still hold one.
    with pytest.raises(PermanentError, match="cannot be sent"):
        http(hook(http_sink))({**EVENT, "raw": {"x": value}})
    assert http_sink.requests == []


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


def test_http_sends_credentials_in_the_url_as_basic_auth_and_not_in_the_request_line(http_sink):
    url = hook(http_sink).replace("http://", "http://crm%40acme:p%3Ass@")
    http(url)(EVENT)
    (req,) = http_sink.requests
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"crm@acme:p:ss").decode()
    assert req.path == "/hook"


@pytest.mark.parametrize("no_proxy", [None, "127.0.0.1"])
def test_http_goes_through_the_proxy_the_environment_names_unless_no_proxy_says_otherwise(
    http_sink: HttpSink, clean_proxy_env: pytest.MonkeyPatch, no_proxy: str | None,
) -> None:
    monkeypatch = clean_proxy_env
    # The sink plays the proxy: a proxied plain-HTTP request names the absolute URL in its request line.
    with HttpSink() as crm:
        monkeypatch.setenv("HTTP_PROXY", f"http://proxyuser:proxypass@127.0.0.1:{http_sink.port}")
        if no_proxy:
            monkeypatch.setenv("NO_PROXY", no_proxy)
        http(hook(crm))(EVENT)
        if no_proxy:
            assert [r.path for r in crm.requests] == ["/hook"] and not http_sink.requests
            return
        (req,) = http_sink.requests
        assert req.path == hook(crm) and not crm.requests
        assert req.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"proxyuser:proxypass").decode()


def test_http_a_socks_proxy_in_the_environment_fails_at_start_up_naming_the_handler(
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    clean_proxy_env.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match=r"handlers\.crm\.url: .*socks5 proxy"):
        http("http://crm.example.com/hook")


class _KeepAliveServer(ThreadingHTTPServer):
    """HTTP/1.1 with keep-alive: answers 200 with `body_size` bytes and records each request's client port."""

    daemon_threads = True

    def __init__(self, body_size: int) -> None:
        self.body_size = body_size
        self.client_ports: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers["Content-Length"]))
                server.client_ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", str(server.body_size))
                self.end_headers()
                chunk = b"x" * 65536
                left = server.body_size
                try:
                    while left > 0:
                        self.wfile.write(chunk[:left])
                        left -= len(chunk)
                except OSError:
                    return  # the client hung up: what the handler should do with a huge answer

            def log_message(self, *args: Any) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def test_http_reuses_its_connection_after_reading_off_a_small_answer():
    server = _KeepAliveServer(body_size=2000)
    try:
        handler = http(f"http://127.0.0.1:{server.server_address[1]}/hook")
        for _ in range(3):
            handler(EVENT)
        assert len(server.client_ports) == 3 and len(set(server.client_ports)) == 1
    finally:
        server.close()


def test_http_drops_a_huge_answer_unread_instead_of_holding_it_in_memory():
    server = _KeepAliveServer(body_size=200 * 1024 * 1024)
    try:
        handler = http(f"http://127.0.0.1:{server.server_address[1]}/hook")
        tracemalloc.start()
        try:
            handler(EVENT)
            handler(EVENT)  # on a new connection: the first one was closed, not left with 199 MiB unread
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB held"
        assert len(set(server.client_ports)) == 2
    finally:
        server.close()


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
