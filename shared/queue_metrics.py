"""Queue gauges read from Redis at scrape time, and the registry both /metrics endpoints serve.

Queue state lives in Redis, not in any one process, so it is not counted by the
processes that change it (a gunicorn worker, a worker killed mid-job, an
operator's `hooklane dlq replay`): it is read when Prometheus scrapes. Every
ingest and worker endpoint reports the same values; aggregate them with
`max` (not `sum`) across instances.

Gauges (label `queue` = the RQ queue, i.e. `[redis] prefix`):

    hooklane_queue_depth                      jobs waiting to be picked up
    hooklane_queue_in_progress                jobs a worker has started (StartedJobRegistry)
    hooklane_queue_scheduled                  jobs waiting for their retry time (ScheduledJobRegistry)
    hooklane_queue_oldest_waiting_seconds     age of the job at the head of the queue (0 when empty)
    hooklane_workers                          workers registered on the queue with a live heartbeat key
    hooklane_workers_heartbeat_max_age_seconds  oldest heartbeat among them (-1 when there is none)
    hooklane_dead_letters                     entries in the dead-letter queue
    hooklane_redis_up                         1 when the queries above succeeded, else 0 (and they are omitted)

Cost per scrape: two pipelined round trips plus one per 100 registered workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import redis as redis_lib
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from hooklane.shared import deadletters, logs
from hooklane.shared.config import Config

log = logs.get_logger("hooklane.metrics")


def _parse_rq_time(value: bytes | str | None) -> float | None:
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class QueueCollector(Collector):
    """Collects the queue gauges from Redis on every scrape; registered per endpoint, never globally."""

    def __init__(self, redis: Redis, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.prefix = config.redis.prefix
        self.queue = config.redis.prefix  # shared.queueing.queue_name: one queue named after the prefix
        self.clock = clock
        # RQ's own key templates, so RQ_KEY_PREFIX or an upgrade that moves a key cannot silently zero a gauge.
        q = self.queue
        self.queue_key = Queue.redis_queue_namespace_prefix + q
        self.started_key = StartedJobRegistry.key_template.format(q)
        self.scheduled_key = ScheduledJobRegistry.key_template.format(q)
        self.workers_key = WORKERS_BY_QUEUE_KEY % q

    def describe(self) -> Iterator[Metric]:
        # Names only: register() must not query Redis to check for clashes.
        return iter(self._families())

    def _families(self) -> list[GaugeMetricFamily]:
        q = ["queue"]
        return [
            GaugeMetricFamily("hooklane_queue_depth", "Jobs waiting in the queue", labels=q),
            GaugeMetricFamily("hooklane_queue_in_progress", "Jobs started by a worker and not finished", labels=q),
            GaugeMetricFamily("hooklane_queue_scheduled", "Jobs waiting for their retry time (scheduled retries)",
                              labels=q),
            GaugeMetricFamily("hooklane_queue_oldest_waiting_seconds",
                              "Age of the oldest job waiting in the queue, 0 when empty", labels=q),
            GaugeMetricFamily("hooklane_workers", "Workers on the queue whose heartbeat key is alive", labels=q),
            GaugeMetricFamily("hooklane_workers_heartbeat_max_age_seconds",
                              "Seconds since the stalest live worker's last heartbeat, -1 without workers", labels=q),
            GaugeMetricFamily("hooklane_dead_letters", "Entries in the dead-letter queue"),
            GaugeMetricFamily("hooklane_redis_up", "1 when the queue gauges could be read from Redis"),
        ]

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        up = families[-1]
        try:
            values = self._read()
        except redis_lib.RedisError as exc:
            # A scrape must still return the process's own counters while Redis is down; this gauge says why
            # the queue gauges are missing.
            log.warning("metrics.queue_unavailable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        for family, value in zip(families[:-2], values[:-1], strict=True):
            family.add_metric([self.queue], value)
            yield family
        families[-2].add_metric([], values[-1])
        yield families[-2]
        up.add_metric([], 1)
        yield up

    def _read(self) -> tuple[float, ...]:
        queue_key = self.queue_key
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(queue_key)
        pipe.zcard(self.started_key)
        pipe.zcard(self.scheduled_key)
        pipe.zcard(deadletters.index_key(self.prefix))
        pipe.lindex(queue_key, 0)
        pipe.smembers(self.workers_key)
        depth, started, scheduled, dead, head, worker_keys = pipe.execute()

        now = self.clock()
        oldest = 0.0
        # The head may be dequeued between the two reads; the next id is then the oldest.
        for _ in range(3):
            if head is None:
                break
            head_id = head.decode() if isinstance(head, bytes) else head
            enqueued = _parse_rq_time(self.redis.hget(Job.redis_job_namespace_prefix + head_id, "enqueued_at"))
            if enqueued is not None:
                oldest = max(0.0, now - enqueued)
                break
            head = self.redis.lindex(queue_key, 0)

        alive, max_age = 0, -1.0
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in worker_keys)
        for i in range(0, len(keys), 100):
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[i:i + 100]:
                pipe.hget(key, "last_heartbeat")
            for beat in pipe.execute():
                seen = _parse_rq_time(beat)
                if seen is None:
                    continue  # the key expired: RQ leaves the name in the set until its next cleanup
                alive += 1
                max_age = max(max_age, now - seen)
        return (float(depth), float(started), float(scheduled), oldest, float(alive), max_age, float(dead))


class _ProcessMetrics(Collector):
    """This process's own metrics (the default registry), re-exposed inside a per-endpoint registry."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def build_registry(redis: Redis, config: Config) -> CollectorRegistry:
    """What an endpoint serves: the process's counters (summed over processes in multiprocess mode) + queue gauges.

    With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it for ingest), every process writes its counters to
    files there and the MultiProcessCollector adds them up at scrape time; the process-local default registry
    would show only the one gunicorn worker that happens to answer the scrape.
    """
    registry = CollectorRegistry()
    if multiprocess_enabled():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessMetrics())
    registry.register(QueueCollector(redis, config))
    return registry


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
