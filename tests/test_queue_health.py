"""One reading of the queue's state in Redis, behind the /metrics gauges and `hooklane stats` alike;
and the one parser of the timestamps RQ and hooklane write."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, RedisServer

from hooklane.ingest.app import create_app
from hooklane.operators.actions import collect_stats
from hooklane.shared.config import Config
from hooklane.shared.envelope import iso_utc, parse_utc
from hooklane.shared.providers import volumereach
from hooklane.shared.queue_metrics import QueueCollector, read_queue_health
from hooklane.workers.main import build_worker

AT = datetime(2025, 3, 14, 15, 2, 11, 123456, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2025-03-14T15:02:11.123456Z",  # RQ 3 and hooklane (iso_utc)
    "2025-03-14T15:02:11.123456+00:00",
    "2025-03-14T15:02:11.123456",  # naive UTC, as older RQ wrote it
    "2025-03-14T16:02:11.123456+01:00",
    b"2025-03-14T15:02:11.123456Z",  # straight from a redis-py hash read
])
def test_parse_utc_reads_every_form_rq_and_hooklane_write(text: str | bytes) -> None:
    parsed = parse_utc(text)
    assert parsed == AT
    assert parsed is not None and parsed.tzinfo is not None  # aware: comparable with any other hooklane time


@pytest.mark.parametrize("value", [None, "", b"", "yesterday", "2025-13-01T00:00:00Z", b"\xff\xfe"])
def test_parse_utc_is_none_for_a_missing_or_unreadable_field(value: str | bytes | None) -> None:
    assert parse_utc(value) is None


def test_parse_utc_round_trips_iso_utc() -> None:
    assert parse_utc(iso_utc(AT)) == AT


def deliver(config: Config, r: redis.Redis, call_id: str) -> None:
    body = f'{{"event":"call.completed","data":{{"call_id":"{call_id}"}}}}'.encode()
    headers = volumereach.sign(body, TEST_ENV["VR_SECRET"].encode())
    assert create_app(config, r).test_client().post("/webhooks/vr", data=body, headers=headers).status_code == 200


@pytest.mark.redis
def test_metrics_and_stats_read_the_same_queue_health(
    real_redis: redis.Redis, redis_server: RedisServer, make_config: Callable[..., Config],
) -> None:
    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    for n in range(3):
        deliver(config, real_redis, f"qh{n}")
    alive = build_worker(config, redis=real_redis, name="qh-alive")
    gone = build_worker(config, redis=real_redis, name="qh-gone")
    alive.register_birth()
    gone.register_birth()
    # A worker that stopped heartbeating: its hash expired, RQ leaves its name in the set until a cleanup.
    real_redis.delete(gone.key)
    try:
        health = read_queue_health(real_redis, "hooklane", config.redis.prefix)
        assert (health.waiting, health.running, health.scheduled, health.dead_letters) == (3, 0, 0, 0)
        assert [w.name for w in health.workers] == ["qh-alive"]
        [worker] = health.workers
        assert worker.pid and worker.hostname and worker.last_heartbeat is not None
        head = real_redis.lindex("rq:queue:hooklane", 0).decode()
        assert health.oldest_enqueued_at == parse_utc(real_redis.hget(f"rq:job:{head}", "enqueued_at"))

        now = health.oldest_enqueued_at.timestamp() + 30.0
        gauges = {m.name: m.samples[0].value
                  for m in QueueCollector(real_redis, config, clock=lambda: now).collect() if m.samples}
        stats = collect_stats(real_redis, config, now=now)
        assert gauges["hooklane_queue_depth"] == stats["queue"]["waiting"] == 3
        assert gauges["hooklane_queue_oldest_waiting_seconds"] == pytest.approx(30.0)
        assert stats["queue"]["oldest_waiting_age_seconds"] == pytest.approx(30.0)
        assert gauges["hooklane_workers"] == len(stats["workers"]) == 1
        assert gauges["hooklane_dead_letters"] == stats["dead_letters"]["total"] == 0
    finally:
        alive.register_death()
    # Shut down: its hash says so until it expires; no longer alive for either reader.
    assert read_queue_health(real_redis, "hooklane", config.redis.prefix).workers == []
