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
from http_sink import HttpSink

from e2e.harness import ROOT, Pipeline, Sink, wait_for


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
    p = Pipeline.configure(private_redis.url, sink, tmp_path_factory.mktemp("e2e"))
    try:
        p.start_ingest()
        p.start_worker("worker")
        p.wait_ready()
        # Ready means a probe went all the way through: ingest, Redis, the worker, the handler, the sink.
        probe = p.build("volumereach", seq=0, run="probe")
        resp = p.deliver("volumereach", probe)
        assert resp.status_code == 200, resp.text
        wait_for(lambda: p.check_alive() or sink.delivered(), 30, "the probe event at the sink", p.explain)
        yield p
    finally:
        p.close()
