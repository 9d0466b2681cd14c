"""The e2e harness: the HTTP sink, pipeline processes and polling, shared by the fixtures and the tests."""

from __future__ import annotations

import json
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
from hooklane.operators.cli.local_redis import free_port
from hooklane.shared import config as config_mod
from hooklane.shared import counters
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import PROVIDERS

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
    "E2E_RETELL_API_KEY": "key_e2e0retell0api0key",
    # Telnyx's source holds a private key (its public key verifies) so the tests can sign as Telnyx.
    "E2E_TELNYX_KEY": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJSktMTU5PUFFS\n"
                      "-----END PRIVATE KEY-----\n",
    "E2E_SW_SECRET": "whsec_ZTJlLXN0YW5kYXJkLXdlYmhvb2tzLXNlY3JldA==",
    "E2E_TWILIO_TOKEN": "e2e-twilio-auth-token",
    "E2E_VAPI_SECRET": "e2e-vapi-hmac-secret",
    "E2E_HMAC_SECRET": "e2e-hmac-secret",
}

SINK_MAX_ATTEMPTS = 3

# Short waits so retries, abandoned-job recovery and dead letters happen within a test's time.
E2E_WORKER: dict[str, Any] = {
    "backoff_base_seconds": 0.5,
    "backoff_multiplier": 1,
    "backoff_cap_seconds": 1,
    "job_timeout_seconds": 10,
    "abandoned_grace_seconds": 5,
    "maintenance_interval_seconds": 2,
}

CONFIG = """
[redis]
url = "{redis_url}"

{tables}

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

[[sources]]
name = "retell"
provider = "retell"
secrets = ["env:E2E_RETELL_API_KEY"]

[[sources]]
name = "telnyx"
provider = "telnyx"
secrets = ["env:E2E_TELNYX_KEY"]

[[sources]]
name = "standardwebhooks"
provider = "standardwebhooks"
secrets = ["env:E2E_SW_SECRET"]
# Twilio signs the URL it calls: here the one ingest sees, so no public_url.
[[sources]]
name = "twilio"
provider = "twilio"
secrets = ["env:E2E_TWILIO_TOKEN"]

[[sources]]
name = "vapi"
provider = "vapi"
secrets = ["env:E2E_VAPI_SECRET"]
auth = "hmac"

# Stripe's scheme as configuration: Stripe-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
[[sources]]
name = "hmac"
provider = "hmac"
secrets = ["env:E2E_HMAC_SECRET"]
signature_header = "Stripe-Signature"
signature_key = "v1"
timestamp_header = "Stripe-Signature"
timestamp_key = "t"
template = "{{timestamp}}.{{body}}"

# Right token, wrong network: every request from this test machine is 403.
[[sources]]
name = "voicekit-office"
provider = "voicekit"
token = "env:E2E_VOICEKIT_TOKEN"
allow_ips = ["10.0.0.0/8"]

[handlers.sink]
type = "http"
url = "http://127.0.0.1:{sink_port}/events"
{handler}

[[routes]]
events = ["*"]
handlers = ["sink"]
"""




def render_config(redis_url: str, sink_port: int, *, worker: dict[str, Any] = E2E_WORKER,
                  ingest: dict[str, Any] | None = None, handler: dict[str, Any] | None = None) -> str:
    """CONFIG for this Redis and sink, its [worker], [ingest] and sink handler settings given as values."""
    handler = {"timeout_seconds": 5, "max_attempts": SINK_MAX_ATTEMPTS, **(handler or {})}
    tables = f"[worker]\n{_toml(worker)}\n\n[ingest]\n{_toml(ingest or {})}"
    return CONFIG.format(redis_url=redis_url, sink_port=sink_port, tables=tables, handler=_toml(handler))


def _toml(values: dict[str, Any]) -> str:
    # Numbers, strings and lists of them: their JSON spelling is also TOML.
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())


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


# --------------------------------------------------------------------------- events


def predicted(source: str, wire: sending.WireDelivery, received_at: str = "2026-01-01T00:00:00.000000Z",
              delivery_id: str | None = None) -> dict[str, Any]:
    """The canonical event the provider's normalizer makes of exactly these bytes and the headers ingest keeps."""
    provider = PROVIDERS[source_provider(source)]
    headers = {k.lower(): v for k, v in wire.headers.items()}
    kept = {k: headers[k] for k in provider.forward_headers if k in headers}
    delivery = Delivery(id="e2e", source=source, provider=provider.name, received_at=received_at, body=wire.body,
                        headers=kept, delivery_id=delivery_id)
    return provider.normalize_payload(payload_of(source, wire), delivery).to_dict()


def payload_of(source: str, wire: sending.WireDelivery) -> Any:
    """The payload as the worker reads the sent bytes (twilio's forms, everyone else's JSON)."""
    provider = PROVIDERS[source_provider(source)]
    if provider.parse is None:
        return json.loads(wire.body)
    return provider.parse(Delivery(id="e2e", source=source, provider=provider.name, received_at="", body=wire.body))


def source_provider(source: str) -> str:
    return "voicekit" if source == "voicekit-office" else source


def event_id(source: str, wire: sending.WireDelivery) -> str:
    return predicted(source, wire)["id"]


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


def pids_under(root: int) -> set[int]:
    """`root` and every live descendant, from /proc (the processes `hooklane dev` started)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def is_running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"  # a zombie has exited; only its parent's wait() is missing


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

    @classmethod
    def configure(cls, redis_url: str, sink: Sink, workdir: Path, **settings: Any) -> Pipeline:
        """A pipeline's config (render_config's `settings`) written to `workdir`; no process started yet."""
        config_path = workdir / "hooklane.toml"
        config_path.write_text(render_config(redis_url, sink.port, **settings), encoding="utf-8")
        env = base_env(HOOKLANE_CONFIG=str(config_path))
        # Its own timeout: a test's reads must fail, not hang, while the fault is on.
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        return cls(base_url=f"http://127.0.0.1:{free_port()}", config=config_mod.load(config_path, env=env),
                   config_path=config_path, redis=client, sink=sink, env=env, procs=[])

    @property
    def workdir(self) -> Path:
        return self.config_path.parent

    def start_ingest(self, workers: int = 2) -> Proc:
        bind = self.base_url.removeprefix("http://")
        return self._start("ingest", [*HOOKLANE, "ingest", "--bind", bind, "--workers", str(workers)])

    def start_worker(self, name: str | None = None) -> Proc:
        """`hooklane worker` named `name` (its RQ worker name too, so a test finds the one running a job)."""
        name = name or f"worker-{sum(p.name.startswith('worker') for p in self.procs) + 1}"
        return self._start(name, [*HOOKLANE, "worker", "--name", name])

    def _start(self, name: str, argv: list[str]) -> Proc:
        proc = start_process(name, argv, self.env, self.workdir)
        self.procs.append(proc)
        return proc

    def ready(self) -> bool:
        self.check_alive()
        try:
            return self.session.get(f"{self.base_url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(self.ready, timeout, "ingest /readyz", self.explain)

    def close(self) -> None:
        """Intake first, then the workers (each finishes its job), each by its own PID."""
        for proc in self.procs:
            proc.stop()
        self.session.close()
        self.redis.close()

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
        return sending.build_delivery(src.provider, src, event_type, seq=seq, run=run, url=self.url(source), **kw)

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


