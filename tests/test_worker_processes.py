"""Worker processes dying and stopping: nothing accepted is lost.

Real `hooklane worker` subprocesses on the private Redis. The SIGKILL test
kills the worker's whole process group (worker + its scheduler child), like a
lost machine, in the middle of a handler. The Redis-fault tests stop and
restart a Redis of their own (SHUTDOWN SAVE, then the same port and directory:
a restart that keeps the data), with the handler posting to a local HTTP sink.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from conftest import RedisServer, free_port, parse_log_lines, set_worker_concurrency
from http_sink import HttpSink

from hooklane.ingest.app import create_app
from hooklane.shared import deadletters
from hooklane.shared.config import Config
from hooklane.shared.providers import volumereach

pytestmark = pytest.mark.redis

TESTS_DIR = Path(__file__).parent

CONFIG = """
[redis]
url = "{url}"

[worker]
job_timeout_seconds = 4
abandoned_grace_seconds = 1
maintenance_interval_seconds = 1
# Long on purpose: a killed worker's job must come back within the bound anyway (it skips this wait).
delivery_retry_intervals = [30]

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.h]
type = "python"
target = "support.handlers:{handler}"

[[routes]]
events = ["*"]
handlers = ["h"]
"""


class Workers:
    def __init__(self, config_path: Path, redis_url: str) -> None:
        self.config_path = config_path
        # DEBUG: RQ's per-pass "cleaning registries" line (debug since it is routine) tells when a worker is in
        # its work loop, signal handlers installed.
        self.env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "HOOKLANE_TEST_REDIS_URL": redis_url,
                    "HOOKLANE_LOG_FORMAT": "json", "HOOKLANE_LOG_LEVEL": "DEBUG"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_paths: dict[int, Path] = {}

    def start(self) -> subprocess.Popen[bytes]:
        log_path = self.config_path.with_name(f"worker-{len(self.procs)}.log")
        with log_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hooklane.operators.cli", "--config", str(self.config_path), "worker"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True,  # its own process group: the worker and the scheduler it forks
            )
        self.procs.append(proc)
        self.log_paths[proc.pid] = log_path
        return proc

    def log_text(self, proc: subprocess.Popen[bytes]) -> str:
        return self.log_paths[proc.pid].read_text(encoding="utf-8", errors="replace")

    def lines(self, proc: subprocess.Popen[bytes]) -> list[dict]:
        running = proc.poll() is None  # asked before the read: a process that has exited wrote whole lines
        return parse_log_lines(self.log_text(proc), still_writing=running)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            else:
                # Reap a scheduler child the worker may have left behind.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def setup(tmp_path: Path, redis_server, make_config: Callable[..., Config], handler: str,
          concurrency: int = 1) -> tuple[Config, Workers]:
    text = set_worker_concurrency(CONFIG.format(url=redis_server.url, handler=handler), concurrency)
    path = tmp_path / "hooklane.toml"
    path.write_text(text)
    return make_config(text, redis_url=redis_server.url), Workers(path, redis_server.url)


def deliver(cfg: Config, r: redis.Redis, call_id: str) -> None:
    body = volumereach.PROVIDER.samples()["call.completed"]
    body["data"]["call_id"] = call_id
    raw = json.dumps(body).encode()
    client = create_app(cfg, r).test_client()
    resp = client.post("/webhooks/vr", data=raw, headers=volumereach.sign(raw, b"vr-secret-current"))
    assert resp.status_code == 200


@pytest.fixture
def workers_cleanup() -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for w in made:
        w.stop_all()


def test_a_worker_killed_mid_handler_loses_nothing_and_recovery_is_bounded(
    tmp_path, redis_server, real_redis, make_config, workers_cleanup, worker_concurrency
):
    cfg, workers = setup(tmp_path, redis_server, make_config, "hang_once", worker_concurrency)
    workers_cleanup.append(workers)
    deliver(cfg, real_redis, "call_kill")
    victim = workers.start()
    wait_for(lambda: real_redis.llen("test:started") == 1, 30, "the handler to start")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    workers.start()
    wait_for(lambda: real_redis.llen("test:calls") == 1, 40, "the event to be delivered after the kill")
    recovery = time.monotonic() - killed_at
    # job_timeout (4) + abandoned_grace (1) + maintenance_interval (1) from the job's start, plus the
    # new worker's start-up; not the retry interval (30 s), nor the dead scheduler's lock (61 s).
    assert recovery < 4 + 1 + 1 + 3, f"recovery took {recovery:.1f}s"
    [event] = [json.loads(x) for x in real_redis.lrange("test:calls", 0, -1)]
    assert event["id"] == "vr:call.completed:call_kill"
    entries = deadletters.list_entries(real_redis, cfg)
    assert entries == [], json.dumps([{k: e[k] for k in ("stage", "attempts", "traceback")} for e in entries])


def test_sigterm_lets_the_current_job_finish_then_exits(tmp_path, redis_server, real_redis, make_config,
                                                        workers_cleanup, worker_concurrency):
    cfg, workers = setup(tmp_path, redis_server, make_config, "slow", worker_concurrency)
    workers_cleanup.append(workers)
    deliver(cfg, real_redis, "call_term")
    proc = workers.start()
    wait_for(lambda: real_redis.llen("test:started") == 1, 30, "the handler to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert real_redis.llen("test:calls") == 1, "the job in progress finished before the worker exited"


# --------------------------------------------------------------------------- Redis faults

HTTP_CONFIG = """
[redis]
url = "{url}"

[worker]
job_timeout_seconds = {job_timeout}
abandoned_grace_seconds = 1
maintenance_interval_seconds = 1
delivery_retry_intervals = [{retry_interval}]
backoff_base_seconds = {backoff}
backoff_multiplier = 1
backoff_cap_seconds = {backoff}
backoff_jitter = 0
worker_class = "{worker_class}"
concurrency = {concurrency}
{extra_worker}

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.crm]
type = "http"
url = "{sink}/crm"
timeout_seconds = 15
max_attempts = 3

[[routes]]
events = ["*"]
handlers = ["crm"]
"""


def http_setup(tmp_path: Path, server: RedisServer, make_config: Callable[..., Config], sink: HttpSink,
               *, job_timeout: int = 20, backoff: float = 1, worker_class: str = "simple",
               retry_interval: float = 30, concurrency: int = 1, extra_worker: str = "") -> tuple[Config, Workers]:
    text = HTTP_CONFIG.format(url=server.url, sink=sink.url, job_timeout=job_timeout, backoff=backoff,
                              worker_class=worker_class, retry_interval=retry_interval, concurrency=concurrency,
                              extra_worker=extra_worker)
    path = tmp_path / "hooklane.toml"
    path.write_text(text)
    return make_config(text, redis_url=server.url), Workers(path, server.url)


@pytest.fixture
def http_workers(tmp_path, disposable_redis, make_config, http_sink, workers_cleanup,
                 worker_concurrency) -> Callable[..., tuple]:
    """`http_workers(**http_setup options)` -> (config, Workers, client) on this test's own Redis and sink;
    at each `worker_concurrency` unless the test names its worker class (the fork worker runs one job)."""

    def make(**options: Any) -> tuple[Config, Workers, redis.Redis]:
        if "worker_class" not in options:
            options["concurrency"] = worker_concurrency
        cfg, workers = http_setup(tmp_path, disposable_redis, make_config, http_sink, **options)
        workers_cleanup.append(workers)
        return cfg, workers, disposable_redis.client()

    return make


def stop_keeping_data(server: RedisServer) -> None:
    """Redis goes away (saving its data, as a restart with persistence would); `server.start()` brings it back."""
    assert server.proc is not None
    try:
        server.client(socket_timeout=5).shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closed the connection on its way out
    server.proc.wait(timeout=10)
    server.proc = None


def pipeline_idle(r: redis.Redis, cfg: Config) -> bool:
    queue = f"rq:queue:{cfg.redis.prefix}"
    return not any((r.llen(queue), r.zcard(f"rq:wip:{cfg.redis.prefix}"),
                    r.zcard(f"rq:scheduled:{cfg.redis.prefix}")))


def settled(r: redis.Redis, cfg: Config, call_id: str) -> bool:
    """Nothing queued, running or scheduled, and the event's dedupe record says every handler is done."""
    return pipeline_idle(r, cfg) and bool(r.hexists(f"{cfg.redis.prefix}:seen:vr:call.completed:{call_id}", "done"))


def events(lines: list[dict], name: str) -> list[dict]:
    return [line for line in lines if line.get("event") == name]


def assert_rode_out_one_outage(workers: Workers, proc: subprocess.Popen[bytes]) -> list[dict]:
    assert proc.poll() is None, f"the worker exited:\n{workers.log_text(proc)[-3000:]}"
    lines = workers.lines(proc)
    # One line when the outage began and one when it ended, per process (the worker, its scheduler, a work
    # horse), not one per retry.
    down = Counter(line["pid"] for line in events(lines, "redis.unavailable"))
    up = Counter(line["pid"] for line in events(lines, "redis.recovered"))
    assert down[proc.pid] == 1 and down == up and set(down.values()) == {1}, workers.log_text(proc)[-3000:]
    assert not [line for line in lines if "unhandled exception" in str(line.get("event"))]
    return lines


@pytest.mark.parametrize(("worker_class", "concurrency"), [("simple", 1), ("simple", 8), ("fork", 1)])
def test_a_redis_outage_longer_than_the_handler_leaves_the_worker_up_and_delivers_once(
    http_workers, disposable_redis, http_sink, worker_class, concurrency
):
    cfg, workers, r = http_workers(worker_class=worker_class, concurrency=concurrency)
    http_sink.script((200, {}, 3.0))  # the handler is in flight for 3 s
    proc = workers.start()
    deliver(cfg, r, "call_blip")
    wait_for(lambda: len(http_sink.requests) == 1, 30, "the handler to reach the sink")

    stop_keeping_data(disposable_redis)  # the handler finishes while Redis is down; its settle step must wait
    time.sleep(4)
    assert proc.poll() is None, f"the worker exited during the outage:\n{workers.log_text(proc)[-3000:]}"
    disposable_redis.start()

    wait_for(lambda: settled(r, cfg, "call_blip"), 30, "the job to settle after the outage")
    time.sleep(2)  # room for a wrong second run (an abandoned-job retry) to show up
    assert [req.event["id"] for req in http_sink.requests] == ["vr:call.completed:call_blip"]
    assert deadletters.list_entries(r, cfg) == []
    assert_rode_out_one_outage(workers, proc)

    # And it carries on: the next delivery goes through the same process.
    deliver(cfg, r, "call_after")
    wait_for(lambda: len(http_sink.delivered()) == 2, 15, "a delivery after the outage")


def test_an_outage_longer_than_the_job_timeout_retries_the_job_with_the_same_idempotency_key(
    http_workers, disposable_redis, http_sink
):
    cfg, workers, r = http_workers(job_timeout=3, retry_interval=1)
    http_sink.script((200, {}, 1.0))
    proc = workers.start()
    deliver(cfg, r, "call_long")
    wait_for(lambda: len(http_sink.requests) == 1, 30, "the handler to reach the sink")
    stop_keeping_data(disposable_redis)
    time.sleep(5)  # the job's 3 s timeout strikes while it waits to settle
    disposable_redis.start()

    wait_for(lambda: settled(r, cfg, "call_long"), 30, "the retried job to settle")
    # The settle was lost with the timeout, so the re-run resumes and posts again: same event, same key.
    assert len(http_sink.delivered()) == 2
    assert len({(req.event["id"], req.key) for req in http_sink.delivered()}) == 1
    assert deadletters.list_entries(r, cfg) == []
    assert_rode_out_one_outage(workers, proc)


def test_a_worker_started_while_redis_is_down_waits_then_works(
    http_workers, disposable_redis, http_sink
):
    port = free_port()
    cfg, workers, r = http_workers(extra_worker=f"metrics_port = {port}")
    deliver(cfg, r, "call_queued")  # accepted before the outage, waiting in the queue
    stop_keeping_data(disposable_redis)

    proc = workers.start()
    wait_for(lambda: events(workers.lines(proc), "redis.unavailable"), 20, "the worker to say Redis is down")
    time.sleep(2)
    assert proc.poll() is None, f"the worker gave up:\n{workers.log_text(proc)[-3000:]}"
    assert "Traceback" not in workers.log_text(proc)

    disposable_redis.start()
    wait_for(lambda: len(http_sink.delivered()) == 1, 20, "the queued delivery once Redis is back")
    assert http_sink.delivered()[0].event["id"] == "vr:call.completed:call_queued"
    assert_rode_out_one_outage(workers, proc)
    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["redis"] == "ok"


def test_a_waiting_worker_says_so_on_its_health_endpoint(http_workers, disposable_redis):
    port = free_port()
    _, workers, _ = http_workers(extra_worker=f"metrics_port = {port}")
    proc = workers.start()
    wait_for(lambda: "cleaning registries" in workers.log_text(proc), 20, "the worker to start")
    stop_keeping_data(disposable_redis)
    wait_for(lambda: events(workers.lines(proc), "redis.unavailable"), 20, "the worker to notice the outage")
    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200, "alive: a restart would not bring Redis back"
    assert health.json()["redis"] == "unavailable"


def test_a_full_redis_under_noeviction_pauses_the_worker_until_memory_is_raised(
    http_workers, disposable_redis, http_sink
):
    cfg, workers, r = http_workers()
    proc = workers.start()
    deliver(cfg, r, "call_before")
    wait_for(lambda: len(http_sink.delivered()) == 1 and pipeline_idle(r, cfg), 20,
             "a delivery before Redis fills up")

    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", str(int(r.info("memory")["used_memory"] * 0.9)))
    try:
        # Idle, the worker heartbeats and dequeues (both writes) about once per maintenance interval.
        wait_for(lambda: events(workers.lines(proc), "redis.unavailable"), 15, "the worker to meet the full Redis")
        time.sleep(3)
        assert proc.poll() is None, f"the worker exited on OOM:\n{workers.log_text(proc)[-3000:]}"
    finally:
        r.config_set("maxmemory", "0")

    deliver(cfg, r, "call_after")
    wait_for(lambda: len(http_sink.delivered()) == 2, 20, "a delivery once memory is raised")
    lines = assert_rode_out_one_outage(workers, proc)
    assert {line["error"] for line in events(lines, "redis.unavailable")} == {"OutOfMemoryError"}


def test_sigterm_while_redis_is_down_exits_promptly(http_workers, disposable_redis):
    _, workers, _ = http_workers()
    proc = workers.start()
    # Its first maintenance pass runs inside RQ's work loop, after the SIGTERM handler is installed.
    wait_for(lambda: "cleaning registries" in workers.log_text(proc), 20, "the worker to start")
    stop_keeping_data(disposable_redis)
    wait_for(lambda: events(workers.lines(proc), "redis.unavailable"), 20, "the worker to notice the outage")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) >= 0, "killed by the signal instead of shutting down"
    lines = workers.lines(proc)
    assert events(lines, "worker.teardown_skipped"), workers.log_text(proc)[-3000:]
    assert not [line for line in lines if "unhandled exception" in str(line.get("event"))]
    assert "Traceback" not in workers.log_text(proc)


def test_a_dead_workers_scheduler_lock_is_taken_over_so_handler_retries_go_on(
    http_workers, disposable_redis, http_sink
):
    cfg, workers, r = http_workers(backoff=3)
    http_sink.script((503, {}, 0.0))  # first attempt fails: a retry is scheduled 3 s later
    victim = workers.start()
    deliver(cfg, r, "call_retry")
    wait_for(lambda: r.zcard(f"rq:scheduled:{cfg.redis.prefix}") == 1, 20, "the handler retry to be scheduled")
    assert r.get(f"rq:scheduler-lock:{cfg.redis.prefix}"), "the victim's scheduler holds the lock"
    os.killpg(victim.pid, signal.SIGKILL)  # worker and scheduler at once, the lock left behind
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    survivor = workers.start()
    wait_for(lambda: len(http_sink.delivered()) == 1, 40, "the retry after the scheduler's death")
    took = time.monotonic() - killed_at
    # Silent for SCHEDULER_STALE_AFTER_SECONDS (10), then the next maintenance pass (1): not RQ's 61 s lock.
    assert took < 10 + 1 + 4, f"the retry waited {took:.1f}s"
    assert events(workers.lines(survivor), "scheduler.stale_lock_released")


def test_lines_outside_a_job_carry_no_ids_of_an_earlier_one(http_workers, http_sink):
    cfg, workers, r = http_workers()
    http_sink.script((200, {}, 2.0))
    proc = workers.start()
    deliver(cfg, r, "call_ctx")
    wait_for(lambda: len(http_sink.requests) == 1, 20, "the handler to be in flight")
    proc.send_signal(signal.SIGTERM)  # warm shutdown: the job finishes, then the worker stops
    proc.wait(timeout=20)
    assert len(http_sink.delivered()) == 1

    lines = workers.lines(proc)
    job_ids = ("request_id", "delivery_id", "event_id", "job_id", "source")
    job_done = next(i for i, line in enumerate(lines) if line["event"] == "handler.done")
    job_id = lines[job_done]["job_id"]
    after = [line for line in lines[job_done + 1:] if job_id not in line["event"]]  # not RQ's own job lines
    shutdown = [line for line in lines if "shut down" in line["event"] or "stopping" in line["event"]]
    leaked = [line for line in after + shutdown if any(k in line for k in job_ids)]
    assert leaked == [], leaked
    assert shutdown and events(after, "worker.stopped"), "the worker logged its shutdown"
