"""Prometheus metrics of the ingest process.

With several gunicorn workers, set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py
does) so every worker's counters are summed at scrape time.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from redis import Redis

from shared.config import Config

DELIVERIES = Counter("hooklane_ingest_deliveries_total", "Deliveries answered, by source and HTTP status",
                     ["source", "status"])
VERIFICATION_FAILURES = Counter("hooklane_ingest_verification_failures_total",
                                "Deliveries refused by authentication, by source and reason", ["source", "reason"])
BODY_BYTES = Histogram("hooklane_ingest_body_bytes", "Size of accepted bodies", ["source"],
                       buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576))
LATENCY = Histogram("hooklane_ingest_latency_seconds", "Time from request start to enqueued, accepted deliveries",
                    ["source"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


def render(redis: Redis, config: Config) -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
