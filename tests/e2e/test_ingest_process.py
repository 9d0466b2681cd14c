"""`hooklane ingest` as the process operators run (gunicorn), against a private redis-server this test starts
and stops: an outage from the first second and while serving, and what its log lines say between requests.

Each test starts its own ingest (one gunicorn worker, so every request meets the same process and a killed
worker leaves nobody else to answer) and stops it, and its Redis, by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TEST_ENV, RedisServer, free_port, parse_log_lines

from e2e.harness import HOOKLANE, Proc, base_env, start_process, wait_for
from hooklane.shared.providers import volumereach

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-e2e-4d1c9b7a"
CONFIG = """
[redis]
url = "{redis_url}"

[ingest]
retry_after_seconds = 7

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.log]
type = "log"

[[routes]]
events = ["*"]
handlers = ["log"]
"""


class Ingest:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.port = port

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=5, **kw)

    def deliver(self, delivery_id: str) -> requests.Response:
        body = json.dumps({"event": "call.completed", "data": {"call_id": delivery_id}}).encode()
        headers = {**volumereach.sign(body, TEST_ENV["VR_SECRET"].encode()), "X-Webhook-Delivery-Id": delivery_id}
        return requests.post(self.url + "/webhooks/vr", data=body, headers=headers, timeout=5)

    def answers(self, path: str = "/healthz") -> bool:
        self.check_alive()
        try:
            return self.get(path).status_code == 200
        except requests.RequestException:
            return False

    def check_alive(self) -> None:
        if not self.alive():
            pytest.fail(f"ingest exited ({self.proc.proc.returncode})\n{self.proc.tail()}")

    def workers(self) -> set[int]:
        return _children(self.proc.proc.pid)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after the parenthesised command name
            found.add(int(entry))
    return found


@pytest.fixture
def stopped_redis() -> Iterator[RedisServer]:
    """A private redis-server, not running yet: the test starts it when the outage should end."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Any]:
    started: list[Ingest] = []

    def start(redis_url: str) -> Ingest:
        config = tmp_path / "hooklane.toml"
        config.write_text(CONFIG.format(redis_url=redis_url), encoding="utf-8")
        port = free_port()
        env = base_env(HOOKLANE_CONFIG=str(config), HOOKLANE_ADMIN_TOKEN=ADMIN_TOKEN, **TEST_ENV)
        proc = start_process("ingest", [*HOOKLANE, "ingest", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                             env, tmp_path)
        ingest = Ingest(proc, port)
        started.append(ingest)
        return ingest

    yield start
    for ingest in started:
        ingest.proc.stop()


def _refused_for_now(resp: requests.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "7"
    assert resp.json()["status"] == "refused"


def _accepts_at_once_when_redis_is_back(ingest: Ingest, server: RedisServer) -> None:
    server.start()
    up = time.monotonic()
    # The first delivery after Redis came back is accepted: no restart, no reconnect delay.
    accepted = ingest.deliver("dlv-after-outage")
    assert accepted.status_code == 200, accepted.text
    assert ingest.get("/readyz").status_code == 200
    assert time.monotonic() - up < 2
    client = server.client()
    assert accepted.json()["id"].encode() in client.lrange("rq:queue:hooklane", 0, -1)
    client.close()
    ingest.check_alive()


def test_ingest_started_while_redis_is_down_serves_and_accepts_once_it_is_up(stopped_redis: RedisServer,
                                                                             start_ingest: Any) -> None:
    ingest = start_ingest(stopped_redis.url)
    wait_for(ingest.answers, 30, "ingest /healthz with Redis down", lambda: ingest.proc.tail())
    _refused_for_now(ingest.get("/readyz"))
    _refused_for_now(ingest.deliver("dlv-outage-1"))
    _accepts_at_once_when_redis_is_back(ingest, stopped_redis)


def test_a_worker_replaced_during_an_outage_boots_and_the_master_stays(stopped_redis: RedisServer,
                                                                       start_ingest: Any) -> None:
    stopped_redis.start()
    ingest = start_ingest(stopped_redis.url)
    wait_for(lambda: ingest.answers("/readyz"), 30, "ingest /readyz", lambda: ingest.proc.tail())
    assert ingest.deliver("dlv-before-outage").status_code == 200
    stopped_redis.stop()
    _refused_for_now(ingest.deliver("dlv-outage-1"))

    # Killed here; max-requests or a timeout replace a worker alike. It is the only one, so /healthz answering
    # again means the replacement booted, and the master is still there.
    (victim,) = ingest.workers()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: ingest.workers() - {victim}, 30, "a replacement gunicorn worker", lambda: ingest.proc.tail())
    wait_for(ingest.answers, 30, "/healthz from the replacement worker", lambda: ingest.proc.tail())
    _refused_for_now(ingest.get("/readyz"))
    _refused_for_now(ingest.deliver("dlv-outage-2"))
    _accepts_at_once_when_redis_is_back(ingest, stopped_redis)


def test_no_log_line_after_a_delivery_carries_its_ids(start_ingest: Any, tmp_path: Path) -> None:
    with RedisServer.running() as server:
        ingest = start_ingest(server.url)
        wait_for(lambda: ingest.answers("/readyz"), 30, "ingest /readyz", lambda: ingest.proc.tail())
        leaked_id = "dlv-chosen-by-the-client-7a1e"
        resp = ingest.deliver(leaked_id)
        assert resp.status_code == 200, resp.text

        # A request gunicorn cannot parse never reaches the app: gunicorn logs "Invalid request" itself.
        with socket.create_connection(("127.0.0.1", ingest.port), timeout=5) as raw:
            raw.sendall(b"NOT-HTTP\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400")
        assert ingest.get("/admin/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        replay = requests.post(ingest.url + "/admin/dead-letters/replay", json={"all": True, "dry_run": True},
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
        assert replay.status_code == 200, replay.text
        ingest.proc.stop()  # the worker's and the master's exit lines come last

    lines = parse_log_lines(ingest.proc.log.read_text(encoding="utf-8"))
    (accepted,) = [ln for ln in lines if ln["event"] == "delivery.accepted"]
    assert accepted["delivery_id"] == leaked_id
    later = lines[lines.index(accepted) + 1:]
    events = " | ".join(ln["event"] for ln in later)
    for expected in ("Invalid request", "admin.refused", "admin.replay_bulk", "Worker exiting"):
        assert expected in events, events
    for ln in later:
        assert not {"request_id", "delivery_id", "source", "provider"} & set(ln), ln
