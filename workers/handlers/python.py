"""`python`: a user callable, ``target = "package.module:function"``, imported at config load.

The callable receives the canonical event dict. It may raise
`workers.errors.PermanentError` to dead-letter at once, `TransientError` to be
retried; any other exception is retried too (a bug should not lose the event).
"""

from __future__ import annotations

import copy
from typing import Any

from hooklane.shared.config import HandlerConfig


class PythonHandler:
    def __init__(self, cfg: HandlerConfig) -> None:
        if cfg.callable is None:
            raise ValueError(f"handlers.{cfg.name}.target: not resolved")
        self.func = cfg.callable

    def __call__(self, event: dict[str, Any]) -> None:
        # User code may mutate what it is given; the next handler must still see the event as it was.
        self.func(copy.deepcopy(event))
