"""Logs that follow one delivery from ingest to its handlers, and that never carry a secret.

What is asserted is the rendered output the production handler writes to stderr (captured with capsys), so
stdlib loggers (rq, werkzeug, gunicorn, urllib3) are checked in the same form an operator sees them.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, RedisServer, free_port, parse_log_lines, set_worker_concurrency
from http_sink import HttpSink
from rq.logutils import setup_loghandlers

from hooklane.ingest.app import create_app
from hooklane.operators.admin import create_admin_app
from hooklane.shared import deadletters
from hooklane.shared import logs as hl_logging
from hooklane.shared.config import Config
from hooklane.shared.providers import volumereach
from hooklane.shared.redaction import Redactor
from hooklane.workers import runtime
from hooklane.workers.main import build_worker

ROOT = Path(__file__).resolve().parent.parent

NOW_BODY = {
    "event": "call.completed",
    "data": {"call_id": "call_corr_1", "outcome": "INTERESTED",
             "transcript": "Agent: hello\nJane: the full transcript is only in the body",
             "contact": {"name": "Jane Smith", "phone": "+15551234567"}},
}


@pytest.fixture(autouse=True)
def _logging(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Masking registered by one test (build_worker registers the config's secrets) must not help the next one.
    monkeypatch.setattr(hl_logging, "_secrets", Redactor([]))
    hl_logging.configure("json", "INFO")
    capsys.readouterr()
    yield
    runtime.install(None)
    hl_logging.clear()
    hl_logging.configure("json", "INFO")


def json_lines(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[dict[str, Any]]]:
    """Everything written to stderr, and each line parsed: a line that is not JSON fails the test."""
    err = capsys.readouterr().err
    return err, parse_log_lines(err)


def named(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [ln for ln in lines if ln.get("event") == event]


def signed(body: bytes, secret: str = TEST_ENV["VR_SECRET"], delivery_id: str | None = None) -> dict[str, str]:
    headers = volumereach.sign(body, secret.encode())
    if delivery_id:
        headers["X-Webhook-Delivery-Id"] = delivery_id
    return headers


# --------------------------------------------------------------------------- routing of stdlib loggers


def test_rq_adds_no_plain_handler_once_configured(real_redis: redis.Redis, redis_server: RedisServer,
                                                  make_config: Callable[..., Config],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    build_worker(config, redis=real_redis).work(burst=True, logging_level="INFO")

    for name in ("rq.worker", "rq.job"):
        lg = logging.getLogger(name)
        assert lg.handlers == [] and lg.propagate, f"{name} got its own handler: {lg.handlers}"
    ours = [h for h in logging.getLogger().handlers if isinstance(h, hl_logging._StderrHandler)]
    assert len(ours) == 1
    _, lines = json_lines(capsys)
    assert any(ln.get("logger") == "rq.worker" for ln in lines), "rq's own lines are missing"


def test_configure_takes_back_loggers_rq_set_up_first(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    try:
        setup_loghandlers("INFO", name="rq.worker")  # what `rq worker` / Worker.work does with no handler around
        assert logging.getLogger("rq.worker").handlers and not logging.getLogger("rq.worker").propagate
        hl_logging.configure("json", "INFO")
    finally:
        root.handlers[:] = [h for h in root.handlers if h not in saved] + [
            h for h in saved if not isinstance(h, hl_logging._StderrHandler)]
    capsys.readouterr()
    logging.getLogger("rq.worker").info("Worker %s: started", "w1")
    _, lines = json_lines(capsys)
    assert [ln["event"] for ln in lines] == ["Worker w1: started"]


def test_gunicorn_and_werkzeug_request_lines_lose_their_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    from gunicorn import glogging
    from gunicorn.config import Config as GunicornConfig

    cfg = GunicornConfig()
    cfg.set("accesslog", "-")  # off in ingest/gunicorn.conf.py; an operator may turn it on
    glog = glogging.Logger(cfg)
    for lg in (glog.error_log, glog.access_log):  # what gunicorn.conf.py's logger class does after setup
        lg.handlers[:] = []
        lg.propagate = True
    token = TEST_ENV["VOIPBIN_TOKEN"]
    glog.info("Booting worker with pid: %s", 4242)

    class Resp:
        status = "401 UNAUTHORIZED"
        sent = 57
        headers: list[tuple[str, str]] = []

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": f"/webhooks/vb/{token}", "QUERY_STRING": f"token={token}",
               "RAW_URI": f"/webhooks/vb/{token}?token={token}", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "10.0.0.7"}
    glog.access(Resp(), [], environ, timedelta(milliseconds=3))
    logging.getLogger("werkzeug").info('127.0.0.1 - - "POST /webhooks/vb/%s?token=%s HTTP/1.1" 200 -', token, token)

    err, lines = json_lines(capsys)
    assert token not in err
    (boot,) = named(lines, "Booting worker with pid: 4242")
    assert boot["logger"] == "gunicorn.error"
    (access,) = [ln for ln in lines if ln.get("logger") == "gunicorn.access"]
    assert '"POST /webhooks/vb/***?token=[redacted] HTTP/1.1" 401' in access["event"]
    (dev,) = [ln for ln in lines if ln.get("logger") == "werkzeug"]
    assert "/webhooks/vb/***?token=[redacted]" in dev["event"]


def test_each_redaction_layer_on_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    log = hl_logging.get_logger("hooklane.test")
    # 1. credential-named keys, whatever the value
    log.info("keys", token="tok-value-1", Authorization="Bearer abc-value-2", body='{"a": "body-value-3"}')
    # 2. URL userinfo and credential query parameters in any string, no configured secret needed
    log.info("urls", url="https://user:pw-value-4@crm.example/x?api_key=key-value-5&page=2")
    # 3. a configured secret value anywhere in the line, here inside a stdlib message
    hl_logging.add_secret_values(["cfg-secret-value-6"])
    logging.getLogger("rq.worker").error("handler said: auth failed for cfg-secret-value-6")
    err, lines = json_lines(capsys)
    for n in range(1, 7):
        assert f"value-{n}" not in err, f"value-{n} leaked"
    assert named(lines, "urls")[0]["url"] == "https://[redacted]@crm.example/x?api_key=[redacted]&page=2"
    assert "auth failed for [redacted]" in lines[-1]["event"]


def test_ingest_masks_its_configured_secrets_in_any_library_line(config: Config,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    create_app(config, fakeredis.FakeRedis())
    token = TEST_ENV["VOIPBIN_TOKEN"]
    logging.getLogger("redis.connection").warning("could not connect to redis://h:6379/0 as %s", token)
    err, (line,) = json_lines(capsys)
    assert token not in err and line["event"].endswith("as [redacted]")


# --------------------------------------------------------------------------- hooklane's own lines

def test_a_logger_cached_before_configure_follows_its_level_and_format(capsys: pytest.CaptureFixture[str]) -> None:
    log = hl_logging.get_logger("hooklane.test.cached")
    log.info("first")  # structlog caches this logger's pipeline here
    hl_logging.configure("json", "WARNING")
    log.info("dropped below the level")
    log.warning("kept", n=1)
    _, lines = json_lines(capsys)
    assert [ln["event"] for ln in lines] == ["first", "kept"]
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "hooklane.test.cached"

    hl_logging.configure("console", "DEBUG")
    log.debug("now readable", n=2)
    err = capsys.readouterr().err
    assert "now readable" in err and "n=2" in err and not err.lstrip().startswith("{")


def test_an_exception_line_carries_its_traceback_as_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    log = hl_logging.get_logger("hooklane.test.exc")
    try:
        raise ValueError("boom at https://crm.example/x?token=tok-value-9")
    except ValueError:
        log.exception("failed", delivery_id="d1")
    err, (line,) = json_lines(capsys)
    assert line["level"] == "error" and line["delivery_id"] == "d1"
    assert "ValueError: boom at https://crm.example/x?token=[redacted]" in line["exception"]
    assert "tok-value-9" not in err


_THREADS_SCRIPT = """
import threading
from hooklane.shared import logs as hl_logging
hl_logging.configure("json", "INFO")
log = hl_logging.get_logger("hooklane.test.threads")
filler = "x" * 20000  # several pipe buffers: an unlocked write would be split and interleaved

def emit(n):
    for i in range(100):
        log.info("line", thread=n, i=i, filler=filler)

threads = [threading.Thread(target=emit, args=(n,)) for n in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_lines_written_from_many_threads_to_a_pipe_never_interleave() -> None:
    # A real pipe, not pytest's in-memory capture: only there does a long write go out in pieces.
    out = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    lines = [json.loads(raw) for raw in out.stderr.splitlines()]  # a split line fails here
    assert {(ln["thread"], ln["i"]) for ln in lines} == {(n, i) for n in range(8) for i in range(100)}
    assert len(lines) == 800


# --------------------------------------------------------------------------- one delivery, ingest -> worker


def test_one_delivery_carries_its_ids_from_ingest_to_every_worker_line(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
    capsys: pytest.CaptureFixture[str], worker_concurrency: int,
) -> None:
    hl_logging.configure("json", "DEBUG")  # RQ's per-job lines are debug: they must carry the job's ids too
    config = make_config(set_worker_concurrency(BASE_CONFIG, worker_concurrency), redis_url=redis_server.url)
    body = json.dumps(NOW_BODY).encode()
    resp = create_app(config, real_redis).test_client().post(
        "/webhooks/vr", data=body, headers=signed(body, delivery_id="dlv_corr_1"))
    assert resp.status_code == 200, resp.json
    request_id = resp.json["id"]

    build_worker(config, redis=real_redis).work(burst=True)
    _, lines = json_lines(capsys)

    (accepted,) = named(lines, "delivery.accepted")
    assert accepted["request_id"] == request_id
    assert accepted["delivery_id"] == "dlv_corr_1"
    assert (accepted["source"], accepted["provider"]) == ("vr", "volumereach")

    worker_lines = [ln for ln in lines if ln.get("logger", "").startswith(("hooklane.worker", "hooklane.handler"))]
    by_event = {ln["event"]: ln for ln in worker_lines}
    # One line per handler attempt (handler.done), the log handler's own line, and event.normalized (debug).
    assert {"event.logged", "handler.done", "event.normalized"} <= set(by_event), sorted(by_event)
    event_id = by_event["handler.done"]["event_id"]
    assert event_id == by_event["event.logged"]["canonical_event"]["id"]
    assert event_id.startswith("vr:") and "call_corr_1" in event_id
    for ln in worker_lines:
        assert ln["request_id"] == request_id, ln
        assert ln["delivery_id"] == accepted["delivery_id"], ln
        assert (ln["source"], ln["provider"]) == (accepted["source"], accepted["provider"]), ln
        assert ln["event_id"] == event_id, ln
        assert ln["job_id"] == request_id, ln  # the envelope id is the RQ job id
    assert by_event["handler.done"]["handler"] == "log" and by_event["handler.done"]["attempt"] == 1

    # RQ's own line about this job carries the job's context too (bound before RQ logs it).
    rq_job_lines = [ln for ln in lines if ln.get("logger") == "rq.worker" and "Job OK" in ln["event"]]
    assert rq_job_lines and all(ln.get("request_id") == request_id for ln in rq_job_lines)


def test_context_of_one_job_does_not_leak_into_the_next(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
    capsys: pytest.CaptureFixture[str], worker_concurrency: int,
) -> None:
    hl_logging.configure("json", "DEBUG")  # RQ's "dequeued" line is debug
    config = make_config(set_worker_concurrency(BASE_CONFIG, worker_concurrency), redis_url=redis_server.url)
    client = create_app(config, real_redis).test_client()
    ids = []
    for n in (1, 2):
        body = json.dumps({**NOW_BODY, "data": {**NOW_BODY["data"], "call_id": f"call_seq_{n}"}}).encode()
        resp = client.post("/webhooks/vr", data=body, headers=signed(body, delivery_id=f"dlv_seq_{n}"))
        ids.append(resp.json["id"])

    build_worker(config, redis=real_redis).work(burst=True)
    _, lines = json_lines(capsys)
    # RQ's "dequeued" line for job 2 is written after job 1 ran: it must not claim job 1's ids.
    second_pickup = [ln for ln in lines if ln.get("logger") == "rq.worker" and ids[1] in ln["event"]
                     and "Job OK" not in ln["event"]]
    assert second_pickup
    for ln in second_pickup:
        assert ln.get("request_id") in (None, ids[1]), ln


REQUEST_CONTEXT = ("request_id", "delivery_id", "source", "provider")


def test_no_line_after_a_request_carries_its_ids(make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The delivery id is the client's to choose: an attacker's value must not label later, unrelated lines.
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", "admin-token-for-leak-test")
    config, fake = make_config(), fakeredis.FakeRedis()
    client = create_app(config, fake).test_client()
    admin = create_admin_app(config, fake).test_client()  # in production its own process; here the same thread
    body = json.dumps(NOW_BODY).encode()
    delivery = client.post("/webhooks/vr", data=body, headers=signed(body, delivery_id="dlv_leak_1"))
    assert delivery.status_code == 200

    logging.getLogger("gunicorn.error").warning("Invalid request from ip=127.0.0.1: Invalid HTTP method")
    assert admin.get("/admin/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert admin.post("/admin/dead-letters/replay", json={"all": True, "dry_run": True},
                      headers={"Authorization": "Bearer admin-token-for-leak-test"}).status_code == 200
    refused = client.post("/webhooks/vr", data=body, headers={"X-Webhook-Delivery-Id": "dlv_leak_2"})
    assert refused.status_code == 401
    _, lines = json_lines(capsys)

    (accepted,) = named(lines, "delivery.accepted")
    assert accepted["delivery_id"] == "dlv_leak_1"
    later = lines[lines.index(accepted) + 1:]
    assert {ln["event"] for ln in later} >= {"admin.refused", "admin.replay_bulk", "delivery.refused"}
    for ln in later:
        assert ln.get("request_id") is None and ln.get("delivery_id") != "dlv_leak_1", ln
        if not ln["event"].startswith("delivery."):  # a delivery's own lines name its source, nothing else does
            assert not any(key in ln for key in REQUEST_CONTEXT), ln


# --------------------------------------------------------------------------- redaction


@pytest.fixture
def failing_crm(http_sink: HttpSink) -> HttpSink:
    http_sink.default_status = 500
    return http_sink


CRM_PASSWORD = "crm-PASSWORD-7f3a9c"
CRM_API_KEY = "crm-APIKEY-51d2e8"
DOWN_PASSWORD = "down-PASSWORD-b4c2"
DOWN_API_KEY = "down-APIKEY-9e1f"
HEADER_KEY = "hdr-KEY-0a9b8c7d"
WRONG_TOKEN = "wrong-TOKEN-presented-1234"

REDACTION_CONFIG = """
[worker]
backoff_base_seconds = 0
backoff_cap_seconds = 0
backoff_jitter = 0

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET", "env:VR_SECRET_OLD"]

[[sources]]
name = "vb"
provider = "voipbin"
token = "env:VOIPBIN_TOKEN"

[handlers.log]
type = "log"

[handlers.crm]
type = "http"
url = "http://crmuser:{crm_password}@127.0.0.1:{crm_port}/hook?api_key={crm_api_key}"
secret = "env:CRM_SECRET"
max_attempts = 2
headers = {{ "X-Api-Key" = "{header_key}" }}

[handlers.down]
type = "http"
url = "http://downuser:{down_password}@127.0.0.1:{down_port}/hook?api_key={down_api_key}"
max_attempts = 1
connect_timeout_seconds = 0.5

[[routes]]
events = ["*"]
handlers = ["log"]

[[routes]]
events = ["call.*"]
sources = ["vr"]
handlers = ["crm", "down"]
"""


def test_no_secret_signature_or_body_in_any_line_from_accept_to_dead_letter(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
    failing_crm: HttpSink, capsys: pytest.CaptureFixture[str],
) -> None:
    # DEBUG: the levels at which libraries (rq, urllib3) print arguments and URLs are the ones to check.
    hl_logging.configure("json", "DEBUG")
    config = make_config(REDACTION_CONFIG.format(
        crm_password=CRM_PASSWORD, crm_port=failing_crm.port, crm_api_key=CRM_API_KEY, header_key=HEADER_KEY,
        down_password=DOWN_PASSWORD, down_port=free_port(), down_api_key=DOWN_API_KEY,
    ), redis_url=redis_server.url)
    client = create_app(config, real_redis).test_client()
    body = json.dumps(NOW_BODY).encode()
    good = signed(body, delivery_id="dlv_redact_1")
    forged = signed(body, secret="an-attacker-secret")
    vb_body = json.dumps({"type": "call_hungup", "data": {"id": "vb-call-1", "status": "hangup"}}).encode()
    not_an_event = json.dumps({"data": {"call_id": "x"}, "note": "no event name: normalize fails"}).encode()

    answers = [
        client.post("/webhooks/vr", data=body, headers=good).status_code,                      # accept
        client.post("/webhooks/vr", data=body, headers=forged).status_code,                    # bad signature
        client.post(f"/webhooks/vb/{TEST_ENV['VOIPBIN_TOKEN']}", data=vb_body).status_code,    # path token
        client.post(f"/webhooks/vb?token={WRONG_TOKEN}", data=vb_body).status_code,            # wrong token
        client.post("/webhooks/vr", data=not_an_event, headers=signed(not_an_event)).status_code,
    ]
    assert answers == [200, 401, 200, 401, 200]
    build_worker(config, redis=real_redis).work(burst=True)
    logging.getLogger("werkzeug").info('127.0.0.1 - - "POST /webhooks/vb/%s HTTP/1.1" 200 -',
                                       TEST_ENV["VOIPBIN_TOKEN"])
    err, lines = json_lines(capsys)

    # The paths under test really ran: without them a clean log would prove nothing.
    assert len(named(lines, "delivery.accepted")) == 3 and len(named(lines, "delivery.refused")) == 2
    assert named(lines, "handler.retry_scheduled") and named(lines, "job.dead_lettered")
    assert named(lines, "handler.dead_lettered") and named(lines, "handler.done")
    assert len(failing_crm.requests) == 2, "the crm handler did not reach the server twice"
    stages = sorted((e["stage"], e["handler"]) for e in deadletters.list_entries(real_redis, config))
    assert stages == [("handler", "crm"), ("handler", "down"), ("normalize", None)]
    assert any(ln.get("logger") == "urllib3.connectionpool" for ln in lines), "DEBUG lines were not captured"

    forbidden = {
        **{f"TEST_ENV[{k}]": v for k, v in TEST_ENV.items()},
        "crm url password": CRM_PASSWORD, "crm url api key": CRM_API_KEY, "crm header": HEADER_KEY,
        "down url password": DOWN_PASSWORD, "down url api key": DOWN_API_KEY,
        "presented wrong token": WRONG_TOKEN,
        "signature header": good["X-Webhook-Signature"], "forged signature": forged["X-Webhook-Signature"],
        "signature digest": good["X-Webhook-Signature"].removeprefix("sha256="),
        "full body": body.decode(), "full body (base64)": base64.b64encode(body).decode(),
        "full body (JSON-escaped)": json.dumps(body.decode())[1:-1],
        "vb body": vb_body.decode(), "normalize-failed body": not_an_event.decode(),
        "normalize-failed body (JSON-escaped)": json.dumps(not_an_event.decode())[1:-1],
    }
    for what, value in forbidden.items():
        for raw in err.splitlines():
            assert value not in raw, f"{what} leaked into a log line: {raw[:300]}"


# --------------------------------------------------------------------------- levels


RETRY_CONFIG = """
[worker]
backoff_base_seconds = 0
backoff_cap_seconds = 0
backoff_jitter = 0

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.crm]
type = "http"
url = "http://127.0.0.1:{port}/hook"
max_attempts = 3

[[routes]]
events = ["*"]
handlers = ["crm"]
"""


def test_a_retry_is_one_warning_without_traceback_and_the_dead_letter_is_the_error(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
    failing_crm: HttpSink, capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(RETRY_CONFIG.format(port=failing_crm.port), redis_url=redis_server.url)
    body = json.dumps(NOW_BODY).encode()
    assert create_app(config, real_redis).test_client().post(
        "/webhooks/vr", data=body, headers=signed(body)).status_code == 200

    build_worker(config, redis=real_redis).work(burst=True)  # attempt 1 inline, 2 and 3 as run_handler jobs
    _, lines = json_lines(capsys)

    assert len(failing_crm.requests) == 3
    assert [ln["level"] for ln in lines if ln["event"] in ("handler.retry_scheduled", "job.retry_scheduled",
                                                           "job.dead_lettered")] == ["warning", "warning", "error"]
    errors = [ln for ln in lines if ln["level"] in ("error", "critical")]
    assert [ln["event"] for ln in errors] == ["job.dead_lettered"], errors
    assert not [ln for ln in lines if "exception" in ln or "Traceback" in ln["event"]]


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_rq_maintenance_and_per_job_success_lines_are_debug(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    hl_logging.configure("json", level)
    capsys.readouterr()
    rq_log = logging.getLogger("rq.worker")
    rq_log.setLevel(logging.DEBUG)  # as `worker.work(logging_level=...)` leaves it: the filter must decide

    rq_log.info("Worker %s: cleaning registries for queue: %s", "w1", "hooklane")
    rq_log.info("Worker %s: %s: %s (%s)", "w1", "hooklane", "process_delivery(vr, j1)", "j1")
    rq_log.info("Worker %s: %s: %s (%s)", "w1", "hooklane", "Job OK", "j1")
    rq_log.info("Successfully completed %s job in %ss on worker %s", "process_delivery(vr, j1)", "0:00:00.1", "w1")
    rq_log.info("Worker %s: job %s result is kept for %s seconds", "w1", "j1", 1)
    rq_log.info("Worker %s: started", "w1")
    rq_log.warning("Worker %s: %s: %s (%s)", "w1", "hooklane", "anything", "j1")  # only info is demoted

    _, lines = json_lines(capsys)
    routine = [
        "Worker w1: cleaning registries for queue: hooklane",
        "Worker w1: hooklane: process_delivery(vr, j1) (j1)",
        "Worker w1: hooklane: Job OK (j1)",
        "Successfully completed process_delivery(vr, j1) job in 0:00:00.1s on worker w1",
        "Worker w1: job j1 result is kept for 1 seconds",
    ]
    expected = [(line, "debug") for line in routine] if level == "DEBUG" else []
    expected += [("Worker w1: started", "info"), ("Worker w1: hooklane: anything (j1)", "warning")]
    assert [(ln["event"], ln["level"]) for ln in lines] == expected


def test_an_exception_a_signal_handler_raises_while_a_line_is_written_is_not_swallowed(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    class Stop(Exception):
        pass

    class Interrupted(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise Stop  # as RQ's SIGTERM handler would, arriving while the line is being written

    monkeypatch.setattr(hl_logging, "_RAISED_THROUGH", ())
    hl_logging.raise_through_handlers(Stop)
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, hl_logging._StderrHandler)]
    monkeypatch.setattr(handler, "format", lambda record: Interrupted().filter(record))

    with pytest.raises(Stop):
        logging.getLogger("rq.worker").warning("a line")
    assert "Logging error" not in capsys.readouterr().err
