"""Fixtures of the fault suite: a pipeline of real processes per test, on a Redis of its own with AOF on.

Each test owns its redis-server (it stops, kills and fills it), its gunicorn ingest, its workers and
its HTTP sink; the finalizers stop exactly those processes, by PID. Worker intervals are shrunk (as in
the e2e harness) so that a recovery the defaults would take minutes for happens within seconds.

Figures: each scenario records what it measured (outage, 503 window, time to drain, ...); they are
printed at the end of the run and written to `fault-figures.json` in pytest's base temp dir, or to the
file named by HOOKLANE_FAULT_FIGURES (docs/operations.md quotes them).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer
from e2e.harness import Pipeline, Sink
from http_sink import HttpSink

# job_timeout must exceed the sink handler's connect + read timeouts (its first attempt runs inline).
FAULT_WORKER: dict[str, Any] = {
    "job_timeout_seconds": 7,
    "abandoned_grace_seconds": 1,
    "maintenance_interval_seconds": 1,
    "delivery_retry_intervals": [0.5, 1, 1, 2],
    "backoff_base_seconds": 0.5,
    "backoff_multiplier": 1,
    "backoff_cap_seconds": 1,
}
FAULT_INGEST: dict[str, Any] = {"retry_after_seconds": 1}
FAULT_HANDLER: dict[str, Any] = {"timeout_seconds": 5, "connect_timeout_seconds": 1}

FIGURES: list[dict[str, Any]] = []
FIGURES_FILE: list[Path] = []  # set once per session by _figures_file


def recovery_bound(p: Pipeline) -> float:
    """docs/operations.md's worst case for re-running a killed worker's job, counted from the job's start."""
    w = p.config.worker
    return w.job_timeout_seconds + w.abandoned_grace_seconds + w.maintenance_interval_seconds


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record(**values): this test's measured figures, printed and kept for the JSON file."""

    def record(**values: Any) -> None:
        row = {"test": request.node.name, **{k: round(v, 2) if isinstance(v, float) else v
                                             for k, v in values.items()}}
        FIGURES.append(row)
        print("fault figures:", json.dumps(row))

    return record


@pytest.fixture
def fault_sink(http_sink: HttpSink) -> Sink:
    return Sink(http_sink)


@pytest.fixture
def make_pipeline(tmp_path: Path, fault_sink: Sink) -> Iterator[Callable[..., Pipeline]]:
    """make(redis, ingest_workers=2, workers=1, start=True): the pipeline on `redis`, processes started
    (and ready, when `redis` is up) unless start=False; every process it starts is stopped at teardown."""
    made: list[Pipeline] = []

    def make(redis: RedisServer, *, ingest_workers: int = 2, workers: int = 1, start: bool = True,
             **settings: Any) -> Pipeline:
        settings = {"worker": FAULT_WORKER, "ingest": FAULT_INGEST, "handler": FAULT_HANDLER, **settings}
        p = Pipeline.configure(redis.url, fault_sink, tmp_path, **settings)
        made.append(p)
        if start:
            p.start_ingest(ingest_workers)
            for _ in range(workers):
                p.start_worker()
            if redis.proc is not None:
                p.wait_ready()
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def aof_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own with the append-only file on, its dir in tmp_path, started.

    `appendfsync` is "everysec" unless parametrized indirectly. Request it before `make_pipeline`:
    fixtures are torn down in reverse, so the processes stop while their Redis still answers.
    """
    with _aof_server(tmp_path, getattr(request, "param", "everysec")) as server:
        server.start()
        yield server


@pytest.fixture
def down_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Like aof_redis, but not started: the test starts it (an outage from the first second)."""
    with _aof_server(tmp_path, "everysec") as server:
        yield server


@contextlib.contextmanager
def _aof_server(tmp_path: Path, appendfsync: str) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(appendfsync=appendfsync, directory=directory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _figures_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    FIGURES_FILE.append(Path(os.environ.get("HOOKLANE_FAULT_FIGURES") or
                             tmp_path_factory.getbasetemp() / "fault-figures.json"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES or not FIGURES_FILE:
        return
    target = FIGURES_FILE[0]
    target.write_text(json.dumps(FIGURES, indent=2) + "\n", encoding="utf-8")
    terminalreporter.section("fault figures")
    for row in FIGURES:
        terminalreporter.write_line(json.dumps(row))
    terminalreporter.write_line(f"(written to {target})")
