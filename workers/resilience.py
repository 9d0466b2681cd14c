"""Workers wait out Redis outages of any length instead of exiting.

RQ lets a Redis error escape its work loop in many places (the job's settle
step, the heartbeat, maintenance, registration), and the worker then quits.
Rather than guard each of those, the worker's Redis client waits at the
command: `RideOut` is the redis-py retry policy of every connection the worker,
its jobs and its scheduler use. A command that meets an outage (connection
refused or dropped, timeout, a full Redis under `noeviction`, a read-only
replica after a failover, a Redis still loading) is retried with capped
exponential backoff until Redis answers, then the code above carries on as if
nothing happened. So a job whose handler finished during an outage settles its
dedupe record when Redis is back and is delivered exactly once; a job that
outlives its timeout while waiting is failed by RQ's death penalty and retried,
and the dedupe record makes the re-run resume.

`STATE` logs one `redis.unavailable` line when a process (the worker, its
scheduler, a fork worker's work horse) first meets an outage and one
`redis.recovered` line when it ends, not a line per retry.

Waiting stops when the process is stopping (`stop_waiting()`): a worker asked
to exit while Redis is down exits instead of hanging; whatever it could not
record stays in RQ's started registry and is recovered as an abandoned job.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ConnectionError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from hooklane.shared import logs

log = logs.get_logger("hooklane.worker")

T = TypeVar("T")

# Errors that mean "Redis cannot serve this now", not "this command is wrong".
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError, TimeoutError, socket.timeout, BusyLoadingError, OutOfMemoryError, ReadOnlyError,
    TryAgainError, MasterDownError,
)
# Refusals redis-py reports as a plain ResponseError: a failed RDB save with stop-writes-on-bgsave-error,
# and a primary with too few replicas for min-replicas-to-write.
_REFUSAL_PREFIXES = ("MISCONF", "NOREPLICAS")

# The longest pause between two attempts: also the longest a worker lags behind a Redis that came back.
BACKOFF_CAP_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 0.05


def is_outage(error: BaseException) -> bool:
    if isinstance(error, (AuthenticationError, AuthorizationError)):
        return False  # subclasses of ConnectionError, but a wrong password is fixed by a person, not by waiting
    if isinstance(error, OUTAGE_ERRORS):
        return True
    # In a pipeline redis-py prefixes the server's error with "Command # N (...) of pipeline caused error: ".
    return isinstance(error, ResponseError) and str(error).split("caused error: ", 1)[-1].startswith(
        _REFUSAL_PREFIXES)


class RedisState:
    """Whether this process can reach Redis, with one log line per change (shared by all its connections)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._waiting = True
        self._stop_error: type[BaseException] | None = None

    @property
    def waiting(self) -> bool:
        return self._waiting

    def stop_waiting(self, raise_instead: type[BaseException] | None = None) -> None:
        """From now on an outage raises at once: the process is on its way out.

        `raise_instead`: what the outage raises as, e.g. the worker's StopRequested. RQ raises that from
        its SIGTERM handler into whatever the main thread is running, and a library that catches Exception
        there (logging's emit, while a line is written) swallows it; the wait loop then raises it again.
        """
        self._waiting = False
        self._stop_error = raise_instead or self._stop_error

    @contextlib.contextmanager
    def not_waiting(self) -> Iterator[None]:
        """An outage raises at once inside the block (a worker's teardown: one try, then exit)."""
        before, self._waiting = self._waiting, False
        stop_error, self._stop_error = self._stop_error, None  # the block's outage is its own to handle
        try:
            yield
        finally:
            self._waiting, self._stop_error = before, stop_error

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("redis.unavailable", error=type(error).__name__, message=str(error)[:300],
                    retrying_every_s=BACKOFF_CAP_SECONDS, pid=os.getpid())

    def answered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            outage = time.monotonic() - self._down_since
            self._down_since = None
        log.info("redis.recovered", outage_s=round(outage, 3), pid=os.getpid())

    @property
    def stop_error(self) -> type[BaseException] | None:
        return self._stop_error

    @property
    def down(self) -> bool:
        return self._down_since is not None


STATE = RedisState()


class RideOut(Retry):
    """A redis-py retry policy that retries an outage for as long as it lasts (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS), retries=-1,
                         supported_errors=(*OUTAGE_ERRORS, ResponseError))

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any],
                        is_retryable: Callable[[Exception], bool] | None = None,
                        with_failure_count: bool = False) -> T:
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if not is_outage(error) or (is_retryable and not is_retryable(error)):
                    raise
                if not STATE.waiting:
                    # The stop is the main thread's to raise (its signal handler's); other threads (RQ's pubsub)
                    # get the outage error they handle.
                    if STATE.stop_error is not None and threading.current_thread() is threading.main_thread():
                        raise STATE.stop_error() from error
                    raise
                failures += 1
                STATE.failed(error)
                # Closes (or reopens) the connection so the next attempt starts clean. A pipeline that was
                # WATCHing raises WatchError here, which the caller retries as a whole: let it through.
                try:
                    fail(error, failures) if with_failure_count else fail(error)
                except OUTAGE_ERRORS:
                    pass
                time.sleep(self._backoff.compute(failures))
                continue
            if failures:
                STATE.answered()
            return result


def install(client: Any) -> Any:
    """Make every connection of `client` (a redis-py client) ride out outages; returns it."""
    client.set_retry(RideOut())
    return client
