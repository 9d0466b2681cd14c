"""Ingest over HTTP (Flask test client, fakeredis): every answer of PRODUCT.md's table, with its JSON reason.

Every response any test here receives and every log line the app writes is checked for secret values
(`TEST_ENV`): a secret in an answer or a log line fails the test that provoked it.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import fakeredis
import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, free_port, parse_log_lines
from flask import Flask
from werkzeug.test import TestResponse

from hooklane.ingest.app import create_app
from hooklane.shared import logs as hl_logging
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.queueing import PROCESS_DELIVERY
from hooklane.shared.redisconn import connect

NOW = 1_750_000_000
QUEUE = "rq:queue:hooklane"
SECRET_VALUES = tuple(TEST_ENV.values())
VB_TOKEN = TEST_ENV["VOIPBIN_TOKEN"]
VK_TOKEN = TEST_ENV["VOICEKIT_TOKEN"]

BODY = json.dumps({
    "event": "call.completed",
    "data": {"call_id": "call_xyz", "outcome": "INTERESTED", "transcript": "Agent: hi\nJane: Tuesday works.",
             "contact": {"name": "Jane Smith", "phone": "+15551234567"}},
}).encode()

# How each BASE_CONFIG source signs: (provider, env var of its first secret).
SIGNED = {"vr": ("volumereach", "VR_SECRET"), "vox": ("voxpria", "VOXPRIA_SECRET"),
          "vol": ("volubile", "VOLUBILE_SECRET")}


def assert_no_secret(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for value in SECRET_VALUES:
        assert value not in text, f"secret value leaked into {where}"


def sign(source: str, body: bytes, *, secret_var: str | None = None, timestamp: int = NOW) -> dict[str, str]:
    provider, default_var = SIGNED[source]
    signer = PROVIDERS[provider].sign
    assert signer is not None
    return signer(body, TEST_ENV[secret_var or default_var].encode(), timestamp=timestamp)


class Client:
    """The Flask test client, checking every response for leaked secrets."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._client = app.test_client()

    def open(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             **kw: Any) -> TestResponse:
        if "input_stream" not in kw:
            kw["data"] = body
        resp = self._client.open(path, method=method, headers=headers or {}, **kw)
        assert_no_secret(resp.get_data(), f"the body of {method} {path}")
        assert_no_secret(repr(list(resp.headers.items())), f"the headers of {method} {path}")
        return resp

    def post(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None, **kw: Any) -> TestResponse:
        return self.open("POST", path, body, headers, **kw)

    def signed(self, source: str = "vr", body: bytes = BODY, **kw: Any) -> TestResponse:
        return self.open("POST", f"/webhooks/{source}", body, sign(source, body), **kw)


class Logs:
    """The JSON lines the app wrote to stderr, as production renders them (every line must parse)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.text = ""

    def lines(self) -> list[dict[str, Any]]:
        self.text += self._capsys.readouterr().err
        return parse_log_lines(self.text)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    hl_logging.configure("json", "DEBUG")
    capsys.readouterr()
    captured = Logs(capsys)
    yield captured
    captured.lines()
    assert_no_secret(captured.text, "a log line")


@pytest.fixture
def make_client(make_config: Callable[..., Config], logs: Logs,
                fake_redis: redis.Redis) -> Callable[..., Client]:
    def _make(text: str = BASE_CONFIG, conn: redis.Redis | None = None, env: dict[str, str] | None = None) -> Client:
        config = make_config(text, env=env)
        return Client(create_app(config, conn if conn is not None else fake_redis, clock=lambda: NOW))

    return _make


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


def queued(r: redis.Redis) -> list[str]:
    return [x.decode() for x in r.lrange(QUEUE, 0, -1)]


def job_hash(r: redis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(f"rq:job:{job_id}").items()}


def envelope(r: redis.Redis, job_id: str) -> dict[str, Any]:
    func, instance, args, kwargs = json.loads(job_hash(r, job_id)["data"])
    assert (func, instance, kwargs) == (PROCESS_DELIVERY, None, {})
    assert len(args) == 1
    return args[0]


def assert_nothing_queued(r: redis.Redis) -> None:
    assert r.llen(QUEUE) == 0
    assert list(r.scan_iter("rq:job:*")) == []


def assert_refused(resp: TestResponse, status: int, reason: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    doc = resp.get_json()
    assert doc["status"] == "refused"
    assert isinstance(doc["reason"], str) and doc["reason"]
    if reason is not None:
        assert doc["reason"] == reason
    return doc


# --------------------------------------------------------------------------- 200


def test_signed_delivery_is_200_and_its_job_holds_the_exact_bytes(client: Client, fake_redis: redis.Redis) -> None:
    body = BODY + b"\n  \xe2\x82\xac"  # trailing bytes a re-serialiser would lose
    headers = {**sign("vr", body), "X-Webhook-Delivery-Id": "dlv_123", "Content-Type": "application/json",
               "User-Agent": "VolumeReach-Webhooks/1.0", "X-Other": "dropped"}
    resp = client.post("/webhooks/vr?attempt=2", body, headers)
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["status"] == "accepted" and doc["reason"] == "queued"
    assert re.fullmatch(r"[0-9a-f]{32}", doc["id"])
    assert queued(fake_redis) == [doc["id"]]

    env = envelope(fake_redis, doc["id"])
    delivery = Delivery.from_dict(env)
    assert delivery.body == body
    assert base64.b64decode(env["body_b64"]) == body
    assert env["v"] == 1
    assert delivery.id == doc["id"]
    assert (delivery.source, delivery.provider, delivery.method) == ("vr", "volumereach", "POST")
    assert delivery.path == "/webhooks/vr"
    assert delivery.query == {"attempt": "2"}
    assert delivery.delivery_id == "dlv_123"
    assert delivery.remote_addr == "127.0.0.1" and delivery.client_ip == "127.0.0.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", delivery.received_at)
    assert delivery.headers == {
        "x-webhook-delivery-id": "dlv_123",
        "x-webhook-timestamp": str(NOW),
        "content-type": "application/json",
        "user-agent": "VolumeReach-Webhooks/1.0",
    }


def test_signature_headers_are_never_stored(client: Client, fake_redis: redis.Redis) -> None:
    headers = sign("vr", BODY)
    resp = client.post("/webhooks/vr", BODY, headers)
    assert resp.status_code == 200
    stored = json.dumps(job_hash(fake_redis, resp.get_json()["id"]))
    assert headers["X-Webhook-Signature"] not in stored
    assert headers["X-Webhook-Signature"].removeprefix("sha256=") not in stored
    assert "x-webhook-signature" not in stored


@pytest.mark.parametrize("source", ["vr", "vox", "vol"])
def test_each_signed_provider_is_accepted(source: str, client: Client, fake_redis: redis.Redis) -> None:
    resp = client.signed(source)
    assert resp.status_code == 200
    env = envelope(fake_redis, resp.get_json()["id"])
    assert env["source"] == source and env["provider"] == SIGNED[source][0]
    assert Delivery.from_dict(env).body == BODY
    assert_no_secret(json.dumps(env), "the envelope")


def test_rotated_secret_is_accepted(client: Client) -> None:
    resp = client.post("/webhooks/vr", BODY, sign("vr", BODY, secret_var="VR_SECRET_OLD"))
    assert resp.status_code == 200


def test_query_token_is_accepted_and_removed_from_the_envelope(client: Client, fake_redis: redis.Redis) -> None:
    resp = client.post(f"/webhooks/vb?token={VB_TOKEN}&campaign=7", BODY)
    assert resp.status_code == 200
    env = envelope(fake_redis, resp.get_json()["id"])
    assert env["path"] == "/webhooks/vb"
    assert env["query"] == {"campaign": "7"}
    assert VB_TOKEN not in json.dumps(job_hash(fake_redis, env["id"]))


def test_path_token_is_accepted_and_masked_in_the_envelope(client: Client, fake_redis: redis.Redis) -> None:
    resp = client.post(f"/webhooks/vk/{VK_TOKEN}", BODY)
    assert resp.status_code == 200
    env = envelope(fake_redis, resp.get_json()["id"])
    assert env["path"] == "/webhooks/vk/***"
    assert env["query"] == {}
    assert (env["provider"], env["delivery_id"]) == ("voicekit", None)
    assert VK_TOKEN not in json.dumps(job_hash(fake_redis, env["id"]))


def test_percent_encoded_token_is_decoded_before_comparison(make_client: Callable[..., Client],
                                                            fake_redis: redis.Redis) -> None:
    odd = "a/b c+d%\u00e9"
    client = make_client(BASE_CONFIG.replace("env:VOIPBIN_TOKEN", "env:ODD_TOKEN"), env={"ODD_TOKEN": odd})
    resp = client.post(f"/webhooks/vb?token={quote(odd, safe='')}", BODY)
    assert resp.status_code == 200
    assert odd not in json.dumps(job_hash(fake_redis, resp.get_json()["id"]))
    assert_refused(client.post(f"/webhooks/vb?token={quote(odd[:-1], safe='')}", BODY), 401)


@pytest.mark.parametrize("method", ["POST", "PUT", "GET", "DELETE"])
def test_voipbin_accepts_each_method_it_may_be_configured_with(method: str, client: Client,
                                                               fake_redis: redis.Redis) -> None:
    resp = client.open(method, f"/webhooks/vb?token={VB_TOKEN}", BODY)
    assert resp.status_code == 200
    assert envelope(fake_redis, resp.get_json()["id"])["method"] == method


def test_duplicate_delivery_is_200_each_time(client: Client, fake_redis: redis.Redis) -> None:
    # Ingest never dedupes (that needs parsing); the workers' dedupe stage does.
    headers = {**sign("vr", BODY), "X-Webhook-Delivery-Id": "dlv_same"}
    first = client.post("/webhooks/vr", BODY, headers)
    second = client.post("/webhooks/vr", BODY, headers)
    assert first.status_code == second.status_code == 200
    assert first.get_json()["id"] != second.get_json()["id"]
    assert len(queued(fake_redis)) == 2


def test_client_ip_behind_trusted_proxy_is_recorded(make_client: Callable[..., Client],
                                                    fake_redis: redis.Redis) -> None:
    client = make_client("[ingest]\ntrusted_proxies = 1\n" + BASE_CONFIG)
    resp = client.post(f"/webhooks/vk?token={VK_TOKEN}", BODY,
                       {"X-Forwarded-For": "203.0.113.66, 10.1.2.3"})
    assert resp.status_code == 200
    env = envelope(fake_redis, resp.get_json()["id"])
    assert (env["remote_addr"], env["client_ip"]) == ("127.0.0.1", "10.1.2.3")


def test_accepted_delivery_logs_one_structured_line(client: Client, logs: Logs) -> None:
    resp = client.post("/webhooks/vr", BODY, {**sign("vr", BODY), "X-Webhook-Delivery-Id": "dlv_42"})
    assert resp.status_code == 200
    (line,) = logs.events("delivery.accepted")
    assert line["source"] == "vr" and line["provider"] == "volumereach"
    assert line["delivery_id"] == "dlv_42"
    assert line["request_id"] == resp.get_json()["id"]
    assert line["bytes"] == len(BODY) and line["status"] == 200
    assert isinstance(line["latency_ms"], float)


def test_delivery_without_provider_id_logs_a_body_hash(client: Client, logs: Logs) -> None:
    assert client.post(f"/webhooks/vb?token={VB_TOKEN}", BODY).status_code == 200
    (line,) = logs.events("delivery.accepted")
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", line["delivery_id"])


# --------------------------------------------------------------------------- 400


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty body"),
    (b" \r\n\t ", "empty body"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'"call.completed"', "body must be a JSON object"),
    (b"null", "body must be a JSON object"),
    (b"42", "body must be a JSON object"),
    (b"event=call.completed", "body must be a JSON object"),
    (b"\xff\xfe{", "body must be a JSON object"),
])
def test_unacceptable_body_is_400(body: bytes, reason: str, client: Client, fake_redis: redis.Redis) -> None:
    assert_refused(client.signed("vr", body), 400, reason)
    assert_nothing_queued(fake_redis)


def test_body_shorter_than_its_content_length_is_400_not_queued(client: Client, fake_redis: redis.Redis) -> None:
    # The client hung up mid-body: what arrived is not the delivery it signed.
    resp = client.post("/webhooks/vr", BODY, sign("vr", BODY),
                       environ_overrides={"CONTENT_LENGTH": str(len(BODY) + 10)})
    assert_refused(resp, 400)
    assert_nothing_queued(fake_redis)


# --------------------------------------------------------------------------- 401


def _vr_headers(**override: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {**sign("vr", BODY), **override}
    return {k: v for k, v in headers.items() if v is not None}


GOOD_SIG = sign("vr", BODY)["X-Webhook-Signature"]


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing x-webhook-signature header"),
    (_vr_headers(**{"X-Webhook-Signature": None}), "missing x-webhook-signature header"),
    (_vr_headers(**{"X-Webhook-Signature": "  "}), "missing x-webhook-signature header"),
    (_vr_headers(**{"X-Webhook-Timestamp": None}), "missing x-webhook-timestamp header"),
    (_vr_headers(**{"X-Webhook-Signature": "sha256=" + "0" * 64}), "signature does not match"),
    (_vr_headers(**{"X-Webhook-Signature": GOOD_SIG.removeprefix("sha256=")}), None),
    (_vr_headers(**{"X-Webhook-Signature": "sha1=" + GOOD_SIG[7:]}), None),
    (_vr_headers(**{"X-Webhook-Signature": GOOD_SIG[:-1]}), None),
    (_vr_headers(**{"X-Webhook-Signature": GOOD_SIG[:-1] + "z"}), None),
    (_vr_headers(**{"X-Webhook-Signature": GOOD_SIG + "00"}), None),
    (_vr_headers(**{"X-Webhook-Signature": "sha256=" + "é" * 64}), None),
    (_vr_headers(**{"X-Webhook-Timestamp": "yesterday"}), "timestamp is not unix seconds"),
    (_vr_headers(**{"X-Webhook-Timestamp": "-5"}), "timestamp is not unix seconds"),
    (_vr_headers(**{"X-Webhook-Timestamp": "1.75e9"}), "timestamp is not unix seconds"),
    (_vr_headers(**{"X-Webhook-Timestamp": "9" * 40}), "timestamp is not unix seconds"),
    (_vr_headers(**{"X-Webhook-Timestamp": "\u0661\u0662\u0663"}), "timestamp is not unix seconds"),
    (_vr_headers(**{"X-Webhook-Timestamp": str(NOW - 301)}), "timestamp outside the tolerance window"),
    (_vr_headers(**{"X-Webhook-Timestamp": str(NOW + 301)}), "timestamp outside the tolerance window"),
    # A valid timestamp that is not the one signed.
    (_vr_headers(**{"X-Webhook-Timestamp": str(NOW - 1)}), "signature does not match"),
])
def test_bad_missing_or_malformed_signature_is_401(headers: dict[str, str], reason: str | None, client: Client,
                                                   fake_redis: redis.Redis) -> None:
    assert_refused(client.post("/webhooks/vr", BODY, headers), 401, reason)
    assert_nothing_queued(fake_redis)


def test_wrong_secret_is_401(client: Client, fake_redis: redis.Redis) -> None:
    assert_refused(client.post("/webhooks/vr", BODY, sign("vr", BODY, secret_var="VOXPRIA_SECRET")), 401,
                   "signature does not match")
    assert_nothing_queued(fake_redis)


def test_tampered_body_is_401(client: Client, fake_redis: redis.Redis) -> None:
    tampered = BODY.replace(b"INTERESTED", b"INTERESTEE")
    assert_refused(client.post("/webhooks/vr", tampered, sign("vr", BODY)), 401, "signature does not match")
    assert_nothing_queued(fake_redis)


@pytest.mark.parametrize("source", ["vox", "vol"])
def test_other_signed_providers_refuse_a_bad_signature(source: str, client: Client, fake_redis: redis.Redis) -> None:
    headers = sign(source, BODY + b" ")
    assert_refused(client.post(f"/webhooks/{source}", BODY, headers), 401)
    assert_refused(client.post(f"/webhooks/{source}", BODY), 401)
    assert_nothing_queued(fake_redis)


@pytest.mark.parametrize(("path", "reason"), [
    ("/webhooks/vb", "missing token"),
    ("/webhooks/vb?token=", "missing token"),
    ("/webhooks/vb?token=vb-url-token-12", "token does not match"),
    ("/webhooks/vb/vb-url-token-1234", "token does not match"),
    ("/webhooks/vb?tok=vb-url-token-123", "missing token"),
    ("/webhooks/vk?token=vb-url-token-123", "token does not match"),
])
def test_wrong_or_missing_token_is_401(path: str, reason: str, client: Client, fake_redis: redis.Redis) -> None:
    assert_refused(client.post(path, BODY), 401, reason)
    assert_nothing_queued(fake_redis)


def test_path_token_on_a_signed_source_is_401(client: Client, fake_redis: redis.Redis) -> None:
    assert_refused(client.post("/webhooks/vr/whatever", BODY, sign("vr", BODY)), 401,
                   "this source takes no URL token")
    assert_nothing_queued(fake_redis)


def test_refusal_is_logged_without_the_presented_token(client: Client, logs: Logs) -> None:
    client.post("/webhooks/vb/guess-TOKEN-value", BODY)
    (line,) = logs.events("delivery.refused")
    assert line["status"] == 401 and line["reason"] == "token does not match"
    assert "guess-TOKEN-value" not in logs.text and "guess-TOKEN-value" not in repr(line)


# --------------------------------------------------------------------------- 403


def test_ip_outside_allowlist_is_403(client: Client, fake_redis: redis.Redis) -> None:
    resp = client.post(f"/webhooks/vk?token={VK_TOKEN}", BODY, environ_base={"REMOTE_ADDR": "192.0.2.10"})
    assert_refused(resp, 403, "client address not allowed")
    assert_nothing_queued(fake_redis)


def test_spoofed_forwarded_for_without_trusted_proxies_is_still_403(client: Client, fake_redis: redis.Redis) -> None:
    resp = client.post(f"/webhooks/vk?token={VK_TOKEN}", BODY, {"X-Forwarded-For": "10.0.0.1"},
                       environ_base={"REMOTE_ADDR": "192.0.2.10"})
    assert_refused(resp, 403)
    assert_nothing_queued(fake_redis)


def test_spoofed_hop_in_front_of_the_trusted_proxy_is_403(make_client: Callable[..., Client],
                                                         fake_redis: redis.Redis) -> None:
    client = make_client("[ingest]\ntrusted_proxies = 1\n" + BASE_CONFIG)
    resp = client.post(f"/webhooks/vk?token={VK_TOKEN}", BODY, {"X-Forwarded-For": "10.0.0.1, 192.0.2.10"})
    assert_refused(resp, 403)
    assert_nothing_queued(fake_redis)


def test_ipv4_mapped_peer_inside_allowlist_is_accepted(client: Client) -> None:
    resp = client.post(f"/webhooks/vk?token={VK_TOKEN}", BODY, environ_base={"REMOTE_ADDR": "::ffff:10.9.9.9"})
    assert resp.status_code == 200


# --------------------------------------------------------------------------- 404


@pytest.mark.parametrize("path", ["/webhooks/nope", "/webhooks/nope/token", "/webhooks/VR"])
def test_unknown_source_is_404_json(path: str, client: Client, fake_redis: redis.Redis) -> None:
    assert_refused(client.post(path, BODY, sign("vr", BODY)), 404, "unknown source")
    assert_nothing_queued(fake_redis)


@pytest.mark.parametrize("path", ["/", "/webhooks", "/webhooks/", "/webhooks/vr/", "/webhooks/vr/a/b",
                                  "/admin/x", "/favicon.ico"])
def test_unknown_path_is_404_json_not_html(path: str, client: Client, fake_redis: redis.Redis) -> None:
    resp = client.post(path, BODY, sign("vr", BODY))
    assert_refused(resp, 404)
    assert b"<html" not in resp.get_data().lower()
    assert_nothing_queued(fake_redis)


# --------------------------------------------------------------------------- 405


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_method_volumereach_never_uses_is_405_with_allow(method: str, client: Client,
                                                         fake_redis: redis.Redis) -> None:
    resp = client.open(method, "/webhooks/vr", BODY, sign("vr", BODY))
    assert_refused(resp, 405)
    assert resp.headers["Allow"] == "POST"
    assert_nothing_queued(fake_redis)


def test_head_is_405_with_allow_and_no_body(client: Client) -> None:
    resp = client.open("HEAD", "/webhooks/vr")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "TRACE"])
def test_voipbin_refuses_methods_it_never_uses_and_allows_its_four(method: str, client: Client) -> None:
    resp = client.open(method, f"/webhooks/vb?token={VB_TOKEN}", BODY)
    assert_refused(resp, 405)
    assert sorted(resp.headers["Allow"].split(", ")) == ["DELETE", "GET", "POST", "PUT"]


def test_source_restricted_to_put_refuses_post(make_client: Callable[..., Client], fake_redis: redis.Redis) -> None:
    client = make_client(BASE_CONFIG.replace('token = "env:VOIPBIN_TOKEN"',
                                             'token = "env:VOIPBIN_TOKEN"\nmethods = ["PUT"]'))
    resp = client.post(f"/webhooks/vb?token={VB_TOKEN}", BODY)
    assert_refused(resp, 405)
    assert resp.headers["Allow"] == "PUT"
    assert client.open("PUT", f"/webhooks/vb?token={VB_TOKEN}", BODY).status_code == 200
    assert len(queued(fake_redis)) == 1


def test_method_check_comes_before_authentication(client: Client) -> None:
    # An unsigned GET learns it used the wrong method, not that it lacked a signature.
    assert_refused(client.open("GET", "/webhooks/vr"), 405)


def test_wrong_method_on_health_endpoints_is_405_json(client: Client) -> None:
    resp = client.post("/healthz")
    assert_refused(resp, 405)
    assert "GET" in resp.headers["Allow"]


# --------------------------------------------------------------------------- 413

SMALL = "[ingest]\nmax_body_bytes = 1024\n" + BASE_CONFIG


def _padded(size: int) -> bytes:
    head = b'{"event":"call.completed","pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_body_over_max_body_bytes_is_413(make_client: Callable[..., Client], fake_redis: redis.Redis) -> None:
    client = make_client(SMALL)
    body = _padded(1025)
    assert_refused(client.post("/webhooks/vr", body, sign("vr", body)), 413)
    assert_nothing_queued(fake_redis)


def test_body_of_exactly_max_body_bytes_is_accepted(make_client: Callable[..., Client],
                                                    fake_redis: redis.Redis) -> None:
    client = make_client(SMALL)
    body = _padded(1024)
    resp = client.post("/webhooks/vr", body, sign("vr", body))
    assert resp.status_code == 200
    assert Delivery.from_dict(envelope(fake_redis, resp.get_json()["id"])).body == body


def test_oversized_body_is_413_before_authentication(make_client: Callable[..., Client]) -> None:
    # The size limit protects the HMAC from hashing a huge body sent by anyone.
    client = make_client(SMALL)
    assert_refused(client.post("/webhooks/vb?token=wrong", _padded(4096)), 413)


def test_chunked_body_over_the_limit_without_content_length_is_413(make_client: Callable[..., Client],
                                                                   fake_redis: redis.Redis) -> None:
    client = make_client(SMALL)
    body = _padded(5000)
    # gunicorn sets wsgi.input_terminated for chunked requests; that is what lets the limit apply to a stream.
    resp = client.post("/webhooks/vr", headers={**sign("vr", body), "Transfer-Encoding": "chunked"},
                       input_stream=io.BytesIO(body), environ_overrides={"wsgi.input_terminated": True})
    assert_refused(resp, 413)
    assert_nothing_queued(fake_redis)


def test_chunked_body_within_the_limit_is_accepted(make_client: Callable[..., Client],
                                                   fake_redis: redis.Redis) -> None:
    client = make_client(SMALL)
    resp = client.post("/webhooks/vr", headers={**sign("vr", BODY), "Transfer-Encoding": "chunked"},
                       input_stream=io.BytesIO(BODY), environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 200
    assert Delivery.from_dict(envelope(fake_redis, resp.get_json()["id"])).body == BODY


# --------------------------------------------------------------------------- 503


def _down_redis() -> redis.Redis:
    # The production connection factory: its retry policy decides how fast a 503 comes back.
    return connect(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5, connect_timeout=0.5)


def test_redis_unreachable_is_503_with_retry_after(make_client: Callable[..., Client],
                                                   logs: Logs) -> None:
    client = make_client(conn=_down_redis())
    resp = client.signed("vr")
    doc = assert_refused(resp, 503, "queue unavailable, retry later")
    assert resp.headers["Retry-After"] == "5"
    assert "id" not in doc
    (line,) = logs.events("delivery.unavailable")
    assert line["error"] == "ConnectionError"


def test_retry_after_follows_config(make_client: Callable[..., Client]) -> None:
    client = make_client("[ingest]\nretry_after_seconds = 17\n" + BASE_CONFIG, conn=_down_redis())
    assert client.signed("vr").headers["Retry-After"] == "17"


def test_redis_command_error_is_503_not_500(client: Client, fake_redis: redis.Redis,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Not only connection errors: OOM, READONLY replica, EXECABORT all mean "not stored".
    def exec_fails(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(type(fake_redis.pipeline()), "execute", exec_fails)
    resp = client.signed("vr")
    assert_refused(resp, 503)
    assert resp.headers["Retry-After"] == "5"
    assert_nothing_queued(fake_redis)


def test_redis_disconnected_fake_server_is_503(make_client: Callable[..., Client]) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    client = make_client(conn=fakeredis.FakeRedis(server=server))
    assert_refused(client.post(f"/webhooks/vb?token={VB_TOKEN}", BODY), 503)


def test_auth_failure_is_still_401_when_redis_is_down(make_client: Callable[..., Client]) -> None:
    client = make_client(conn=_down_redis())
    assert_refused(client.post("/webhooks/vr", BODY), 401)


# --------------------------------------------------------------------------- health


def test_healthz_is_200_without_redis(make_client: Callable[..., Client]) -> None:
    resp = make_client(conn=_down_redis()).open("GET", "/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "accepted", "reason": "alive"}


def test_readyz_is_200_when_redis_answers(client: Client) -> None:
    resp = client.open("GET", "/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["reason"] == "ready"


def test_readyz_is_503_with_retry_after_when_redis_is_down(make_client: Callable[..., Client]) -> None:
    resp = make_client(conn=_down_redis()).open("GET", "/readyz")
    assert_refused(resp, 503)
    assert resp.headers["Retry-After"] == "5"


def test_metrics_count_deliveries_without_secrets(client: Client) -> None:
    client.signed("vr")
    client.post(f"/webhooks/vb/{VB_TOKEN}x", BODY)
    resp = client.open("GET", "/metrics")
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert 'hooklane_ingest_deliveries_total{source="vr",status="200"}' in text
    assert 'hooklane_ingest_verification_failures_total{reason="token does not match",source="vb"}' in text


# --------------------------------------------------------------------------- no secret anywhere


def test_no_secret_in_any_answer_or_log_line_across_every_outcome(
    make_client: Callable[..., Client], logs: Logs
) -> None:
    client = make_client()
    statuses = set()
    attempts: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("POST", "/webhooks/vr", BODY, sign("vr", BODY)),
        ("POST", "/webhooks/vr", BODY, sign("vr", BODY, secret_var="VOXPRIA_SECRET")),
        ("POST", "/webhooks/vr", b"[]", sign("vr", b"[]")),
        ("POST", f"/webhooks/vb/{VB_TOKEN}", BODY, {}),
        ("POST", f"/webhooks/vb?token={VB_TOKEN}-x", BODY, {}),
        ("POST", f"/webhooks/vk/{VK_TOKEN}", BODY, {"X-Forwarded-For": VK_TOKEN}),
        ("GET", f"/webhooks/vr?token={VB_TOKEN}", BODY, {}),
        ("POST", f"/webhooks/{VB_TOKEN}", BODY, {}),
        ("POST", f"/webhooks/vk/{VK_TOKEN}/extra", BODY, {}),
        ("POST", "/webhooks/vox", BODY, {"X-Voxpria-Signature": TEST_ENV["VOXPRIA_SECRET"]}),
    ]
    for method, path, body, headers in attempts:
        statuses.add(client.open(method, path, body, headers).status_code)
    statuses.add(client.open("POST", f"/webhooks/vk/{VK_TOKEN}", BODY, environ_base={"REMOTE_ADDR": "192.0.2.1"})
                 .status_code)
    small = make_client("[ingest]\nmax_body_bytes = 16\n" + BASE_CONFIG)
    statuses.add(small.open("POST", f"/webhooks/vb/{VB_TOKEN}", BODY).status_code)
    down = make_client(conn=_down_redis())
    statuses.add(down.open("POST", f"/webhooks/vb/{VB_TOKEN}", BODY).status_code)
    statuses.add(down.open("GET", "/readyz").status_code)
    assert statuses == {200, 400, 401, 403, 404, 405, 413, 503}
    assert {line["status"] for line in logs.lines() if line.get("event", "").startswith("delivery.")} >= {
        200, 400, 401, 403, 503}, "the app did not log its deliveries: the log capture is not wired"
    assert_no_secret(logs.text, "a log line")
