"""Python handlers the worker tests route events to (importable as `support.handlers:NAME`).

In-process tests read CALLS and steer FAIL; subprocess workers record into the
Redis at HOOKLANE_TEST_REDIS_URL instead, since they share no memory with the test.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis

from hooklane.workers.errors import PermanentError, TransientError

CALLS: list[tuple[str, dict[str, Any]]] = []
# handler name -> list of outcomes to play, one per call: "ok", "transient", "permanent", "crash", "bug"
SCRIPT: dict[str, list[str]] = {}


class SimulatedCrash(BaseException):
    """Not an Exception: escapes every `except Exception`, like a worker dying mid-handler."""


def _play(name: str, event: dict[str, Any]) -> None:
    outcome = SCRIPT.get(name, []).pop(0) if SCRIPT.get(name) else "ok"
    if outcome == "transient":
        raise TransientError(f"{name} down", status=503)
    if outcome == "permanent":
        raise PermanentError(f"{name} refused", status=400)
    if outcome == "crash":
        raise SimulatedCrash(name)
    if outcome == "bug":
        raise KeyError("oops")
    CALLS.append((name, event))


def first(event: dict[str, Any]) -> None:
    _play("first", event)


def second(event: dict[str, Any]) -> None:
    _play("second", event)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["HOOKLANE_TEST_REDIS_URL"])


def _hang_first_call(key: str, event: dict[str, Any]) -> None:
    """The first call that sets `key` announces itself and hangs (to be killed); later calls record."""
    r = _redis()
    if r.set(key, "1", nx=True):
        r.rpush("test:started", event["id"])
        time.sleep(120)
    r.rpush("test:calls", json.dumps(event))


def hang_once(event: dict[str, Any]) -> None:
    """First call anywhere hangs; later calls record."""
    _hang_first_call("test:hang-once", event)


def slow(event: dict[str, Any]) -> None:
    """Announces itself, takes 2 s, then records: lets a test send SIGTERM mid-job."""
    r = _redis()
    r.rpush("test:started", event["id"])
    time.sleep(2)
    r.rpush("test:calls", json.dumps(event))


def record_first(event: dict[str, Any]) -> None:
    """Records each call in Redis (subprocess workers): lets a test see which handlers settled before a kill."""
    _redis().rpush("test:first", event["id"])


def hang_once_each(event: dict[str, Any]) -> None:
    """The first call for each event hangs; later calls record."""
    _hang_first_call(f"test:hang:{event['id']}", event)


def hold(event: dict[str, Any]) -> None:
    """Announces itself, then waits (in short sleeps, so a job timeout can stop it) until `test:release`."""
    r = _redis()
    r.rpush("test:started", event["id"])
    deadline = time.monotonic() + 60
    while not r.exists("test:release") and time.monotonic() < deadline:
        time.sleep(0.02)
    r.rpush("test:calls", json.dumps(event))


OVERLAP = {"now": 0, "max": 0}
_overlap_lock = threading.Lock()


def overlapping(event: dict[str, Any]) -> None:
    """Counts how many calls run at the same moment (OVERLAP["max"]): the test of `concurrency_safe`."""
    with _overlap_lock:
        OVERLAP["now"] += 1
        OVERLAP["max"] = max(OVERLAP["max"], OVERLAP["now"])
    time.sleep(0.1)
    with _overlap_lock:
        OVERLAP["now"] -= 1
    CALLS.append(("overlapping", event))
