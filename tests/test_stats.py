"""`hooklane stats` and GET /admin/stats: the numbers after a known sequence through the real pipeline."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, add_dead_letter
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from hooklane.ingest.app import create_app
from hooklane.operators import actions as operator
from hooklane.operators.actions import collect_stats
from hooklane.operators.admin import create_admin_app
from hooklane.operators.cli import main
from hooklane.shared import counters as stats
from hooklane.shared.config import Config
from hooklane.shared.providers import volumereach
from hooklane.shared.queueing import SERIALIZER, rq_queue
from hooklane.workers import runtime
from hooklane.workers.main import build_worker

SOURCES = BASE_CONFIG.split("[handlers.log]")[0]
# Port 9 (discard) on loopback: nothing listens, every POST fails at once with a connection error.
CONFIG = SOURCES + """
[handlers.log]
type = "log"

[handlers.crm]
type = "http"
url = "http://127.0.0.1:9/crm"
max_attempts = 1

[handlers.calendar]
type = "http"
url = "http://127.0.0.1:9/calendar"
max_attempts = 3

[[routes]]
events = ["*"]
handlers = ["log"]

[[routes]]
events = ["call.completed"]
handlers = ["crm"]

[[routes]]
events = ["call.failed"]
handlers = ["calendar"]
"""


@pytest.fixture
def cfg(make_config: Any, real_redis: redis.Redis, redis_server: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    (tmp_path / "hooklane.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("HOOKLANE_CONFIG", str(tmp_path / "hooklane.toml"))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    yield make_config(CONFIG, redis_url=redis_server.url)
    runtime.install(None)


@pytest.fixture
def frozen_minute(monkeypatch: pytest.MonkeyPatch) -> float:
    """The workers' per-minute counters and the reader see one instant: no flake at a minute boundary."""
    frozen = time.time()
    clock = SimpleNamespace(time=lambda: frozen)
    monkeypatch.setattr(stats, "time", clock)
    monkeypatch.setattr(operator, "time", clock)
    return frozen


def deliver(config: Config, r: redis.Redis, call_id: str, outcome: str = "INTERESTED") -> None:
    raw = json.dumps({"event": "call.completed", "data": {"call_id": call_id, "outcome": outcome}}).encode()
    headers = {**volumereach.sign(raw, TEST_ENV["VR_SECRET"].encode()), "X-Webhook-Delivery-Id": uuid.uuid4().hex}
    resp = create_app(config, r).test_client().post("/webhooks/vr", data=raw, headers=headers)
    assert resp.status_code == 200


def known_sequence(config: Config, r: redis.Redis) -> None:
    """Two events and one redelivery: c1 completes (crm dies), c2 fails (calendar schedules a retry)."""
    deliver(config, r, "c1")
    deliver(config, r, "c1")  # the provider delivers it again
    deliver(config, r, "c2", outcome="NO_ANSWER")  # -> call.failed
    build_worker(config, redis=r).work(burst=True)


@pytest.mark.redis
def test_stats_after_a_known_sequence(cfg: Config, real_redis: redis.Redis, frozen_minute: float) -> None:
    known_sequence(cfg, real_redis)

    data = collect_stats(real_redis, cfg)

    assert data["queue"] == {"name": "hooklane", "waiting": 0, "running": 0, "scheduled_retries": 1,
                             "oldest_waiting_enqueued_at": None, "oldest_waiting_age_seconds": None}
    assert data["dead_letters"] == {"total": 1, "by_handler": {"crm": 1}, "by_handler_complete": True}
    for window in ("1m", "5m", "60m"):
        got = {kind: counts[window] for kind, counts in data["events"].items()}
        assert got == {"processed": 2, "duplicates": 1, "retries": 1, "retry_attempts": 1, "dead_lettered": 1,
                       "unrouted": 0}
    assert data["workers"] == []  # a burst worker leaves when the queue is empty


@pytest.mark.redis
def test_retries_count_pairs_and_retry_attempts_count_every_attempt(cfg: Config, real_redis: redis.Redis,
                                                                    frozen_minute: float) -> None:
    known_sequence(cfg, real_redis)  # calendar's first attempt failed: one pair handed to a retry job
    queue = rq_queue(real_redis, cfg)
    scheduled = ScheduledJobRegistry(queue=queue)
    (retry_id,) = scheduled.get_job_ids()
    scheduled.remove(retry_id)
    queue.enqueue_job(Job.fetch(retry_id, connection=real_redis, serializer=SERIALIZER))  # its time has come

    build_worker(cfg, redis=real_redis).work(burst=True)  # attempt 2 fails too and schedules attempt 3

    events = collect_stats(real_redis, cfg)["events"]
    assert events["retries"]["5m"] == 1
    assert events["retry_attempts"]["5m"] == 2


@pytest.mark.redis
def test_oldest_waiting_delivery_age_is_the_head_of_the_queue(cfg: Config, real_redis: redis.Redis) -> None:
    deliver(cfg, real_redis, "c1")
    head_enqueued = real_redis.hget(f"rq:job:{real_redis.lindex('rq:queue:hooklane', 0).decode()}", "enqueued_at")
    deliver(cfg, real_redis, "c2")
    from datetime import datetime

    enqueued = datetime.fromisoformat(head_enqueued.decode()).timestamp()

    data = collect_stats(real_redis, cfg, now=enqueued + 42.5)

    assert data["queue"]["waiting"] == 2
    assert data["queue"]["oldest_waiting_age_seconds"] == pytest.approx(42.5, abs=0.01)
    assert data["queue"]["oldest_waiting_enqueued_at"].startswith(head_enqueued.decode()[:19])


def test_recent_counts_fall_into_1_5_and_60_minute_windows(make_config: Any, fake_redis: redis.Redis) -> None:
    config = make_config()
    now = 1_700_000_000 // 60 * 60 + 30  # mid-minute, so "1 minute ago" is unambiguous
    pipe = fake_redis.pipeline()
    for ago, kind in [(0, "processed"), (150, "processed"), (1800, "processed"), (5400, "processed"),
                      (10, "duplicates"), (600, "dead_lettered")]:
        stats.bump(pipe, config.redis.prefix, kind, now=now - ago)
    pipe.execute()

    events = collect_stats(fake_redis, config, now=now)["events"]

    assert events["processed"] == {"1m": 1, "5m": 2, "60m": 3}
    assert events["duplicates"] == {"1m": 1, "5m": 1, "60m": 1}
    assert events["dead_lettered"] == {"1m": 0, "5m": 0, "60m": 1}
    assert events["retries"] == {"1m": 0, "5m": 0, "60m": 0}


@pytest.mark.redis
def test_workers_alive_are_listed_with_their_heartbeat_until_they_leave(cfg: Config, real_redis: redis.Redis
                                                                         ) -> None:
    worker = build_worker(cfg, redis=real_redis, name="stats-test-worker")
    worker.register_birth()
    try:
        [alive] = collect_stats(real_redis, cfg)["workers"]
        assert alive["name"] == "stats-test-worker"
        assert alive["pid"] and alive["hostname"]
        assert alive["last_heartbeat"] and 0 <= alive["heartbeat_age_seconds"] < 5
    finally:
        worker.register_death()
    assert collect_stats(real_redis, cfg)["workers"] == []


@pytest.mark.redis
def test_dead_letter_grouping_stops_at_the_scan_limit_and_says_so(cfg: Config, real_redis: redis.Redis) -> None:
    for _ in range(3):
        add_dead_letter(real_redis, cfg, minutes_ago=0, handler="crm")

    dl = collect_stats(real_redis, cfg, dlq_scan_limit=2)["dead_letters"]

    assert dl == {"total": 3, "by_handler": {"crm": 2}, "by_handler_complete": False}


@pytest.mark.redis
def test_stats_cli_prints_the_same_numbers_as_text_and_json(cfg: Config, real_redis: redis.Redis, capsys,
                                                            frozen_minute: float) -> None:
    known_sequence(cfg, real_redis)
    capsys.readouterr()

    assert main(["stats", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(["stats"]) == 0
    text = capsys.readouterr().out

    assert data["dead_letters"]["by_handler"] == {"crm": 1}
    assert data["events"]["processed"]["5m"] == 2
    assert "queue hooklane: 0 waiting, 0 running, 1 retry jobs scheduled" in text
    assert "dead letters: 1 (crm 1)" in text
    lines = {line.rsplit(None, 3)[0]: line.split()[-3:] for line in text.splitlines()
             if line.startswith(("events processed", "duplicates dropped", "dead-lettered", "handlers handed",
                                 "retry attempts"))}
    assert lines == {"events processed": ["2", "2", "2"], "duplicates dropped": ["1", "1", "1"],
                     "dead-lettered": ["1", "1", "1"], "handlers handed to retry": ["1", "1", "1"],
                     "retry attempts scheduled": ["1", "1", "1"]}
    assert "workers alive: 0" in text


@pytest.mark.redis
def test_admin_stats_serves_the_same_function(cfg: Config, real_redis: redis.Redis, monkeypatch,
                                              frozen_minute: float) -> None:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", "stats-token-0123456789")
    known_sequence(cfg, real_redis)
    client = create_admin_app(cfg, real_redis).test_client()

    resp = client.get("/admin/stats", headers={"Authorization": "Bearer stats-token-0123456789"})

    assert resp.status_code == 200
    body = resp.get_json()
    expected = collect_stats(real_redis, cfg)
    assert body["queue"] == expected["queue"]
    assert body["dead_letters"] == expected["dead_letters"]
    assert body["events"]["processed"] == expected["events"]["processed"] == {"1m": 2, "5m": 2, "60m": 2}


def test_stats_cli_with_redis_unreachable_exits_2(make_config: Any, tmp_path: Path, monkeypatch, capsys) -> None:
    from conftest import free_port

    (tmp_path / "hooklane.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    assert main(["--config", str(tmp_path / "hooklane.toml"), "stats"]) == 2
    assert "Redis error" in capsys.readouterr().err
