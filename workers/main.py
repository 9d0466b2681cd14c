"""`hooklane worker`: one RQ worker process on the hooklane queue, with the scheduler.

One queue per process on purpose: with exactly one queue RQ dequeues with
BLMOVE into an intermediate list (crash-safe); with several it uses BLPOP,
which loses the job if the process dies right after the pop (rq#1716).

Recovery of a job whose worker died (SIGKILL, OOM, lost machine): the job sits
in the StartedJobRegistry with an expiry of `job_timeout_seconds +
abandoned_grace_seconds`; some worker's maintenance pass (every
`maintenance_interval_seconds`, also while idle: the blocking dequeue is cut to
that interval) finds it expired and runs `on_failure` with AbandonedJobError,
then RQ retries it. So a killed job runs again within job_timeout + grace +
maintenance interval (60 + 30 + 30 = 2 min by default), as long as one worker runs.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from prometheus_client.exposition import ThreadingWSGIServer
from rq import SimpleWorker, Worker
from rq.worker import BaseWorker

from shared import logging as hl_logging
from shared.config import Config
from shared.jobs import SERIALIZER, rq_queue
from shared.redisconn import connect
from workers import jobs, runtime
from workers.threaded import ThreadedWorker

log = hl_logging.get_logger("hooklane.worker")


class _Grace:
    """RQ adds a fixed 60 s to the heartbeat TTL; make it configurable so recovery is bounded by config."""

    abandoned_grace: int = 30

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        if job.timeout == -1:
            return super().get_heartbeat_ttl(job, working_time)  # type: ignore[misc]
        if isinstance(self, SimpleWorker):
            # In-process jobs send no heartbeat while running: the TTL must cover the whole timeout.
            return int(job.timeout or 60) + self.abandoned_grace
        remaining = (job.timeout or 60) - working_time
        return int(min(remaining, self.job_monitoring_interval)) + self.abandoned_grace  # type: ignore[attr-defined]

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        token = runtime.current_execution.set(execution.composite_key)
        try:
            return super().perform_job(job, queue, execution)  # type: ignore[misc]
        finally:
            runtime.current_execution.reset(token)

    def execute_job(self, job: Any, queue: Any) -> Any:
        try:
            return super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            # A job binds its ids; without this, RQ's next "dequeued" line and an abandoned job's on_failure
            # (run by maintenance, not by a job) would carry the previous job's request_id and event_id.
            hl_logging.clear()


class HooklaneSimpleWorker(_Grace, SimpleWorker):
    """Runs jobs in the worker process: ~3.5x the throughput of forking per job (docs/benchmarks.md)."""


class HooklaneForkWorker(_Grace, Worker):
    """Forks a work horse per job: isolates user callables that leak or crash, at a throughput cost."""


class HooklaneThreadedWorker(_Grace, ThreadedWorker):
    """`[worker] concurrency` > 1: that many jobs at once in threads of this process (workers/threaded.py)."""


# Redis connections a threaded worker uses besides its jobs': the dequeue, the heartbeat thread, RQ's pubsub
# thread, and one spare.
OWN_CONNECTIONS = 4


def worker_class(config: Config) -> type[BaseWorker]:
    if config.worker.worker_class == "fork":
        return HooklaneForkWorker  # config refuses concurrency > 1 with it
    return HooklaneThreadedWorker if config.worker.concurrency > 1 else HooklaneSimpleWorker


def build_worker(config: Config, *, redis: Any = None, name: str | None = None) -> BaseWorker:
    cls = worker_class(config)
    threaded = issubclass(cls, ThreadedWorker)
    conn = redis if redis is not None else connect(
        config.redis.url, socket_timeout=None,
        max_connections=config.worker.concurrency + OWN_CONNECTIONS if threaded else None)
    rt = runtime.Runtime.build(config, conn)
    runtime.install(rt)
    # RQ logs a failing job's traceback itself: mask the configured secrets there too, whatever a handler raised.
    hl_logging.add_secret_values(rt.redact.values)
    extra = {"concurrency": config.worker.concurrency} if threaded else {}
    worker = cls(
        [rq_queue(conn, config)],
        connection=conn,
        name=name or f"hooklane-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        serializer=SERIALIZER,
        exception_handlers=[jobs.on_failure],
        maintenance_interval=config.worker.maintenance_interval_seconds,
        # An idle worker blocks in BLMOVE for worker_ttl - 15 s and only runs maintenance between
        # dequeues; RQ's default (420 s) would let an abandoned job wait ~7 min for recovery.
        worker_ttl=config.worker.maintenance_interval_seconds + 15,
        job_monitoring_interval=min(30, config.worker.job_timeout_seconds),
        **extra,
    )
    worker.abandoned_grace = config.worker.abandoned_grace_seconds
    return worker


def start_metrics_server(config: Config, worker: BaseWorker, port: int, *, redis: Any = None,
                         addr: str = "0.0.0.0") -> ThreadingWSGIServer:
    """Serve /metrics (this process's counters + the queue gauges) and /healthz on `port`, from a daemon thread."""
    from shared.queue_metrics import build_registry
    from workers import metrics

    # Its own connection with a timeout: the worker's blocks without one, and a scrape must not hang on Redis.
    scrape_redis = redis if redis is not None else connect(config.redis.url, socket_timeout=2.0)

    def health() -> dict[str, Any]:
        return {"worker": worker.name, "state": worker.get_state()}

    server = metrics.serve(port, build_registry(scrape_redis, config), health, addr=addr)
    log.info("worker.metrics_listening", port=server.server_port, paths=["/metrics", "/healthz"])
    return server


def run(config: Config, *, burst: bool = False, with_scheduler: bool = True, name: str | None = None,
        metrics_port: int | None = None) -> bool:
    """Work until SIGTERM (finish the jobs in flight, then exit) or, with `burst`, until the queue is empty.

    `metrics_port` (else `[worker] metrics_port`) serves /metrics and /healthz for this process; give each
    worker process on a host its own port.
    """
    hl_logging.configure()
    worker = build_worker(config, name=name)
    log.info("worker.starting", worker=worker.name, queue=rq_queue(worker.connection, config).name,
             worker_class=config.worker.worker_class, concurrency=config.worker.concurrency, burst=burst)
    port = metrics_port if metrics_port is not None else config.worker.metrics_port
    if port:
        start_metrics_server(config, worker, port)
    # RQ installs its own SIGTERM handler: a warm shutdown, the jobs in flight finish first.
    return worker.work(burst=burst, with_scheduler=with_scheduler, logging_level=os.environ.get(
        "HOOKLANE_LOG_LEVEL", "INFO").upper())
