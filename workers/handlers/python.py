"""`python`: a user callable, ``target = "package.module:function"``, imported at config load.

The callable receives the canonical event dict. It may raise
`workers.errors.PermanentError` to dead-letter at once, `TransientError` to be
retried; any other exception is retried too (a bug should not lose the event).

With `[worker] concurrency` > 1 the callable runs in several threads of the
worker at once. One that is not safe for that (shared state without a lock, a
client library that is not thread-safe) says ``concurrency_safe = false``: its
calls then take turns, one at a time per worker process.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from hooklane.shared.config import HandlerConfig

# A waiting call wakes this often, so a job that times out while it waits for its turn is still stopped.
_TURN_WAIT_SECONDS = 1.0


class PythonHandler:
    def __init__(self, cfg: HandlerConfig) -> None:
        if cfg.callable is None:
            raise ValueError(f"handlers.{cfg.name}.target: not resolved")
        self.func = cfg.callable
        self._turn = None if cfg.concurrency_safe else threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        # User code may mutate what it is given; the next handler must still see the event as it was.
        event = copy.deepcopy(event)
        if self._turn is None:
            self.func(event)
            return
        while not self._turn.acquire(timeout=_TURN_WAIT_SECONDS):
            pass
        try:
            self.func(event)
        finally:
            self._turn.release()
