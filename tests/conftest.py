"""Shared fixtures.

Real-Redis tests use a private `redis-server` this session starts on a free
port (never the machine's 6379), flushed before each test. A missing
redis-server binary is an error, not a skip: those tests must run in CI.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from http_sink import HttpSink

from hooklane.operators.cli.local_redis import find_redis_server, free_port, redis_server_argv, wait_until_answers
from hooklane.shared import config as cfg_mod
from hooklane.shared import deadletters
from hooklane.shared.config import Config
from hooklane.shared.envelope import iso_utc
from hooklane.shared.providers.base import Request
from hooklane.shared.records import Attempt, DeadLetter, ErrorSummary

FIXTURES = Path(__file__).parent / "fixtures"

# Secrets the test configs reference; set once so every config loads.
TEST_ENV = {
    "VR_SECRET": "vr-secret-current",
    "VR_SECRET_OLD": "vr-secret-previous",
    "VOXPRIA_SECRET": "whsec_xyz789",
    "VOLUBILE_SECRET": "volubile-webhook-secret",
    "VOIPBIN_TOKEN": "vb-url-token-123",
    "VOICEKIT_TOKEN": "vk-url-token-456",
    "CRM_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "RETELL_API_KEY": "key_5f0c9a3e1b7d4c2a8e6f",
    "RETELL_API_KEY_OLD": "key_2b8d6f4a0c9e7b5d3f1a",
    # Telnyx: the account public keys (base64 of 32 bytes) of the private keys below.
    "TELNYX_PUBLIC_KEY": "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=",
    "TELNYX_PUBLIC_KEY_OLD": "2inpWwLgD/oVZFd1+x0roiKhlDOV7qBrlOLAV7e+adA=",
    "SW_SECRET": "whsec_KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/",
    "SW_SECRET_OLD": "whsec_RkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9gYWJjZGU=",
}
# Telnyx keeps its private key; these stand in for it (Ed25519 seeds 1..32 and 101..132, PKCS#8 PEM).
TELNYX_SIGNING_KEY = (b"-----BEGIN PRIVATE KEY-----\n"
                      b"MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g\n"
                      b"-----END PRIVATE KEY-----\n")
TELNYX_SIGNING_KEY_OLD = (b"-----BEGIN PRIVATE KEY-----\n"
                          b"MC4CAQAwBQYDK2VwBCIEIGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOE\n"
                          b"-----END PRIVATE KEY-----\n")


class RedisServer:
    """A private redis-server process; `stop()` / `start()` simulate an outage.

    `appendfsync` ("everysec" or "always") turns the append-only file on, as docs/operations.md asks of
    production, so a restart keeps what Redis acknowledged; without it a restart starts empty.
    """

    def __init__(self, appendfsync: str | None = None, directory: str | os.PathLike[str] | None = None) -> None:
        binary = find_redis_server()
        if binary is None:
            pytest.fail("no redis-server: the real-Redis tests need the system's or the embedded-redis extra's "
                        "(`make test` installs the extra when the system has none)")
        self.binary = binary
        self.appendfsync = appendfsync
        self.dir = str(directory) if directory is not None else tempfile.mkdtemp(prefix="hooklane-redis-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return Path(self.dir) / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = redis_server_argv(self.binary, self.port, self.dir, appendfsync=self.appendfsync,
                                 logfile=self.logfile)
        self.proc = proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_until_answers(self.port, lambda: proc.poll() is None):
            raise RuntimeError(f"private redis-server did not start on port {self.port}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: Redis's own shutdown (the AOF is flushed); SIGKILL: a crash, only what it wrote survives."""
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kw)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[RedisServer]:
        """A server started now, stopped and its directory removed on exit."""
        server = cls()
        server.start()
        try:
            yield server
        finally:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.running() as server:
        yield server


@pytest.fixture
def real_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    if redis_server.proc is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    """A downstream on 127.0.0.1 answering 200 until the test says otherwise (see http_sink.py)."""
    with HttpSink() as sink:
        yield sink


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variables but the test's own (a machine's lower-case http_proxy would win over them)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def fake_redis() -> redis.Redis:
    return fakeredis.FakeRedis()


@pytest.fixture(autouse=True)
def _test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("HOOKLANE_CONFIG", raising=False)
    monkeypatch.setenv("HOOKLANE_LOG_FORMAT", "json")


BASE_CONFIG = """
[redis]
url = "redis://127.0.0.1:6379/15"

[worker]
backoff_base_seconds = 0.2
backoff_cap_seconds = 1.0

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET", "env:VR_SECRET_OLD"]

[[sources]]
name = "vox"
provider = "voxpria"
secrets = ["env:VOXPRIA_SECRET"]

[[sources]]
name = "vol"
provider = "volubile"
secrets = ["env:VOLUBILE_SECRET"]

[[sources]]
name = "vb"
provider = "voipbin"
token = "env:VOIPBIN_TOKEN"

[[sources]]
name = "vk"
provider = "voicekit"
token = "env:VOICEKIT_TOKEN"
allow_ips = ["127.0.0.0/8", "10.0.0.0/8"]

[handlers.log]
type = "log"

[[routes]]
events = ["*"]
handlers = ["log"]
"""


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """Build a Config from TOML text (default: one source per provider, a log handler)."""

    def _make(text: str = BASE_CONFIG, redis_url: str | None = None, env: dict[str, str] | None = None) -> Config:
        environ = {**os.environ, **TEST_ENV, **(env or {})}
        if redis_url:
            environ["REDIS_URL"] = redis_url
        else:
            environ.pop("REDIS_URL", None)
        return cfg_mod.loads(text, env=environ)

    return _make


@pytest.fixture(params=[1, 8], ids=lambda n: f"concurrency{n}")
def worker_concurrency(request: pytest.FixtureRequest) -> int:
    """Worker tests run twice: one job at a time (RQ's SimpleWorker) and 8 at once (workers/threaded.py)."""
    return request.param


def set_worker_concurrency(text: str, concurrency: int) -> str:
    """Config TOML text with `[worker] concurrency` set (the section is added when the text has none)."""
    if "[worker]" not in text:
        return text + f"\n[worker]\nconcurrency = {concurrency}\n"
    return text.replace("[worker]", f"[worker]\nconcurrency = {concurrency}", 1)


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


def is_payload_file(path: Path) -> bool:
    """A provider payload fixture (``<type>[--<variant>].<json|form>``), not an expected event or the vectors."""
    return path.suffix in (".json", ".form") and not path.name.endswith(".expected.json") \
        and path.name != "vectors.json"


def request_of(url: str, method: str = "POST") -> Request:
    """The request view ingest builds for `url` (the query string kept raw, as received)."""
    base, _, query = url.partition("?")
    return Request(method=method, url=base, query=query)


def load_fixture(provider: str, name: str) -> Any:
    return json.loads((FIXTURES / provider / name).read_text(encoding="utf-8"))


@pytest.fixture
def disposable_redis() -> Iterator[RedisServer]:
    """A private redis-server of this test's own, to stop and restart (an outage) without touching the session's."""
    with RedisServer.running() as server:
        yield server


def add_dead_letter(r: redis.Redis, config: Config, *, minutes_ago: float, handler: str | None = "crm",
                    stage: str = "handler", source: str = "vr", provider: str = "volumereach",
                    event_type: str | None = "call.completed", error_class: str = "TransientError",
                    message: str = "answered 503", status: int | None = 503, attempts: int = 1,
                    body: bytes = b"{}") -> str:
    """Store a dead letter in the format workers/jobs.py writes, dated `minutes_ago`; returns its id."""
    entry_id = uuid.uuid4().hex + (f"-{handler}" if handler else "")
    died = iso_utc(datetime.now(UTC) - timedelta(minutes=minutes_ago))
    event = None if stage != "handler" else {"id": f"{source}:call.completed:{entry_id[:6]}", "type": event_type,
                                             "source": source, "provider": provider}
    deadletters.add(r, config, DeadLetter(
        id=entry_id, stage=stage, died_at=died, source=source, provider=provider,
        event_id=event["id"] if event else None, event_type=event_type if event else None,
        handler=handler if stage == "handler" else None,
        error=ErrorSummary(error_class, message, status),
        attempts=(Attempt(at=died, error_class=error_class, message=message, status=status, duration_ms=12.5),)
        * attempts,
        traceback="Traceback (most recent call last):\n  ...\n", event=event,
        delivery={"v": 1, "id": uuid.uuid4().hex, "source": source, "provider": provider,
                  "received_at": died, "body_b64": base64.b64encode(body).decode()},
    ))
    return entry_id


def parse_log_lines(text: str, *, still_writing: bool = False) -> list[dict[str, Any]]:
    """Each line of captured stderr as JSON: a line that did not go through the JSON renderer fails the test.

    `still_writing`: the text was read from a file a live process is appending to. A read can land in the
    middle of its write (CI once caught half a line), so an unterminated last line is left for the next read
    instead of failing; once the process has exited every line must be whole.
    """
    if still_writing and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            pytest.fail(f"a log line did not go through the JSON formatter: {raw[:200]!r}")
    return lines
