"""An RQ worker that runs up to N jobs at once, in threads of one process.

RQ 3.0 has no such worker (rq#45, rq#1803 closed unmerged) but its data model
allows several executions per worker (`worker.executions`, the executions
index). `ThreadedWorker` keeps RQ's own `work()` loop, dequeue and job
settling; it changes only what cannot work from a thread or assumes one job:

- Dequeue: RQ's single-queue path (BLMOVE into the intermediate list, crash
  safe), entered only when a slot is free, so at most N jobs are ever taken
  from the queue. An idle worker blocks in BLMOVE as RQ's does.
- `execute_job` (main thread) creates the job's Execution, its
  StartedJobRegistry entry and index entry, and marks the job started (RQ's
  `prepare_execution` and `prepare_job_execution`, in one transaction), then
  hands `perform_job` to one of N slot threads. Each job runs in an empty
  `contextvars.Context`: its structlog bindings and RQ's current job are its own.
- Heartbeats: a heartbeat thread does for every in-flight execution what RQ's
  fork monitor does for its one horse (execution, registry entry, job, and the
  worker key with its executions index), every half monitoring interval. A
  SIGKILLed process stops beating, so each of its N jobs expires from the
  StartedJobRegistry and RQ's maintenance re-runs it (abandoned-job recovery).
- Timeouts: SIGALRM only reaches the main thread, so `ThreadDeathPenalty`
  arms one process-wide watchdog thread that raises the job's timeout
  exception asynchronously in the job's thread. That cannot cut a blocking
  socket call short: every handler's I/O carries its own timeout.
- SIGTERM/SIGINT: stop dequeuing, finish the jobs in flight (each bounded by
  its timeout), then exit. A second signal is a cold stop: the process exits,
  its jobs stay in the StartedJobRegistry and are recovered like a SIGKILL's.
"""

from __future__ import annotations

import contextvars
import ctypes
import heapq
import itertools
import queue as queue_mod
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.utils import now
from rq.worker import BaseWorker, WorkerStatus

# Its own prototype: setting argtypes on ctypes.pythonapi's shared one would break RQ's TimerDeathPenalty.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


@dataclass(eq=False)
class _Alarm:
    thread_id: int
    deadline: float
    seconds: float
    exception: type[BaseException]
    fired: bool = False
    cancelled: bool = False


class _Watchdog:
    """One daemon thread raising each overrunning job's timeout in that job's thread, at its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, exception: type[BaseException]) -> _Alarm:
        alarm = _Alarm(threading.get_ident(), time.monotonic() + seconds, seconds, exception)
        with self._cond:
            heapq.heappush(self._heap, (alarm.deadline, next(self._seq), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hooklane-job-timeouts", daemon=True)
                self._thread.start()
            self._cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        with self._cond:
            alarm.cancelled = True
            if alarm.fired:
                # Fired while the job was returning: drop the exception if it is still pending, so it can never
                # surface later in RQ's bookkeeping; a job that ran to the end is done (as RQ's own penalties do).
                _set_async_exc(alarm.thread_id, ctypes.py_object())

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                alarm = heapq.heappop(self._heap)[2]
                alarm.fired = True
                _set_async_exc(alarm.thread_id, ctypes.py_object(_timeout_type(alarm.exception, alarm.seconds)))


def _timeout_type(exception: type[BaseException], seconds: float) -> type[BaseException]:
    """The exception class to raise (an async exception is raised from a class), carrying RQ's message."""
    message = f"Task exceeded maximum timeout value ({seconds:g} seconds)"

    def __init__(self: BaseException, *args: Any) -> None:
        exception.__init__(self, message)

    return type(exception.__name__, (exception,), {"__init__": __init__, "__module__": exception.__module__})


WATCHDOG = _Watchdog()


class ThreadDeathPenalty(BaseDeathPenalty):
    """RQ's job timeout for a job that runs in any thread (RQ's default uses SIGALRM: main thread only)."""

    def __init__(self, timeout: float, exception: type[BaseException] = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._alarm: _Alarm | None = None

    def setup_death_penalty(self) -> None:
        if self._timeout > 0:  # -1: the job has no timeout
            self._alarm = WATCHDOG.arm(self._timeout, self._exception)

    def cancel_death_penalty(self) -> None:
        if self._alarm is not None:
            WATCHDOG.disarm(self._alarm)
            self._alarm = None


@dataclass(eq=False)
class _Running:
    job: Job
    execution: Execution
    taken_at: float = field(default_factory=time.monotonic)


class ThreadedWorker(BaseWorker):
    """Runs up to `concurrency` jobs at once in threads; every RQ guarantee per job (see the module doc)."""

    death_penalty_class = ThreadDeathPenalty
    _LOOP_HEARTBEAT_SECONDS = 1.0

    def __init__(self, *args: Any, concurrency: int = 1, **kwargs: Any) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency
        self._cond = threading.Condition()
        self._running: dict[str, _Running] = {}  # execution id -> job in flight
        self._finished = 0
        self._inbox: queue_mod.SimpleQueue[tuple[Job, Queue, Execution] | None] = queue_mod.SimpleQueue()
        self._slots: list[threading.Thread] = []
        self._beating = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        # Whether a stop signal may end the main loop where it is (as RQ's does when idle): everywhere except
        # between taking a job from the queue and handing it to a slot, and in teardown.
        self._interruptible = True
        self._cold_stop = False
        self._suspension_checked = float("-inf")

    # ----------------------------------------------------------------- what RQ calls

    def _start_threads(self) -> None:
        # Started at the first dequeue, not in bootstrap(): work() forks RQ's scheduler in between, and a
        # fork is safest while the process has no threads of ours.
        self._slots = [threading.Thread(target=self._slot, name=f"hooklane-job-{i}", daemon=True)
                       for i in range(self.concurrency)]
        for thread in self._slots:
            thread.start()
        self._beating.clear()
        self._interruptible = True  # a previous work() on this worker left it off in its teardown
        self._heartbeat_thread = threading.Thread(target=self._heartbeats, name="hooklane-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if not self._slots:
            self._start_threads()
        self._wait(lambda: len(self._running) < self.concurrency)
        while True:
            if self._stop_requested:
                raise StopRequested()
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            if result is not None:
                self._interruptible = False  # a job is taken: it reaches a slot before any stop (execute_job)
                return result
            if timeout is not None:
                return None
            # Burst mode found the queue empty. A job still in flight may put work back (an RQ retry with no
            # wait): quit only once nothing runs and the queue is still empty.
            finished = self._finished
            if not self._running:
                return None
            self._wait(lambda seen=finished: self._finished != seen)

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            execution = self.prepare_execution(job)
            with self._cond:
                self._running[execution.id] = _Running(job, execution)
            self._inbox.put((job, queue, execution))
        finally:
            self._interruptible = True

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's `prepare_execution` (the execution, its registry entry, BUSY) and `prepare_job_execution` (the
        job STARTED, out of the intermediate list) in one transaction: RQ runs the second in the work horse,
        here it would be the job's thread, a round trip per job more for nothing."""
        with self.connection.pipeline() as pipe:
            ttl = self.get_heartbeat_ttl(job)
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.executions[execution.id] = execution
            if self._state != WorkerStatus.BUSY:
                self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            if len(self.queues) == 1:  # RQ's condition: one queue means BLMOVE via the intermediate list
                pipe.lrem(self.queues[0].intermediate_queue_key, 1, job.id)
            pipe.execute()
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        return None  # done with the execution, in prepare_execution's transaction

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # RQ beats once more here to give a success/failure callback its time. Without one, the beat is a round
        # trip per job to stamp a hash the settling transaction right after rewrites anyway.
        if job._success_callback_name or job._failure_callback_name:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = now()
        job.last_heartbeat = job.ended_at

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # RQ sets IDLE before each dequeue; with jobs still in flight the worker is busy.
        if state == WorkerStatus.IDLE and self._running:
            state = WorkerStatus.BUSY
        if pipeline is None and state == self._state:
            return  # RQ writes it before every dequeue: a round trip per job for nothing
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        # RQ asks Redis before every dequeue; once a second is as good for `rq suspend`, and a round trip per job less.
        if time.monotonic() - self._suspension_checked >= self._LOOP_HEARTBEAT_SECONDS:
            super().check_for_suspension(burst)
            self._suspension_checked = time.monotonic()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ's loop beats (3 round trips) before and after every dequeue; the heartbeat thread keeps the
        # worker alive, so the loop's own beats are only needed once in a while, not per job.
        if pipeline is None and timeout is None and self.last_heartbeat is not None \
                and (now() - self.last_heartbeat).total_seconds() < self._LOOP_HEARTBEAT_SECONDS:
            return
        super().heartbeat(timeout, pipeline)

    def _shutdown(self) -> None:
        self._stop_requested = True
        if self._interruptible:
            raise StopRequested()  # no job half taken: leave the loop now, teardown drains the jobs in flight
        self.set_shutdown_requested_date()
        if self.scheduler:
            self.stop_scheduler()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            self._cold_stop = True
            raise

    def teardown(self) -> None:
        try:
            self.drain()
        finally:
            self._beating.set()
            for _ in self._slots:
                self._inbox.put(None)
            self._slots = []  # a later work() on this worker starts them again
            super().teardown()

    # ----------------------------------------------------------------- slots, heartbeats, drain

    def _slot(self) -> None:
        while (item := self._inbox.get()) is not None:
            job, queue, execution = item
            try:
                contextvars.Context().run(self.perform_job, job, queue, execution)
            except Exception:  # noqa: BLE001 - logged; the job stays in StartedJobRegistry and is recovered
                # perform_job settles every job failure itself; this is RQ's bookkeeping failing (Redis gone).
                # The job stops beating, expires from the registry and RQ's maintenance re-runs it.
                self.log.exception("Worker %s: job %s could not be settled; it will be recovered as abandoned",
                                   self.name, job.id)
            finally:
                with self._cond:
                    self._running.pop(execution.id, None)
                    self.executions.pop(execution.id, None)
                    self._finished += 1
                    idle = not self._running
                    self._cond.notify_all()
                if idle:
                    self._set_idle_quietly()

    def _set_idle_quietly(self) -> None:
        try:
            self.set_state(WorkerStatus.IDLE)
        except redis.RedisError as exc:  # only the state shown by `rq info`; the next dequeue sets it again
            self.log.warning("Worker %s: could not record the idle state: %s", self.name, exc)

    def _wait(self, ready: Any, timeout: float | None = None, *, interruptible: bool = True) -> bool:
        """Block (no polling) until `ready()`; if `interruptible`, a stop signal ends it. False if it timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            before, self._interruptible = self._interruptible, interruptible
            try:
                while not ready():
                    if interruptible and self._stop_requested:
                        raise StopRequested()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._interruptible = before

    def _heartbeats(self) -> None:
        interval = max(0.5, self.job_monitoring_interval / 2)
        while not self._beating.wait(interval):
            try:
                self.maintain_all_heartbeats()
            except redis.RedisError as exc:
                self.log.warning("Worker %s: heartbeat failed: %s", self.name, exc)
            except Exception:  # noqa: BLE001 - a dead heartbeat thread would get live jobs re-run as abandoned
                self.log.exception("Worker %s: heartbeat failed", self.name)

    def maintain_all_heartbeats(self) -> None:
        """RQ's `maintain_heartbeats` for every job in flight, in one round trip."""
        with self._cond:
            running = list(self._running.values())
        with self.connection.pipeline() as pipe:
            self.heartbeat(pipeline=pipe)
            hset_at = []
            for r in running:
                working = (now() - r.job.started_at).total_seconds() if r.job.started_at else 0.0
                ttl = int(self.get_heartbeat_ttl(r.job, working_time=working))
                hset_at.append((r.execution.key, len(pipe)))
                r.execution.heartbeat(r.job.started_job_registry, ttl, pipeline=pipe)
                hset_at.append((r.job.key, len(pipe)))
                r.job.heartbeat(now(), ttl, pipeline=pipe)
            results = pipe.execute()
            # HSET answers 1 when it created the hash: the job settled meanwhile and its execution (or, with
            # result_ttl 0, the job: rq#1450) was deleted; do not leave a hash holding only a heartbeat.
            for key, at in hset_at:
                if results[at] == 1:
                    pipe.delete(key)
            if results[0] == 1:  # the worker's hash had expired: write it whole again
                pipe.hset(self.key, mapping=self.serialize())
                pipe.expire(self.key, self.worker_ttl + 60)
            if len(pipe):
                pipe.execute()

    def drain(self) -> None:
        """Wait for the jobs in flight (at most their timeouts); nothing to do after a cold stop."""
        self._interruptible = False  # called on the way out: a signal now must not cut it short
        with self._cond:
            if not self._running or self._cold_stop:
                return
            # Each job is bounded by its own timeout (the watchdog), plus slack for settling it in Redis.
            longest = max((r.job.timeout or Queue.DEFAULT_TIMEOUT) - (time.monotonic() - r.taken_at)
                          for r in self._running.values())
            count = len(self._running)
        self.log.info("Worker %s: stopping: finishing %d job(s) in flight", self.name, count)
        if not self._wait(lambda: not self._running, timeout=max(longest, 0) + 10, interruptible=False):
            self.log.warning("Worker %s: %d job(s) did not finish in time; they will be recovered as abandoned",
                             self.name, len(self._running))

    @property
    def jobs_in_flight(self) -> int:
        return len(self._running)

