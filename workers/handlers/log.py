"""`log`: the event as one structured log line (without `raw`, which can hold a whole body)."""

from __future__ import annotations

from typing import Any

from hooklane.shared.config import HandlerConfig
from hooklane.shared.logs import get_logger

log = get_logger("hooklane.handler.log")


class LogHandler:
    def __init__(self, cfg: HandlerConfig) -> None:
        self.name = cfg.name

    def __call__(self, event: dict[str, Any]) -> None:
        log.info("event.logged", handler=self.name, canonical_event={k: v for k, v in event.items() if k != "raw"})
