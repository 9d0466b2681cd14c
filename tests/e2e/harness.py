"""The e2e harness: the HTTP sink, pipeline processes and polling, shared by the fixtures and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from http_sink import HttpSink, SinkRequest
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from hooklane.operators import sending
from hooklane.shared import counters
from hooklane.shared.config import Config

ROOT = Path(__file__).resolve().parents[2]
VENV_HOOKLANE = Path(sys.executable).with_name("hooklane")
# The installed console script when there is one (what users run), else the same entry point via -c.
HOOKLANE = [str(VENV_HOOKLANE)] if VENV_HOOKLANE.exists() else [
    sys.executable, "-c", "import sys; from hooklane.operators.cli import main; sys.exit(main(sys.argv[1:]))"]

E2E_ENV = {
    "E2E_VOLUMEREACH_SECRET": "e2e-volumereach-secret",
    "E2E_VOXPRIA_SECRET": "e2e-voxpria-secret",
    "E2E_VOLUBILE_SECRET": "e2e-volubile-secret",
    "E2E_VOIPBIN_TOKEN": "e2e-voipbin-token",
    "E2E_VOICEKIT_TOKEN": "e2e-voicekit-token",
}

SINK_MAX_ATTEMPTS = 3

CONFIG = """
[redis]
url = "{redis_url}"

[worker]
backoff_base_seconds = 0.5
backoff_multiplier = 1
backoff_cap_seconds = 1
job_timeout_seconds = 10
abandoned_grace_seconds = 5
maintenance_interval_seconds = 2

[[sources]]
name = "volumereach"
provider = "volumereach"
secrets = ["env:E2E_VOLUMEREACH_SECRET"]

[[sources]]
name = "voxpria"
provider = "voxpria"
secrets = ["env:E2E_VOXPRIA_SECRET"]

[[sources]]
name = "volubile"
provider = "volubile"
secrets = ["env:E2E_VOLUBILE_SECRET"]

[[sources]]
name = "voipbin"
provider = "voipbin"
token = "env:E2E_VOIPBIN_TOKEN"

[[sources]]
name = "voicekit"
provider = "voicekit"
token = "env:E2E_VOICEKIT_TOKEN"
allow_ips = ["127.0.0.1/32"]

# Right token, wrong network: every request from this test machine is 403.
[[sources]]
name = "voicekit-office"
provider = "voicekit"
token = "env:E2E_VOICEKIT_TOKEN"
allow_ips = ["10.0.0.0/8"]

[handlers.sink]
type = "http"
url = "http://127.0.0.1:{sink_port}/events"
timeout_seconds = 5
max_attempts = {max_attempts}

[[routes]]
events = ["*"]
handlers = ["sink"]
"""


# --------------------------------------------------------------------------- polling


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str] = str) -> Any:
    """Poll `predicate` until truthy (returned) or fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{explain()}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- the sink


class Sink:
    """The e2e tests' view of the shared HttpSink: requests by event id (the Idempotency-Key) and an outage."""

    def __init__(self, http: HttpSink) -> None:
        self.http = http

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def failing(self) -> bool:
        return self.http.default_status == 503

    @failing.setter
    def failing(self, value: bool) -> None:
        # 503 is transient: the worker retries it, then dead-letters, which is the outage the tests want.
        self.http.default_status = 503 if value else 200

    def snapshot(self) -> list[SinkRequest]:
        return self.http.requests

    def delivered(self, ids: set[str] | None = None) -> list[SinkRequest]:
        """Requests answered 2xx, optionally only for these event ids (Idempotency-Key)."""
        return [r for r in self.http.delivered() if ids is None or r.key in ids]

    def attempts(self, ids: set[str]) -> list[SinkRequest]:
        return [r for r in self.http.requests if r.key in ids]


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            # start_new_session made it a group leader: its group is exactly what it spawned.
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=5)


def start_process(name: str, argv: list[str], env: dict[str, str], logdir: Path, cwd: Path | None = None) -> Proc:
    log = logdir / f"{name}.log"
    # Output to a file, not a pipe: a pipe nobody reads fills up and blocks the child.
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd or ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Proc(name, proc, log)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HOOKLANE_CONFIG", "HOOKLANE_BIND")}
    env.update(E2E_ENV)
    env["HOOKLANE_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


@dataclass
class Pipeline:
    base_url: str
    config: Config
    config_path: Path
    redis: redis.Redis
    sink: Sink
    env: dict[str, str]
    procs: list[Proc]
    session: requests.Session = field(default_factory=requests.Session)

    def explain(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.proc.pid}, exit {p.proc.poll()}) ---\n{p.tail()}" for p in self.procs)

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.proc.poll() is not None]
        if dead:
            pytest.fail(f"pipeline process died\n{self.explain()}")

    def url(self, source: str) -> str:
        return f"{self.base_url}/webhooks/{source}"

    def deliver(self, source: str, wire: sending.WireDelivery) -> requests.Response:
        """POST one built delivery to `source` the way `hooklane send` does."""
        url = sending.with_suffix(self.url(source), wire.url_suffix)
        return self.session.post(url, data=wire.body, headers=wire.headers, timeout=10)

    def build(self, source: str, event_type: str | None = None, *, seq: int, run: str,
              **kw: Any) -> sending.WireDelivery:
        src = self.config.sources[source]
        return sending.build_delivery(src.provider, src, event_type, seq=seq, run=run, **kw)

    def hooklane(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*HOOKLANE, *args], env=env or self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def wait_delivered(self, ids: set[str], timeout: float = 30) -> list[SinkRequest]:
        def done() -> list[SinkRequest] | None:
            self.check_alive()
            got = self.sink.delivered(ids)
            return got if {r.key for r in got} >= ids else None

        return wait_for(done, timeout, f"{len(ids)} event(s) at the sink: {sorted(ids)[:5]}…", self.explain)

    def idle(self) -> bool:
        """Nothing queued, running or scheduled: every accepted delivery has been settled."""
        prefix = self.config.redis.prefix
        return (
            self.redis.llen(f"rq:queue:{prefix}") == 0
            and StartedJobRegistry(prefix, connection=self.redis).count == 0
            and ScheduledJobRegistry(prefix, connection=self.redis).count == 0
        )

    def wait_idle(self, timeout: float = 30) -> None:
        def quiet() -> bool:
            self.check_alive()
            return self.idle()

        wait_for(quiet, timeout, "the queue to drain", self.explain)

    def stat(self, kind: str) -> int:
        return counters.recent(self.redis, self.config.redis.prefix, kind, minutes=60)


