"""Worker processes dying and stopping: nothing accepted is lost.

Real `hooklane worker` subprocesses on the private Redis. The SIGKILL test
kills the worker's whole process group (worker + its scheduler child), like a
lost machine, in the middle of a handler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import set_worker_concurrency

from ingest.app import create_app
from shared import deadletters
from shared.config import Config
from shared.providers import volumereach

pytestmark = pytest.mark.redis

TESTS_DIR = Path(__file__).parent

CONFIG = """
[redis]
url = "{url}"

[worker]
job_timeout_seconds = 4
abandoned_grace_seconds = 1
maintenance_interval_seconds = 1
delivery_retry_intervals = [0]

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
        self.env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "HOOKLANE_TEST_REDIS_URL": redis_url,
                    "HOOKLANE_LOG_FORMAT": "json"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "--config", str(self.config_path), "worker"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the worker and the scheduler it forks
        )
        self.procs.append(proc)
        return proc

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
    body = volumereach.samples()["call.completed"]
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
    # job_timeout (4) + abandoned_grace (1) + maintenance_interval (1), plus start-up slack.
    assert recovery < 4 + 1 + 1 + 8, f"recovery took {recovery:.1f}s"
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
