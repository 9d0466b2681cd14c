"""Ingest and worker for the providers that sign more than the body: twilio (URL + form, GET callbacks), vapi
(auth mode per source) and the generic hmac source (its scheme and fields from the config).

Over the Flask test client with fakeredis; the worker's normalize step runs on what ingest queued.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl

import fakeredis
import pytest
from conftest import FIXTURES
from flask.testing import FlaskClient
from test_ingest_http import envelope
from twilio.request_validator import RequestValidator

from hooklane.ingest.app import create_app
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import generic_hmac, vapi
from hooklane.workers import jobs, runtime

NOW = 1_750_000_000
TW_TOKEN = "twilio-auth-token-for-ingest-tests"
PUBLIC = "https://hooks.example.com/webhooks/tw"
FORM = (FIXTURES / "twilio" / "completed.form").read_bytes()
CONFIG = f"""
[[sources]]
name = "tw"
provider = "twilio"
secrets = ["env:TW_TOKEN"]

[[sources]]
name = "tw-proxied"
provider = "twilio"
secrets = ["env:TW_TOKEN"]
public_url = "{PUBLIC}"

[[sources]]
name = "vapi"
provider = "vapi"
secrets = ["env:VAPI_TOKEN"]

[[sources]]
name = "shop"
provider = "hmac"
secrets = ["env:SHOP_SECRET"]
signature_header = "X-Shopify-Hmac-Sha256"
encoding = "base64"
type_field = "topic"
identity_fields = ["id"]
call_id_field = "id"

# GitHub: the event type and the delivery id are headers, not payload fields.
[[sources]]
name = "gh"
provider = "hmac"
secrets = ["env:GH_SECRET"]
signature_header = "X-Hub-Signature-256"
prefix = "sha256="
type_header = "X-GitHub-Event"
id_header = "X-GitHub-Delivery"

[handlers.log]
type = "log"

[[routes]]
events = ["*"]
handlers = ["log"]
"""
ENV = {"TW_TOKEN": TW_TOKEN, "VAPI_TOKEN": "vapi-bearer-token", "SHOP_SECRET": "shpss_ingest",
       "GH_SECRET": "It's a Secret to Everybody"}


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config(CONFIG, env=ENV)


@pytest.fixture
def redis_conn() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def client(config: Config, redis_conn: fakeredis.FakeRedis) -> FlaskClient:
    return create_app(config, redis_conn, clock=lambda: NOW).test_client()


@pytest.fixture
def worker_runtime(config: Config, redis_conn: fakeredis.FakeRedis) -> Iterator[None]:
    runtime.install(runtime.Runtime.build(config, redis_conn))
    yield
    runtime.install(None)


def twilio_signature(url: str, params: dict[str, str] | None = None) -> str:
    return RequestValidator(TW_TOKEN).compute_signature(url, params or {})


def form_params() -> dict[str, str]:
    return dict(parse_qsl(FORM.decode(), keep_blank_values=True))


# --------------------------------------------------------------------------- twilio


def test_twilio_form_post_signed_by_the_sdk_is_accepted_and_normalized(
        client: FlaskClient, redis_conn: fakeredis.FakeRedis, worker_runtime: None) -> None:
    url = "http://localhost/webhooks/tw?a=1&b=two%20words"
    resp = client.post(url, data=FORM, content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": twilio_signature(url, form_params())})
    assert resp.status_code == 200, resp.get_json()
    event = jobs.normalize(Delivery.from_dict(json.loads(_only_envelope(redis_conn))))
    expected = json.loads((FIXTURES / "twilio" / "completed.expected.json").read_text())
    assert {**event.to_dict(), "source": "twilio", "received_at": None, "id": None} == \
        {**expected, "received_at": None, "id": None}
    assert event.id == "tw:" + expected["id"].split(":", 1)[1]


def test_twilio_behind_a_proxy_verifies_against_the_configured_public_url(client: FlaskClient) -> None:
    signature = twilio_signature(PUBLIC + "?a=1", form_params())
    internal = "http://10.0.0.7:8000/webhooks/tw-proxied?a=1"
    resp = client.post(internal, data=FORM, content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": signature})
    assert resp.status_code == 200, resp.get_json()
    # The source without public_url checks the URL it sees, which Twilio did not sign.
    resp = client.post("http://10.0.0.7:8000/webhooks/tw?a=1", data=FORM,
                       content_type="application/x-www-form-urlencoded", headers={"X-Twilio-Signature": signature})
    assert (resp.status_code, resp.get_json()["reason"]) == (401, "signature does not match")


def test_twilio_get_callback_is_accepted_and_the_worker_reads_its_query(
        client: FlaskClient, redis_conn: fakeredis.FakeRedis, worker_runtime: None) -> None:
    url = "http://localhost/webhooks/tw?" + FORM.decode()
    resp = client.get(url, headers={"X-Twilio-Signature": twilio_signature(url)})
    assert resp.status_code == 200, resp.get_json()
    event = jobs.normalize(Delivery.from_dict(json.loads(_only_envelope(redis_conn))))
    assert (event.type, event.call.id, event.call.duration_seconds) == (
        "call.completed", "CA1234567890abcdef1234567890abcdef", 184.0)


def _only_envelope(r: fakeredis.FakeRedis) -> str:
    """The envelope of the one delivery ingest queued."""
    [job_id] = [x.decode() for x in r.lrange("rq:queue:hooklane", 0, -1)]
    return json.dumps(envelope(r, job_id))


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing x-twilio-signature header"),
    ({"X-Twilio-Signature": "%%%"}, "signature is not base64"),
    ({"X-Twilio-Signature": "c2hvcnQ="}, "signature is not an HMAC-SHA1 or HMAC-SHA256 digest"),
    ({"X-Twilio-Signature": "A" * 27 + "=", "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_MD5"},
     "unsupported signature algorithm in X-Twilio-Webhooks-Signature-Settings"),
])
def test_malformed_twilio_headers_are_401_with_a_reason(client: FlaskClient, headers: dict[str, str],
                                                         reason: str) -> None:
    resp = client.post("/webhooks/tw", data=FORM, content_type="application/x-www-form-urlencoded", headers=headers)
    assert (resp.status_code, resp.get_json()["reason"]) == (401, reason)


def test_twilio_signed_body_that_is_neither_form_nor_json_is_400(client: FlaskClient) -> None:
    url = "http://localhost/webhooks/tw"
    body = b"\x00\x01 not a form"
    # Twilio's validator reads such a body as one blank-valued parameter; signed that way it authenticates.
    signature = twilio_signature(url, {"\x00\x01 not a form": ""})
    resp = client.post(url, data=body, headers={"X-Twilio-Signature": signature})
    assert (resp.status_code, resp.get_json()["reason"]) == (
        400, "body must be application/x-www-form-urlencoded or a JSON object")


def test_twilio_source_refuses_methods_twilio_never_uses(client: FlaskClient) -> None:
    resp = client.put("/webhooks/tw", data=FORM)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST, GET"


# --------------------------------------------------------------------------- vapi


def test_vapi_bearer_source_over_http(client: FlaskClient, redis_conn: fakeredis.FakeRedis) -> None:
    body = (FIXTURES / "vapi" / "end-of-call-report.json").read_bytes()
    ok = client.post("/webhooks/vapi", data=body, headers={"Authorization": "Bearer vapi-bearer-token"})
    assert ok.status_code == 200, ok.get_json()
    for headers, reason in (({}, "missing authorization header"),
                            ({"Authorization": "Basic dmFwaQ=="}, "authorization must be 'Bearer <token>'"),
                            ({"Authorization": "Bearer nope"}, "token does not match")):
        resp = client.post("/webhooks/vapi", data=body, headers=headers)
        assert (resp.status_code, resp.get_json()["reason"]) == (401, reason)
    assert vapi.PROVIDER.check_body(b"form=1", "POST") == "body must be a JSON object"


# --------------------------------------------------------------------------- generic hmac


def test_hmac_source_verifies_its_scheme_and_the_worker_uses_its_fields(
        client: FlaskClient, redis_conn: fakeredis.FakeRedis, config: Config, worker_runtime: None) -> None:
    body = b'{"id":820982911946154508,"topic":"orders/create","total_price":"598.94"}'
    headers = generic_hmac.sign(body, ENV["SHOP_SECRET"].encode(), options=config.sources["shop"].options)
    resp = client.post("/webhooks/shop", data=body, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    event = jobs.normalize(Delivery.from_dict(json.loads(_only_envelope(redis_conn))))
    assert (event.id, event.type, event.call.id) == ("shop:orders/create:820982911946154508",
                                                     "hmac.orders/create", "820982911946154508")
    resp = client.post("/webhooks/shop", data=body + b" ", headers=headers)
    assert (resp.status_code, resp.get_json()["reason"]) == (401, "signature does not match")
    resp = client.post("/webhooks/shop", data=body, headers={"X-Shopify-Hmac-Sha256": "not*base64"})
    assert (resp.status_code, resp.get_json()["reason"]) == (401, "signature is not base64")


def test_worker_uses_the_default_fields_for_a_source_no_longer_configured(worker_runtime: None) -> None:
    body = b'{"type":"call.completed","id":"x"}'
    d = Delivery(id="0" * 32, source="gone", provider="hmac", received_at="2026-01-01T00:00:00.000000Z", body=body)
    assert jobs.normalize(d).type == "call.completed"



def test_hmac_source_takes_type_and_delivery_id_from_headers_it_names(
        client: FlaskClient, redis_conn: fakeredis.FakeRedis, worker_runtime: None) -> None:
    body = b'{"action":"opened","issue":{"id":1,"number":1347},"repository":{"id":1296269}}'
    signature = "sha256=" + hmac.new(ENV["GH_SECRET"].encode(), body, hashlib.sha256).hexdigest()
    guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    resp = client.post("/webhooks/gh", data=body, headers={
        "X-Hub-Signature-256": signature, "X-GitHub-Event": "issues", "X-GitHub-Delivery": guid})
    assert resp.status_code == 200, resp.get_json()
    delivery = Delivery.from_dict(json.loads(_only_envelope(redis_conn)))
    assert delivery.delivery_id == guid
    event = jobs.normalize(delivery)
    assert (event.id, event.type, event.provider_type, event.delivery_id) == (
        f"gh:issues:{guid}", "hmac.issues", "issues", guid)
