"""Property: whatever a client sends, ingest never answers 500, and only a 200 leaves a job behind."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import fakeredis
import pytest
from conftest import BASE_CONFIG, TEST_ENV
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hooklane.ingest.app import create_app
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import PROVIDERS

NOW = 1_750_000_000
MAX_BODY = 4096
CONFIG = f"[ingest]\nmax_body_bytes = {MAX_BODY}\ntrusted_proxies = 1\n" + BASE_CONFIG
QUEUE = "rq:queue:hooklane"
STATUSES = {200, 400, 401, 403, 404, 405, 413}

# Header values as a server could hand them over: latin-1, no CR/LF.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
odd_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@st.composite
def url_segments(draw: st.DrawFn) -> str:
    """A path segment as a client may put it on the wire: percent-encoded, or raw with odd but legal chars."""
    raw = draw(st.one_of(
        odd_text,
        st.sampled_from([TEST_ENV["VOIPBIN_TOKEN"], TEST_ENV["VOICEKIT_TOKEN"], "***", "..", ".", "%", "%zz",
                         "a%2Fb", "%00", "tok~!$&'()*+,;=:@", "é", "\u202e"]),
    ))
    if draw(st.booleans()):
        return quote(raw, safe="")
    return "".join(c for c in raw if c not in "/?#") or "x"


@st.composite
def paths(draw: st.DrawFn) -> str:
    # Weighted towards real sources and tokens, so authentication and the queue are reached, not only 404.
    source = draw(st.one_of(st.sampled_from(["vr", "vox", "vol", "vb", "vk"] * 3), url_segments()))
    path = draw(st.sampled_from(["/webhooks/{s}"] * 6 + ["/webhooks/{s}/{t}"] * 3 + [
        "/webhooks/{s}/{t}/{t}", "/{s}", "/healthz", "/readyz", "/metrics", "/webhooks", "/"]))
    path = path.format(s=source, t=draw(url_segments()))
    tokens = st.sampled_from([TEST_ENV["VOIPBIN_TOKEN"], TEST_ENV["VOICEKIT_TOKEN"]])
    params = draw(st.lists(st.tuples(st.sampled_from(["token", "x", "token", ""]), st.one_of(tokens, url_segments())),
                           max_size=3))
    if params:
        path += "?" + "&".join(f"{k}={v}" for k, v in params)
    return path


signature_headers = st.sampled_from([
    "X-Webhook-Signature", "X-Webhook-Timestamp", "X-Webhook-Delivery-Id", "X-Voxpria-Signature",
    "X-Forwarded-For", "Content-Type", "User-Agent", "X-Other",
])
header_names = st.one_of(signature_headers, st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"))
xff = st.lists(st.one_of(st.sampled_from(["10.0.0.1", "127.0.0.1", "::1", "::ffff:10.1.1.1", "2001:db8::1",
                                          "unknown", "", " ", "1.2.3.4:80", "[::1]:443", "300.1.1.1"]),
                         header_text), max_size=4).map(", ".join)

bodies = st.one_of(
    st.binary(max_size=600),
    st.binary(min_size=MAX_BODY - 2, max_size=MAX_BODY + 2),
    st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b"", b" ", b"{", b"[]", b"null", b'{"event":"call.completed","data":{"call_id":"c"}}']),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(bodies)
    headers = draw(st.dictionaries(header_names, header_text, max_size=5))
    if draw(st.booleans()):
        headers["X-Forwarded-For"] = draw(xff)
    if draw(st.booleans()):
        # Valid signature headers for some source, so the 200/400 paths get exercised too.
        provider, var = draw(st.sampled_from([("volumereach", "VR_SECRET"), ("voxpria", "VOXPRIA_SECRET"),
                                              ("volubile", "VOLUBILE_SECRET")]))
        sign = PROVIDERS[provider].sign
        assert sign is not None
        headers.update(sign(body, TEST_ENV[var].encode(), timestamp=NOW))
    return {
        "method": draw(st.one_of(st.just("POST"), st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
                                 st.from_regex(r"\A[A-Z]{1,10}\Z"))),
        "path": draw(paths()),
        "headers": headers,
        "body": body,
        "chunked": draw(st.booleans()),
        "remote_addr": draw(st.sampled_from(["127.0.0.1", "10.1.2.3", "192.0.2.1", "::1", "::ffff:10.0.0.1",
                                             "2001:db8::5"])),
    }


@pytest.fixture
def fuzz_app(make_config: Callable[..., Config]) -> tuple[Any, fakeredis.FakeRedis]:
    conn = fakeredis.FakeRedis()
    app = create_app(make_config(CONFIG), conn, clock=lambda: NOW)
    return app.test_client(), conn


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=requests())
def test_random_requests_never_get_500_and_only_200_enqueues(req: dict[str, Any],
                                                            fuzz_app: tuple[Any, fakeredis.FakeRedis]) -> None:
    client, conn = fuzz_app
    jobs_before = conn.llen(QUEUE)
    kw: dict[str, Any] = {"environ_base": {"REMOTE_ADDR": req["remote_addr"]}}
    if req["chunked"]:
        # What gunicorn hands over for Transfer-Encoding: chunked (no Content-Length).
        kw["input_stream"] = io.BytesIO(req["body"])
        kw["environ_overrides"] = {"wsgi.input_terminated": True}
    else:
        kw["data"] = req["body"]
    resp = client.open(req["path"], method=req["method"], headers=req["headers"], **kw)

    event(f"status {resp.status_code}")  # --hypothesis-show-statistics: every answer should show up
    assert resp.status_code in STATUSES, resp.get_data(as_text=True)
    is_scrape = resp.status_code == 200 and req["path"].split("?")[0] == "/metrics"  # Prometheus text
    if req["method"] != "HEAD" and not is_scrape:
        assert resp.mimetype == "application/json"
        doc = resp.get_json()
        assert doc["status"] == ("accepted" if resp.status_code == 200 else "refused")
    for secret in TEST_ENV.values():
        assert secret not in resp.get_data(as_text=True)

    new_jobs = [x.decode() for x in conn.lrange(QUEUE, jobs_before, -1)]
    if resp.status_code == 200 and req["path"].startswith("/webhooks/"):
        assert len(new_jobs) == 1
        env = json.loads(conn.hget(f"rq:job:{new_jobs[0]}", "data"))[2][0]
        assert Delivery.from_dict(env).body == req["body"]
    else:
        assert new_jobs == []
