"""structlog, configured once for ingest, workers and the CLI.

JSON lines when stderr is not a terminal (production) or HOOKLANE_LOG_FORMAT=json;
coloured key=value lines in a terminal. The stdlib loggers of gunicorn, rq,
werkzeug and flask go through the same renderer, so one process writes one
format. Context (delivery_id, source, event_id, job_id, ...) is bound once per
request or job with `bind()` (contextvars) and appears on every line after.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

__all__ = ["configure", "get_logger", "bind", "bound", "clear"]

bind = bind_contextvars
bound = bound_contextvars
clear = clear_contextvars

# Keys whose values must never reach a log line, whatever a caller binds.
_REDACT_KEYS = {"secret", "secrets", "token", "signature", "authorization", "password", "body"}

_configured: str | None = None


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if key.lower() in _REDACT_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Idempotent; `fmt` is "json" or "console" (default: json unless stderr is a tty)."""
    global _configured
    fmt = fmt or os.environ.get("HOOKLANE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    level_name = (level or os.environ.get("HOOKLANE_LOG_LEVEL") or "INFO").upper()
    if _configured == f"{fmt}:{level_name}":
        return
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    for name in ("gunicorn.error", "gunicorn.access", "rq.worker", "rq", "werkzeug", "flask.app"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    _configured = f"{fmt}:{level_name}"


def _identity(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return event_dict


def get_logger(name: str = "hooklane") -> Any:
    return structlog.get_logger(name)
