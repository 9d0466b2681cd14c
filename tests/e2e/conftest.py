"""The real pipeline as processes: a private redis-server, `hooklane ingest` (gunicorn),
`hooklane worker`, and a local HTTP sink the worker's http handler posts to.

Started once per session (a few seconds) and shared by every e2e test; each
test sends events with ids of its own, so tests never see each other's events.
Only processes started here are stopped, by PID, in the finalizers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from http_sink import HttpSink

from e2e.harness import (
    CONFIG,
    HOOKLANE,
    ROOT,
    SINK_MAX_ATTEMPTS,
    Pipeline,
    Proc,
    Sink,
    base_env,
    start_process,
    wait_for,
)
from hooklane.operators.cli.dev import free_port
from hooklane.shared import config as config_mod


@pytest.fixture(scope="session")
def sink() -> Iterator[Sink]:
    # Session-wide like the pipeline that posts to it, so not the per-test `http_sink` fixture.
    with HttpSink() as http:
        yield Sink(http)


@pytest.fixture(scope="session")
def private_redis(pytestconfig: pytest.Config) -> Iterator[Any]:
    """A redis-server of the e2e suite's own: the session one is flushed by other tests and its
    queue name is shared with them, so a running e2e worker there would take their jobs."""
    with root_conftest(pytestconfig).RedisServer.running() as server:
        yield server


def root_conftest(pytestconfig: pytest.Config) -> Any:
    """tests/conftest.py as pytest loaded it (every conftest module is named `conftest`, so no import)."""
    path = ROOT / "tests" / "conftest.py"
    for plugin in pytestconfig.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", None) or "/nonexistent").resolve() == path:
            return plugin
    raise RuntimeError(f"{path} is not loaded as a conftest")


@pytest.fixture(scope="session")
def pipeline(private_redis: Any, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("e2e")
    config_path = workdir / "hooklane.toml"
    config_path.write_text(CONFIG.format(redis_url=private_redis.url, sink_port=sink.port,
                                         max_attempts=SINK_MAX_ATTEMPTS), encoding="utf-8")
    env = base_env(HOOKLANE_CONFIG=str(config_path))
    config = config_mod.load(config_path, env=env)
    port = free_port()
    procs: list[Proc] = []
    client = private_redis.client()
    try:
        procs.append(start_process("ingest", [*HOOKLANE, "ingest", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                                   env, workdir))
        procs.append(start_process("worker", [*HOOKLANE, "worker"], env, workdir))
        p = Pipeline(base_url=f"http://127.0.0.1:{port}", config=config, config_path=config_path, redis=client,
                     sink=sink, env=env, procs=procs)

        def ready() -> bool:
            p.check_alive()
            try:
                return p.session.get(f"{p.base_url}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 30, "ingest /readyz", p.explain)
        # Ready means a probe went all the way through: ingest, Redis, the worker, the handler, the sink.
        probe = p.build("volumereach", seq=0, run="probe")
        resp = p.deliver("volumereach", probe)
        assert resp.status_code == 200, resp.text
        wait_for(lambda: p.check_alive() or sink.delivered(), 30, "the probe event at the sink", p.explain)
        yield p
    finally:
        # Intake first, then the worker (it finishes its job), each by its own PID.
        for proc in procs:
            proc.stop()
        client.close()
