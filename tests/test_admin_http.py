"""The admin API on the ingest app: bearer auth, dead letters over HTTP, stats; every client mistake a 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, add_dead_letter, free_port
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from hooklane.ingest.app import create_app
from hooklane.shared import deadletters
from hooklane.shared.config import Config
from hooklane.shared.envelope import iso_utc
from hooklane.shared.providers import volumereach
from hooklane.shared.queueing import queue_name
from hooklane.workers import runtime
from hooklane.workers.main import build_worker

TOKEN = "adm-7f3c9e1b5d2a4c6e8f0a"
SOURCES = BASE_CONFIG.split("[handlers.log]")[0]
HANDLERS = """
[handlers.crm]
type = "http"
url = "{url}/crm"
secret = "env:CRM_SECRET"
max_attempts = 1
timeout_seconds = 5

[handlers.warehouse]
type = "http"
url = "{url}/warehouse"
max_attempts = 1
timeout_seconds = 5

[[routes]]
events = ["call.*"]
handlers = ["crm", "warehouse"]
"""


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make(make_config: Any, r: redis.Redis, *, url: str = "http://127.0.0.1:9", redis_url: str | None = None) -> Config:
    return make_config(SOURCES + HANDLERS.format(url=url), redis_url=redis_url)


@pytest.fixture
def fake_app(make_config: Any, fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
             ) -> tuple[FlaskClient, Config, redis.Redis]:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", TOKEN)
    config = make(make_config, fake_redis)
    return create_app(config, fake_redis).test_client(), config, fake_redis


@pytest.fixture
def real_app(make_config: Any, real_redis: redis.Redis, redis_server: Any, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[tuple[FlaskClient, Config, redis.Redis]]:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", TOKEN)
    config = make(make_config, real_redis, redis_url=redis_server.url)
    yield create_app(config, real_redis).test_client(), config, real_redis
    runtime.install(None)


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/admin/dead-letters"), ("GET", "/admin/dead-letters/x"), ("POST", "/admin/dead-letters/x/replay"),
    ("POST", "/admin/dead-letters/replay"), ("DELETE", "/admin/dead-letters/x"), ("GET", "/admin/stats"),
])
def test_without_a_configured_token_the_admin_routes_do_not_exist(make_config, fake_redis, monkeypatch, method,
                                                                   path) -> None:
    monkeypatch.delenv("HOOKLANE_ADMIN_TOKEN", raising=False)
    client = create_app(make(make_config, fake_redis), fake_redis).test_client()

    resp = client.open(path, method=method, headers=auth(), json={"all": True})

    assert resp.status_code == 404
    assert resp.is_json


def test_an_empty_token_does_not_enable_the_routes(make_config, fake_redis, monkeypatch) -> None:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", "  ")
    client = create_app(make(make_config, fake_redis), fake_redis).test_client()
    assert client.get("/admin/stats", headers={"Authorization": "Bearer  "}).status_code == 404


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    auth("wrong"),
    auth(TOKEN[:-1]),
    auth(TOKEN + "x"),
])
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/admin/dead-letters"), ("GET", "/admin/stats"), ("POST", "/admin/dead-letters/replay"),
    ("DELETE", "/admin/dead-letters/x"),
])
def test_a_missing_or_wrong_token_is_401_with_www_authenticate(fake_app, headers, method, path) -> None:
    client, config, r = fake_app
    entry_id = add_dead_letter(r, config, minutes_ago=1)

    resp = client.open(path.replace("/x", f"/{entry_id}"), method=method, headers=headers, json={"all": True})

    assert resp.status_code == 401
    assert resp.is_json and resp.get_json()["reason"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in resp.get_data(as_text=True)
    assert deadletters.count(r, config) == 1  # nothing happened


def test_the_right_token_is_200(fake_app) -> None:
    client, _, _ = fake_app
    resp = client.get("/admin/dead-letters", headers=auth())
    assert resp.status_code == 200
    assert resp.get_json() == {"entries": [], "count": 0, "limit": 50, "offset": 0, "next_offset": None}


def test_the_token_is_read_once_when_the_app_is_created(make_config, fake_redis, monkeypatch) -> None:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", TOKEN)
    client = create_app(make(make_config, fake_redis), fake_redis).test_client()
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", "rotated-but-not-restarted-token")

    assert client.get("/admin/stats", headers=auth()).status_code == 200
    assert client.get("/admin/stats", headers=auth("rotated-but-not-restarted-token")).status_code == 401


# --------------------------------------------------------------------------- listing


def test_list_pages_newest_first_with_next_offset(fake_app) -> None:
    client, config, r = fake_app
    ids = [add_dead_letter(r, config, minutes_ago=m) for m in range(7, 0, -1)]  # ids[-1] is the newest
    newest_first = ids[::-1]

    pages, offset = [], 0
    while offset is not None:
        body = client.get(f"/admin/dead-letters?limit=3&offset={offset}", headers=auth()).get_json()
        pages.append(body)
        offset = body["next_offset"]

    assert [p["count"] for p in pages] == [3, 3, 1]
    assert [p["next_offset"] for p in pages] == [3, 6, None]
    assert [e["id"] for p in pages for e in p["entries"]] == newest_first


def test_a_page_that_ends_exactly_at_the_last_entry_has_no_next_offset(fake_app) -> None:
    client, config, r = fake_app
    for m in range(4):
        add_dead_letter(r, config, minutes_ago=m)
    body = client.get("/admin/dead-letters?limit=2&offset=2", headers=auth()).get_json()
    assert body["count"] == 2 and body["next_offset"] is None


def test_list_filters_like_the_cli(fake_app) -> None:
    client, config, r = fake_app
    crm_old = add_dead_letter(r, config, minutes_ago=90)
    crm_new = add_dead_letter(r, config, minutes_ago=5)
    add_dead_letter(r, config, minutes_ago=4, handler="warehouse")
    vox = add_dead_letter(r, config, minutes_ago=3, source="vox")

    def ids(query: str) -> list[str]:
        resp = client.get(f"/admin/dead-letters?{query}", headers=auth())
        assert resp.status_code == 200, resp.get_json()
        return [e["id"] for e in resp.get_json()["entries"]]

    assert ids("handler=crm&source=vr") == [crm_new, crm_old]
    assert ids("handler=crm&since=1h") == [vox, crm_new]
    assert ids("source=vox") == [vox]
    assert ids("error=ANSWERED%20503&until=30m") == [crm_old]
    cutoff = iso_utc(datetime.now(UTC) - timedelta(minutes=10))
    assert ids(f"since={cutoff}&handler=crm") == [vox, crm_new]


@pytest.mark.parametrize("query", [
    "stage=bogus", "since=yesterday", "since=1h&until=2h", "limit=0", "limit=1001", "limit=abc", "offset=-1",
    "hander=crm", "handler=",
])
def test_bad_query_parameters_are_400_with_a_reason(fake_app, query) -> None:
    client, _, _ = fake_app
    resp = client.get(f"/admin/dead-letters?{query}", headers=auth())
    assert resp.status_code == 400
    assert resp.get_json()["reason"]


def test_show_returns_the_entry_in_full_with_secrets_redacted(fake_app) -> None:
    client, config, r = fake_app
    body = json.dumps({"event": "call.completed", "data": {"call_id": "c1", "apiKey": TEST_ENV["CRM_SECRET"]}})
    entry_id = add_dead_letter(r, config, minutes_ago=1, body=body.encode(),
                           message=f"echoed {TEST_ENV['VR_SECRET']} back")

    resp = client.get(f"/admin/dead-letters/{entry_id}", headers=auth())

    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    for value in TEST_ENV.values():
        assert value not in text
    assert TOKEN not in text
    shown = resp.get_json()
    assert shown["id"] == entry_id and shown["handler"] == "crm" and shown["attempts"]
    assert json.loads(shown["delivery"]["body"])["data"] == {"call_id": "c1", "apiKey": "[redacted]"}
    assert shown["error"]["message"] == "echoed [redacted] back"


def test_show_of_an_unknown_id_is_404_json(fake_app) -> None:
    client, _, _ = fake_app
    resp = client.get("/admin/dead-letters/nope", headers=auth())
    assert resp.status_code == 404 and resp.get_json()["reason"]


# --------------------------------------------------------------------------- replay and delete


@pytest.mark.redis
def test_replay_one_enqueues_its_job_once_and_a_second_replay_is_404(real_app) -> None:
    client, config, r = real_app
    entry_id = add_dead_letter(r, config, minutes_ago=1)

    dry = client.post(f"/admin/dead-letters/{entry_id}/replay", headers=auth(), json={"dry_run": True})
    assert dry.status_code == 200 and dry.get_json()["status"] == "would_replay"
    assert deadletters.count(r, config) == 1

    first = client.post(f"/admin/dead-letters/{entry_id}/replay", headers=auth())
    second = client.post(f"/admin/dead-letters/{entry_id}/replay", headers=auth())

    assert first.status_code == 200
    assert first.get_json()["status"] == "replayed" and first.get_json()["job_id"]
    assert second.status_code == 404
    assert r.llen(f"rq:queue:{queue_name(config)}") == 1
    assert deadletters.count(r, config) == 0


@pytest.mark.redis
def test_replay_of_an_entry_whose_handler_was_removed_is_409(real_app, make_config, redis_server) -> None:
    _, config, r = real_app
    entry_id = add_dead_letter(r, config, minutes_ago=1, handler="gone")
    client = create_app(config, r).test_client()

    resp = client.post(f"/admin/dead-letters/{entry_id}/replay", headers=auth())

    assert resp.status_code == 409
    assert "no longer configured" in resp.get_json()["reason"]
    assert deadletters.count(r, config) == 1


@pytest.mark.redis
def test_bulk_replay_takes_filters_in_the_body(real_app) -> None:
    client, config, r = real_app
    crm = {add_dead_letter(r, config, minutes_ago=m) for m in (1, 2, 3)}
    wh = add_dead_letter(r, config, minutes_ago=4, handler="warehouse")

    dry = client.post("/admin/dead-letters/replay", headers=auth(), json={"all": True, "dry_run": True})
    assert dry.status_code == 200 and dry.get_json()["counts"] == {"would_replay": 4}
    assert deadletters.count(r, config) == 4

    resp = client.post("/admin/dead-letters/replay", headers=auth(), json={"handler": "crm", "since": "1h"})

    body = resp.get_json()
    assert resp.status_code == 200
    assert body["counts"] == {"replayed": 3} and body["matched"] == 3
    assert {x["id"] for x in body["results"]} == crm
    assert [e["id"] for e in deadletters.list_entries(r, config)] == [wh]
    assert r.llen(f"rq:queue:{queue_name(config)}") == 3


@pytest.mark.redis
def test_bulk_replay_limit_caps_one_call(real_app) -> None:
    client, config, r = real_app
    for m in range(5):
        add_dead_letter(r, config, minutes_ago=m)
    resp = client.post("/admin/dead-letters/replay", headers=auth(), json={"all": True, "limit": 2})
    assert resp.get_json()["counts"] == {"replayed": 2}
    assert deadletters.count(r, config) == 3


@pytest.mark.parametrize(("data", "content_type"), [
    ("", "application/json"),
    ("{not json", "application/json"),
    ("[1, 2]", "application/json"),
    ("{}", "application/json"),
    ('{"all": false}', "application/json"),
    ('{"all": "yes"}', "application/json"),
    ('{"handler": ""}', "application/json"),
    ('{"handler": null}', "application/json"),
    ('{"hander": "crm"}', "application/json"),
    ('{"stage": "bogus"}', "application/json"),
    ('{"since": "last week"}', "application/json"),
    ('{"all": true, "limit": 0}', "application/json"),
    ('{"all": true, "dry_run": "no"}', "application/json"),
    (b"\xff\xfe", "application/octet-stream"),
])
def test_bulk_replay_refuses_bad_bodies_and_never_replays_everything_by_accident(fake_app, data, content_type
                                                                                ) -> None:
    client, config, r = fake_app
    add_dead_letter(r, config, minutes_ago=1)

    resp = client.post("/admin/dead-letters/replay", headers=auth(), data=data, content_type=content_type)

    assert resp.status_code == 400
    assert resp.get_json()["reason"]
    assert deadletters.count(r, config) == 1


@pytest.mark.parametrize("data", ["[true]", '{"dry_run": 1}', '{"force": true}', "nope"])
def test_replay_one_refuses_bad_bodies(fake_app, data) -> None:
    client, config, r = fake_app
    entry_id = add_dead_letter(r, config, minutes_ago=1)
    resp = client.post(f"/admin/dead-letters/{entry_id}/replay", headers=auth(), data=data,
                       content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["reason"]
    assert deadletters.count(r, config) == 1


def test_delete_removes_the_entry_then_404s(fake_app) -> None:
    client, config, r = fake_app
    entry_id = add_dead_letter(r, config, minutes_ago=1)

    first = client.delete(f"/admin/dead-letters/{entry_id}", headers=auth())
    second = client.delete(f"/admin/dead-letters/{entry_id}", headers=auth())

    assert first.status_code == 200 and first.get_json() == {"status": "purged", "id": entry_id}
    assert second.status_code == 404
    assert deadletters.count(r, config) == 0


def test_redis_down_is_503_with_retry_after_not_500(make_config, monkeypatch) -> None:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", TOKEN)
    # No client-side retries: the test is about the answer, not redis-py's backoff.
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    client = create_app(make(make_config, down), down).test_client()

    for resp in (client.get("/admin/dead-letters", headers=auth()), client.get("/admin/stats", headers=auth()),
                 client.post("/admin/dead-letters/replay", headers=auth(), json={"all": True})):
        assert resp.status_code == 503
        assert resp.headers["Retry-After"]
        assert resp.get_json()["reason"]


# --------------------------------------------------------------------------- end to end over HTTP


@pytest.mark.redis
def test_after_an_outage_a_filtered_http_replay_delivers_every_dead_letter(make_config, real_redis, redis_server,
                                                                            http_sink, monkeypatch) -> None:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", TOKEN)
    http_sink.status_by_path["/crm"] = 503
    try:
        config = make(make_config, real_redis, url=http_sink.url, redis_url=redis_server.url)
        client = create_app(config, real_redis).test_client()
        for i in range(3):
            raw = json.dumps({"event": "call.completed", "data": {"call_id": f"c{i}", "outcome": "INTERESTED"}})
            headers = volumereach.sign(raw.encode(), TEST_ENV["VR_SECRET"].encode())
            assert client.post("/webhooks/vr", data=raw, headers=headers).status_code == 200
        build_worker(config, redis=real_redis).work(burst=True)
        listed = client.get("/admin/dead-letters?handler=crm", headers=auth()).get_json()
        assert listed["count"] == 3

        http_sink.status_by_path["/crm"] = 200
        resp = client.post("/admin/dead-letters/replay", headers=auth(), json={"handler": "crm"})
        assert resp.get_json()["counts"] == {"replayed": 3}
        build_worker(config, redis=real_redis).work(burst=True)

        assert [(r.path, r.status) for r in http_sink.delivered("/crm")] == [("/crm", 200)] * 3
        assert client.get("/admin/dead-letters", headers=auth()).get_json()["count"] == 0
    finally:
        runtime.install(None)
