"""Prometheus metrics, scraped and parsed the way Prometheus does (prometheus_client.parser).

Counters live in the process-wide default registry and accumulate over the test session, so counter
assertions compare two scrapes (a delta); queue gauges are read from the test's freshly flushed Redis and are
asserted as absolute values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, RedisServer, free_port
from prometheus_client.parser import text_string_to_metric_families

from hooklane.ingest import http_metrics as ingest_metrics
from hooklane.ingest.app import create_app
from hooklane.shared import deadletters, logs
from hooklane.shared.config import Config
from hooklane.shared.providers import volumereach
from hooklane.shared.queue_metrics import QueueCollector
from hooklane.shared.redisconn import connect
from hooklane.workers import runtime
from hooklane.workers.main import build_worker, start_metrics_server

ROOT = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _cleanup() -> Iterator[None]:
    logs.configure("json", "WARNING")  # the worker's INFO lines are not what these tests look at
    yield
    runtime.install(None)
    logs.clear()


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def body_for(call_id: str) -> bytes:
    return json.dumps({"event": "call.completed", "data": {"call_id": call_id, "outcome": "INTERESTED"}}).encode()


def signed(body: bytes, secret: str = TEST_ENV["VR_SECRET"], delivery_id: str | None = None) -> dict[str, str]:
    headers = volumereach.sign(body, secret.encode())
    if delivery_id:
        headers["X-Webhook-Delivery-Id"] = delivery_id
    return headers


def assert_no_secret(text: str) -> None:
    for name, secret in TEST_ENV.items():
        assert secret not in text, f"{name} leaked into the metrics"


# --------------------------------------------------------------------------- ingest


def test_ingest_metrics_count_answers_reasons_sizes_and_read_the_queue(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
) -> None:
    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    client = create_app(config, real_redis).test_client()
    before = parse(client.get("/metrics").get_data(as_text=True))

    bodies = [body_for(f"call_m{n}") for n in range(3)]
    for b in bodies:
        assert client.post("/webhooks/vr", data=b, headers=signed(b)).status_code == 200
    assert client.post("/webhooks/vr", data=bodies[0], headers=signed(bodies[0], "forged")).status_code == 401
    assert client.post("/webhooks/vb/not-the-token", data=b"{}").status_code == 401
    assert client.post("/webhooks/vr", data=b"[1]", headers=signed(b"[1]")).status_code == 400

    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert_no_secret(text)
    after = parse(text)

    assert delta(before, after, "hooklane_ingest_deliveries_total", source="vr", status="200") == 3
    assert delta(before, after, "hooklane_ingest_deliveries_total", source="vr", status="401") == 1
    assert delta(before, after, "hooklane_ingest_deliveries_total", source="vb", status="401") == 1
    assert delta(before, after, "hooklane_ingest_deliveries_total", source="vr", status="400") == 1
    assert delta(before, after, "hooklane_ingest_verification_failures_total",
                 source="vr", reason="signature does not match") == 1
    assert delta(before, after, "hooklane_ingest_verification_failures_total",
                 source="vb", reason="token does not match") == 1
    assert delta(before, after, "hooklane_ingest_body_bytes_count", source="vr") == 3
    assert delta(before, after, "hooklane_ingest_body_bytes_sum", source="vr") == sum(len(b) for b in bodies)
    assert delta(before, after, "hooklane_ingest_latency_seconds_count", source="vr") == 3
    assert delta(before, after, "hooklane_ingest_latency_seconds_bucket", source="vr", le="+Inf") == 3

    q = {"queue": config.redis.prefix}
    assert value(after, "hooklane_queue_depth", **q) == 3
    assert 0 < value(after, "hooklane_queue_oldest_waiting_seconds", **q) < 30
    assert value(after, "hooklane_queue_scheduled", **q) == 0
    assert value(after, "hooklane_queue_in_progress", **q) == 0
    assert value(after, "hooklane_dead_letters") == 0
    assert value(after, "hooklane_workers", **q) == 0
    assert value(after, "hooklane_workers_heartbeat_max_age_seconds", **q) == -1
    assert value(after, "hooklane_redis_up") == 1


def test_a_scrape_while_redis_is_down_still_serves_the_counters(make_config: Callable[..., Config]) -> None:
    config = make_config()
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)  # what ingest's connection is
    data, content_type = ingest_metrics.render(dead, config)
    samples = parse(data.decode())
    assert content_type.startswith("text/plain")
    assert value(samples, "hooklane_redis_up") == 0
    assert not any(name == "hooklane_queue_depth" for name, _ in samples)
    assert any(name.startswith("hooklane_ingest_") for name, _ in samples)


def test_oldest_waiting_age_is_measured_from_the_head_of_the_queue(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
) -> None:
    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    client = create_app(config, real_redis).test_client()
    ids = []
    for n in range(2):
        b = body_for(f"call_age{n}")
        ids.append(client.post("/webhooks/vr", data=b, headers=signed(b)).json["id"])
        time.sleep(0.01)
    raw = real_redis.hget(f"rq:job:{ids[0]}", "enqueued_at").decode()
    at = datetime.strptime(raw, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    collector = QueueCollector(real_redis, config, clock=lambda: at + 42.0)
    gauges = {m.name: m.samples[0].value for m in collector.collect() if m.samples}
    assert gauges["hooklane_queue_oldest_waiting_seconds"] == pytest.approx(42.0)
    assert gauges["hooklane_queue_depth"] == 2


# --------------------------------------------------------------------------- worker


class _Answer500(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def failing_crm() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


WORKER_CONFIG = """
[worker]
backoff_base_seconds = 0
backoff_cap_seconds = 0
backoff_jitter = 0

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.log]
type = "log"

[handlers.crm]
type = "http"
url = "http://127.0.0.1:{crm_port}/hook"
max_attempts = 2

[handlers.down]
type = "http"
url = "http://127.0.0.1:{down_port}/hook"
max_attempts = 1
connect_timeout_seconds = 0.5

[[routes]]
events = ["call.*"]
handlers = ["log", "crm", "down"]
"""


def fetch(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def test_worker_endpoint_counts_events_duplicates_attempts_dead_letters_and_replays(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config], failing_crm: int,
) -> None:
    config = make_config(WORKER_CONFIG.format(crm_port=failing_crm, down_port=free_port()),
                         redis_url=redis_server.url)
    client = create_app(config, real_redis).test_client()
    event = body_for("call_w1")
    broken = json.dumps({"data": {"call_id": "call_w2"}}).encode()  # no event name: normalize fails
    for b, dlv in ((event, "dlv-1"), (event, "dlv-2"), (broken, "dlv-3")):  # dlv-2: the provider redelivers
        assert client.post("/webhooks/vr", data=b, headers=signed(b, delivery_id=dlv)).status_code == 200

    worker = build_worker(config, redis=real_redis)
    server = start_metrics_server(config, worker, 0, redis=real_redis, addr="127.0.0.1")
    port = server.server_port
    try:
        status, ctype, text = fetch(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        before = parse(text)
        assert value(before, "hooklane_queue_depth", queue="hooklane") == 3

        worker.work(burst=True)
        after = parse(fetch(port, "/metrics")[2])

        normalized = {"provider": "volumereach", "type": "call.completed"}
        assert delta(before, after, "hooklane_worker_events_normalized_total", **normalized) == 2
        assert delta(before, after, "hooklane_worker_duplicates_total", source="vr") == 1
        attempts = "hooklane_worker_handler_attempts_total"
        assert delta(before, after, attempts, handler="log", outcome="ok") == 1
        assert delta(before, after, attempts, handler="crm", outcome="retry") == 1  # inline attempt 1
        assert delta(before, after, attempts, handler="crm", outcome="dead_letter") == 1  # retry job, attempt 2
        assert delta(before, after, attempts, handler="down", outcome="dead_letter") == 1
        assert delta(before, after, attempts, handler="log", outcome="retry") == 0
        assert delta(before, after, "hooklane_worker_handler_duration_seconds_count", handler="crm") == 2
        assert delta(before, after, "hooklane_worker_handler_duration_seconds_count", handler="log") == 1
        dead = "hooklane_worker_dead_letters_total"
        assert delta(before, after, dead, stage="handler", handler="crm") == 1
        assert delta(before, after, dead, stage="handler", handler="down") == 1
        assert delta(before, after, dead, stage="normalize", handler="") == 1
        assert value(after, "hooklane_dead_letters") == 3
        assert value(after, "hooklane_queue_depth", queue="hooklane") == 0
        assert value(after, "hooklane_redis_up") == 1

        # Replays: counted once per replay, not once per run (crm's replay runs twice: a failure, then a retry).
        entries = {e["handler"] or e["stage"]: e["id"] for e in deadletters.list_entries(real_redis, config)}
        deadletters.replay(real_redis, config, entries["crm"])
        deadletters.replay(real_redis, config, entries["normalize"])
        worker.work(burst=True)
        replayed = parse(fetch(port, "/metrics")[2])
        assert delta(after, replayed, "hooklane_worker_replays_total", kind="handler") == 1
        assert delta(after, replayed, "hooklane_worker_replays_total", kind="delivery") == 1
        assert delta(after, replayed, attempts, handler="crm", outcome="retry") == 1
        assert delta(after, replayed, attempts, handler="crm", outcome="dead_letter") == 1
        assert value(replayed, "hooklane_dead_letters") == 3

        status, ctype, health = fetch(port, "/healthz")
        assert status == 200 and ctype == "application/json"
        assert json.loads(health)["worker"] == worker.name
        assert_no_secret(fetch(port, "/metrics")[2])
    finally:
        server.shutdown()
        server.server_close()


def test_a_registered_worker_shows_up_with_its_heartbeat(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
) -> None:
    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    worker = build_worker(config, redis=real_redis)
    worker.register_birth()
    try:
        worker.heartbeat()
        data, _ = ingest_metrics.render(real_redis, config)
        samples = parse(data.decode())
        assert value(samples, "hooklane_workers", queue="hooklane") == 1
        assert 0 <= value(samples, "hooklane_workers_heartbeat_max_age_seconds", queue="hooklane") < 5
    finally:
        worker.register_death()
    samples = parse(ingest_metrics.render(real_redis, config)[0].decode())
    assert value(samples, "hooklane_workers", queue="hooklane") == 0


# --------------------------------------------------------------------------- multiprocess (gunicorn workers)

_INCREMENT = textwrap.dedent("""
    import sys
    from hooklane.ingest import http_metrics as im
    from hooklane.workers import job_metrics as wm
    n = int(sys.argv[1])
    im.DELIVERIES.labels("vr", "200").inc(n)
    im.LATENCY.labels("vr").observe(0.001 * n)
    wm.handler_attempt("crm", wm.OK, 0.01)
""")

_RENDER = textwrap.dedent("""
    import redis, sys
    from hooklane.shared import config
    from hooklane.ingest import http_metrics as im
    cfg = config.loads(sys.stdin.read())
    sys.stdout.write(im.render(redis.Redis.from_url(cfg.redis.url), cfg)[0].decode())
""")


def test_multiprocess_mode_sums_every_process_and_keeps_the_queue_gauges(
    tmp_path: Path, real_redis: redis.Redis, redis_server: RedisServer,
) -> None:
    env = {**os.environ, **TEST_ENV, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "REDIS_URL": redis_server.url,
           "PYTHONPATH": str(ROOT)}

    def py(code: str, *args: str, stdin: str = "") -> str:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, input=stdin, capture_output=True,
                              text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    py(_INCREMENT, "2")
    py(_INCREMENT, "3")
    assert len(list(tmp_path.glob("counter_*.db"))) == 2, "each process writes its own file"
    samples = parse(py(_RENDER, stdin=BASE_CONFIG))

    assert value(samples, "hooklane_ingest_deliveries_total", source="vr", status="200") == 5
    assert value(samples, "hooklane_ingest_latency_seconds_count", source="vr") == 2
    assert value(samples, "hooklane_ingest_latency_seconds_sum", source="vr") == pytest.approx(0.005)
    assert value(samples, "hooklane_worker_handler_attempts_total", handler="crm", outcome="ok") == 2
    assert value(samples, "hooklane_redis_up") == 1
    assert value(samples, "hooklane_queue_depth", queue="hooklane") == 0


# --------------------------------------------------------------------------- the operations guide


def test_the_operations_guide_names_exactly_the_metrics_that_exist(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
) -> None:
    import re

    from hooklane.shared.queue_metrics import build_registry
    from hooklane.workers import job_metrics as _worker_metrics  # noqa: F401 - registers the worker metrics

    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    exposed = set()
    for family in build_registry(real_redis, config).collect():
        if family.name.startswith("hooklane_"):
            exposed.add(family.name + ("_total" if family.type == "counter" else ""))
    guide = (ROOT / "docs" / "operations.md").read_text()
    named_in_guide = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\b(hooklane_[a-z_]+)", guide)}
    assert named_in_guide == exposed, (
        f"in the guide only: {sorted(named_in_guide - exposed)}; exposed only: {sorted(exposed - named_in_guide)}")
