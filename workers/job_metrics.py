"""Prometheus metrics of a worker process, and its optional HTTP endpoint (/metrics, /healthz).

Counted in the process that runs the job. With `worker_class = "simple"` (the
default) that is the worker itself. With `"fork"` each job runs in a forked
work horse whose increments die with it, so these counters stay at zero
(multiprocess mode would leave one file per job's pid behind: not worth it).
The queue gauges come from Redis at scrape time (shared.queue_metrics) and are
right in every mode; docs/operations.md says so to operators.

Labels are bounded by the config (source, handler names) or by the providers'
event vocabularies (provider, type): never an id, a URL or a secret.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import Counter, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

EVENTS_NORMALIZED = Counter("hooklane_worker_events_normalized_total",
                            "Deliveries normalized into a canonical event, by provider and canonical type",
                            ["provider", "type"])
DUPLICATES = Counter("hooklane_worker_duplicates_total",
                     "Events dropped by the dedupe stage (a redelivery of an event already fanned out), by source",
                     ["source"])
# outcome: ok | retry (failed, another attempt is scheduled) | dead_letter (failed, no attempt left)
HANDLER_ATTEMPTS = Counter("hooklane_worker_handler_attempts_total", "Handler attempts, by handler and outcome",
                           ["handler", "outcome"])
HANDLER_LATENCY = Histogram("hooklane_worker_handler_duration_seconds", "Duration of one handler attempt",
                            ["handler"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
# stage: normalize | delivery | handler (shared.deadletters); handler is "" outside the handler stage.
DEAD_LETTERS = Counter("hooklane_worker_dead_letters_total", "Dead letters written, by stage and handler",
                       ["stage", "handler"])
# kind: delivery (a normalize/delivery dead letter re-run whole) | handler (one handler re-run)
REPLAYS = Counter("hooklane_worker_replays_total", "Replayed dead letters picked up by a worker", ["kind"])

OK, RETRY, DEAD_LETTER = "ok", "retry", "dead_letter"


def handler_attempt(handler: str, outcome: str, seconds: float | None) -> None:
    HANDLER_ATTEMPTS.labels(handler, outcome).inc()
    if seconds is not None:
        HANDLER_LATENCY.labels(handler).observe(seconds)


def dead_lettered(stage: str, handler: str | None) -> None:
    DEAD_LETTERS.labels(stage, handler or "").inc()


def replay_started(job: Any, kind: str) -> None:
    """Count a replayed job once, on its first run: not on the RQ retries of that same replay.

    shared.deadletters.replay gives the job id of the replay and records it last in meta["replays"]; a run of
    that job is the first one while no attempt in meta["attempts"] is newer than the replay.
    """
    meta = getattr(job, "meta", None)
    replays = meta.get("replays") if meta else None
    if not replays:
        return  # every job ingest writes: no meta at all
    last = replays[-1]
    if last.get("job_id") != job.id:
        return
    at = last.get("at") or ""
    if any((a.get("at") or "") >= at for a in meta.get("attempts") or ()):
        return
    REPLAYS.labels(kind).inc()


# --------------------------------------------------------------------------- endpoint


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Scrapes every few seconds would drown the job lines; Prometheus reports failed scrapes itself."""


def make_app(registry: CollectorRegistry, health: Callable[[], dict[str, Any]]) -> Callable[..., Iterable[bytes]]:
    """WSGI app: `/healthz` answers the worker's state as JSON; every other path is the Prometheus exposition."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            body = json.dumps({"status": "alive", **health()}, separators=(",", ":")).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)

    return app


def serve(port: int, registry: CollectorRegistry, health: Callable[[], dict[str, Any]], *,
          addr: str = "0.0.0.0") -> ThreadingWSGIServer:
    """Serve the endpoint from a daemon thread; the returned server's `shutdown()` stops it."""
    server = make_server(addr, port, make_app(registry, health), ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="hooklane-metrics", daemon=True).start()
    return server
