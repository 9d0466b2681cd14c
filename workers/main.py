"""`hooklane worker`: one RQ worker process on the hooklane queue, with the scheduler.

One queue per process on purpose: with exactly one queue RQ dequeues with
BLMOVE into an intermediate list (crash-safe); with several it uses BLPOP,
which loses the job if the process dies right after the pop (rq#1716).

Recovery of a job whose worker died (SIGKILL, OOM, lost machine): the job sits
in the StartedJobRegistry with an expiry of `job_timeout_seconds +
abandoned_grace_seconds`; some worker's maintenance pass (every
`maintenance_interval_seconds`, also while idle: the blocking dequeue is cut to
that interval) finds it expired and runs `on_failure` with AbandonedJobError,
then RQ retries it, straight onto the queue (`retry_abandoned_at_once`: it has
waited long enough, and a scheduled retry would wait for a scheduler whose lock
the dead worker may still hold). So a killed job runs again within job_timeout +
grace + maintenance interval (60 + 30 + 30 = 2 min by default), as long as one
worker runs. The dead worker's scheduler lock is taken over once its holder has
been silent SCHEDULER_STALE_AFTER_SECONDS (`HooklaneScheduler`), so scheduled
handler retries wait that long plus a maintenance interval, not RQ's 60 s lock TTL.

Redis outages of any length are waited out at the command (workers/resilience.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client.exposition import ThreadingWSGIServer
from rq import SimpleWorker, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import AbandonedJobError, StopRequested
from rq.job_lifecycle import call_exception_handlers
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import release_lock
from rq.worker import BaseWorker

from hooklane.shared import logs
from hooklane.shared.config import Config
from hooklane.shared.queueing import PROCESS_DELIVERY, RUN_HANDLER, SERIALIZER, HooklaneJob, rq_queue
from hooklane.shared.redisconn import connect
from hooklane.workers import jobs, resilience, runtime
from hooklane.workers.threaded import ThreadedWorker

log = logs.get_logger("hooklane.worker")

# A scheduler heartbeats every second; this many seconds of silence means its process is gone.
SCHEDULER_STALE_AFTER_SECONDS = 10


class HooklaneScheduler(RQScheduler):
    """RQ's scheduler, which takes over the lock of a dead one instead of waiting out its 61 s TTL,
    and which waits out Redis outages (its connection has the worker's retry policy) but not a stop."""

    def acquire_locks(self, auto_start: bool = False) -> set[str]:
        for queue_name in self._queue_names:
            self._release_if_holder_silent(queue_name)
        return super().acquire_locks(auto_start)

    def _release_if_holder_silent(self, queue_name: str) -> None:
        key = self.get_locking_key(queue_name)
        holder = self.connection.get(key)
        if holder is None or holder.decode() == self.name:
            return
        # Each heartbeat resets the holder's metadata hash to expire in interval + 60 s, so what is left of
        # that TTL dates its last heartbeat on Redis's clock. No hash (-2): the holder took the lock a
        # moment ago and has not registered yet, or is long gone; the lock's own TTL covers both.
        pttl = self.connection.pttl(SCHEDULER_KEY_TEMPLATE % holder.decode())
        if pttl < 0:
            return
        silent = self.interval + 60 - pttl / 1000
        # Token-checked: deletes the lock only if that silent holder still has it.
        if silent > SCHEDULER_STALE_AFTER_SECONDS and release_lock(self.connection, key, holder.decode()):
            log.warning("scheduler.stale_lock_released", queue=queue_name, holder=holder.decode(),
                        silent_s=round(silent, 1))

    def work(self) -> None:
        logs.bind(process="scheduler")
        try:
            super().work()
        except Exception as exc:
            if not (self._stop_requested and resilience.is_outage(exc)):
                raise
            # Stopped during an outage: nothing to release that Redis could record; the lock expires.
            log.info("scheduler.stopped", redis="unavailable")

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        resilience.STATE.stop_waiting()
        super().request_stop(signum, frame)


def retry_abandoned_at_once(job: Any, exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """Exception handler, after `jobs.on_failure`: an abandoned job's retry skips its interval.

    RQ retries a job whose worker died with the job's next retry interval, through the scheduled
    registry; the job already waited job_timeout + grace to be found, so it goes straight to the queue.
    """
    if exc_type is not AbandonedJobError or not job.retries_left or not job.retry_intervals:
        return None
    job.retry_intervals = retry_now_then_as_before(list(job.retry_intervals), job.retries_left)
    return None


def retry_now_then_as_before(intervals: list[float], retries_left: int) -> list[float]:
    """Intervals for `retries_left` retries where the next one waits 0 and the later ones as before.

    RQ's index is len(intervals) - retries_left, clamped at 0 (so a short list repeats its first
    value): spell out the wait of each remaining retry, then zero the next one.
    """
    upcoming = [intervals[max(len(intervals) - left, 0)] for left in range(retries_left, 0, -1)]
    return [0, *upcoming[1:]]


class _HooklaneWorker:
    """What hooklane changes in RQ's workers: a heartbeat TTL from config, log context per job,
    shutdown that does not wait for Redis, and HooklaneScheduler."""

    abandoned_grace: int = 30

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        # RQ adds a fixed 60 s to the heartbeat TTL; configurable here so recovery is bounded by config.
        if job.timeout == -1:
            return super().get_heartbeat_ttl(job, working_time)  # type: ignore[misc]
        if isinstance(self, SimpleWorker):
            # In-process jobs send no heartbeat while running: the TTL must cover the whole timeout.
            return int(job.timeout or 60) + self.abandoned_grace
        remaining = (job.timeout or 60) - working_time
        return int(min(remaining, self.job_monitoring_interval)) + self.abandoned_grace  # type: ignore[attr-defined]

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        """hooklane's jobs: jobs.on_failure logs the one line each failure deserves (a retry: a warning without
        traceback; a dead letter: the error, its traceback kept in the dead letter), so RQ's own
        error-with-traceback line, written before it knows whether the job will be retried, is left out."""
        if getattr(job, "func_name", None) in (PROCESS_DELIVERY, RUN_HANDLER):
            call_exception_handlers(self._exc_handlers, job, *exc_info)  # type: ignore[attr-defined]
            return
        super().handle_exception(job, *exc_info)  # type: ignore[misc]

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        token = runtime.current_execution.set(execution.composite_key)
        try:
            return super().perform_job(job, queue, execution)  # type: ignore[misc]
        finally:
            runtime.current_execution.reset(token)

    def execute_job(self, job: Any, queue: Any) -> Any:
        # A job binds its ids; cleared on the way in and out, so no line outside a job (RQ's "dequeued",
        # an abandoned job's on_failure run by maintenance, the shutdown lines) carries a previous job's ids.
        logs.clear()
        try:
            return super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            logs.clear()

    def run_maintenance_tasks(self) -> None:
        # RQ's loop runs maintenance before it looks at a stop request, and maintenance restarts a scheduler that
        # is not running: after a warm-shutdown request (which stopped ours) that forks a new scheduler on the
        # way out, and one that meets the exit's SIGTERM before installing its handlers hangs the stop.
        if self._stop_requested:  # type: ignore[attr-defined]
            return
        super().run_maintenance_tasks()  # type: ignore[misc]

    def request_stop(self, signum: Any, frame: Any) -> None:
        # The handler runs on top of whatever the worker was doing, a job included: its lines are not the job's.
        with _outside_job():
            try:
                super().request_stop(signum, frame)  # type: ignore[misc]
            except StopRequested:
                # Idle: RQ raises StopRequested into the main thread, where a library that catches Exception can
                # swallow it (seen: logging's emit). The loop's own check and the Redis wait loop stop it too.
                self._stop_requested = True
                resilience.STATE.stop_waiting(raise_instead=StopRequested)
                raise

    def request_force_stop(self, signum: Any, frame: Any) -> None:
        # A cold stop (second SIGTERM) means "now": stop waiting for Redis too.
        resilience.STATE.stop_waiting()
        with _outside_job():
            super().request_force_stop(signum, frame)  # type: ignore[misc]

    def teardown(self) -> None:
        # Exiting: registering the death is worth one try, not a wait for Redis.
        try:
            with resilience.STATE.not_waiting():
                super().teardown()  # type: ignore[misc]
        except Exception as exc:
            if not resilience.is_outage(exc):
                raise
            log.warning("worker.teardown_skipped", reason="redis unavailable", error=type(exc).__name__)

    def _start_scheduler(self, burst: bool = False, logging_level: str | None = "INFO",
                         date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
                         log_format: str = DEFAULT_LOGGING_FORMAT) -> None:
        # RQ's own, with HooklaneScheduler where RQ names RQScheduler.
        self.scheduler = HooklaneScheduler(
            self.queues, connection=self.connection,  # type: ignore[attr-defined]
            logging_level=logging_level if logging_level is not None else self.log.level,  # type: ignore[attr-defined]
            date_format=date_format, log_format=log_format, serializer=self.serializer,  # type: ignore[attr-defined]
        )
        if not self.scheduler.acquire_locks():
            return
        if not burst:
            self.scheduler.start()
            return
        try:
            self.scheduler.register_birth()
            self.scheduler.enqueue_scheduled_jobs()
        finally:
            self.scheduler.release_locks()
            self.scheduler.register_death()


@contextlib.contextmanager
def _outside_job() -> Iterator[None]:
    """Log without the ids a running job bound, and give them back to the job afterwards."""
    saved = structlog.contextvars.get_contextvars()
    logs.clear()
    try:
        yield
    finally:
        logs.bind(**saved)


class HooklaneSimpleWorker(_HooklaneWorker, SimpleWorker):
    """Runs jobs in the worker process: ~3.5x the throughput of forking per job (docs/benchmarks.md)."""


class HooklaneForkWorker(_HooklaneWorker, Worker):
    """Forks a work horse per job: isolates user callables that leak or crash, at a throughput cost."""


logs.raise_through_handlers(StopRequested)


class HooklaneThreadedWorker(_HooklaneWorker, ThreadedWorker):
    """`[worker] concurrency` > 1: that many jobs at once in threads of this process (workers/threaded.py)."""

    def teardown(self) -> None:
        # The jobs in flight finish first, riding out Redis outages like any job; only the worker's own
        # bookkeeping after them gets _HooklaneWorker.teardown's single try.
        try:
            self.drain()
        finally:
            super().teardown()


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
    # Our own connection waits out Redis outages (workers/resilience.py); one passed in is left as it is.
    conn = redis if redis is not None else resilience.install(connect(
        config.redis.url, socket_timeout=None,
        max_connections=config.worker.concurrency + OWN_CONNECTIONS if threaded else None))
    rt = runtime.Runtime.build(config, conn)
    runtime.install(rt)
    # RQ logs a failing job's traceback itself: mask the configured secrets there too, whatever a handler raised.
    logs.add_secret_values(rt.redact.values)
    extra = {"concurrency": config.worker.concurrency} if threaded else {}
    worker = cls(
        [rq_queue(conn, config)],
        connection=conn,
        job_class=HooklaneJob,
        name=name or f"hooklane-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        serializer=SERIALIZER,
        exception_handlers=[jobs.on_failure, retry_abandoned_at_once],
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
    from hooklane.shared.queue_metrics import build_registry
    from hooklane.workers import job_metrics as metrics

    # Its own connection with a timeout: the worker's blocks without one, and a scrape must not hang on Redis.
    scrape_redis = redis if redis is not None else connect(config.redis.url, socket_timeout=2.0)

    def health() -> dict[str, Any]:
        # Still 200 while Redis is down: the process is alive and waiting (workers/resilience.py); "redis" says so.
        return {"worker": worker.name, "state": worker.get_state(),
                "redis": "unavailable" if resilience.STATE.down else "ok"}

    server = metrics.serve(port, build_registry(scrape_redis, config), health, addr=addr)
    log.info("worker.metrics_listening", port=server.server_port, paths=["/metrics", "/healthz"])
    return server


def run(config: Config, *, burst: bool = False, with_scheduler: bool = True, name: str | None = None,
        metrics_port: int | None = None) -> bool:
    """Work until SIGTERM (finish the jobs in flight, then exit) or, with `burst`, until the queue is empty.

    `metrics_port` (else `[worker] metrics_port`) serves /metrics and /healthz for this process; give each
    worker process on a host its own port.
    """
    logs.configure()
    worker = build_worker(config, name=name)
    log.info("worker.starting", worker=worker.name, queue=rq_queue(worker.connection, config).name,
             worker_class=config.worker.worker_class, concurrency=config.worker.concurrency, burst=burst)
    port = metrics_port if metrics_port is not None else config.worker.metrics_port
    if port:
        start_metrics_server(config, worker, port)
    # RQ installs its own SIGTERM handler: a warm shutdown, the jobs in flight finish first.
    worked = worker.work(burst=burst, with_scheduler=with_scheduler, logging_level=os.environ.get(
        "HOOKLANE_LOG_LEVEL", "INFO").upper())
    log.info("worker.stopped", worker=worker.name)
    return worked
