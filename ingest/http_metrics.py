"""Prometheus metrics of the ingest process.

With several gunicorn workers, set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py
does) so every worker's counters are summed at scrape time. The queue gauges
(shared.queue_metrics) are read from Redis on each scrape, in both modes.

Labels are config-bounded (source names) or fixed texts (HTTP status, the
verification reason strings of shared.providers.base / ingest.auth): never a
client-chosen value, never a secret.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.exposition import choose_encoder
from redis import Redis

from hooklane.shared.config import Config
from hooklane.shared.queue_metrics import build_registry

DELIVERIES = Counter("hooklane_ingest_deliveries_total", "Deliveries answered, by source and HTTP status",
                     ["source", "status"])
VERIFICATION_FAILURES = Counter("hooklane_ingest_verification_failures_total",
                                "Deliveries refused by authentication, by source and reason", ["source", "reason"])
# Answered by the gunicorn worker before the app saw a request (ingest/gunicorn_worker.py): 408, its request
# not received in time; 503, shed past [ingest] max_buffered_bytes. No source label: the head may be incomplete.
CONNECTIONS_REFUSED = Counter("hooklane_ingest_connections_refused_total",
                              "Connections answered before their request was whole, by HTTP status", ["status"])
BODY_BYTES = Histogram("hooklane_ingest_body_bytes", "Size of accepted bodies", ["source"],
                       buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576))
LATENCY = Histogram("hooklane_ingest_latency_seconds", "Time from request start to enqueued, accepted deliveries",
                    ["source"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


def render(redis: Redis, config: Config, accept: str = "") -> tuple[bytes, str]:
    """The /metrics body and content type: counters of every ingest process plus the queue gauges.

    Format and content type are chosen from the scraper's Accept header by prometheus_client, as its own
    WSGI app (the workers' endpoint) does: text 0.0.4, text 1.0.0 or OpenMetrics.
    """
    encode, content_type = choose_encoder(accept)
    return encode(build_registry(redis, config)), content_type
