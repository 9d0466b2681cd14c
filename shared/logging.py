"""structlog, configured once for ingest, workers and the CLI.

JSON lines when stderr is not a terminal (production) or HOOKLANE_LOG_FORMAT=json;
coloured key=value lines in a terminal. The stdlib loggers of gunicorn, rq,
werkzeug and flask go through the same renderer, so one process writes one
format. Context (delivery_id, source, event_id, job_id, ...) is bound once per
request or job with `bind()` (contextvars) and appears on every line after.

Every structlog logger routes through the stdlib root logger from import time
on, so a module-level logger used before `configure()` still ends up in the
configured handler (structlog caches a logger's pipeline on first use).

Redaction, in three layers, because stdlib lines (rq's tracebacks, werkzeug's
request lines) are free text we do not control:
- keys named like credentials are replaced whatever their value;
- string values (stdlib messages and tracebacks included) lose credential query
  parameters, URL userinfo and the token segment of ``/webhooks/<source>/<token>``;
- the configured secret values (`add_secret_values`) are masked in the final line.

Under gunicorn, ingest/gunicorn.conf.py's logger class routes gunicorn.error and
gunicorn.access here; an access line, if an operator enables one, loses its
token through the string scrubbing above.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

from shared.redaction import MASK, Redactor

__all__ = ["configure", "get_logger", "bind", "bound", "clear", "add_secret_values", "scrub_text"]

bind = bind_contextvars
bound = bound_contextvars
clear = clear_contextvars


# Keys whose values must never reach a log line, whatever a caller binds.
_REDACT_KEYS = {"secret", "secrets", "token", "signature", "authorization", "password", "body", "api_key",
                "apikey", "cookie"}

# Loggers of libraries that would otherwise install their own handlers or stop propagation.
_FOREIGN_PREFIXES = ("gunicorn", "rq", "werkzeug", "flask", "urllib3", "requests")

# `?token=abc`, `&api_key=abc`, `sig=...` in a URL or a request line.
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:token|secret|signature|sig|key|api[_-]?key|access[_-]?token|password|auth)=)[^&;\s\"'#]+"
)
# `scheme://user:password@host`
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@\"']+:[^/\s@\"']+@")
# `/webhooks/<source>/<token>`: the unsigned providers' path token.
_PATH_TOKEN = re.compile(r"(/webhooks/[^/\s?\"']+/)[^/\s?\"'#]+")

_configured: str | None = None
_secrets = Redactor([])


def scrub_text(text: str) -> str:
    """Mask URL credentials, credential query parameters and webhook path tokens in free text."""
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    if "@" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
    if "/webhooks/" in text:
        text = _PATH_TOKEN.sub(r"\1***", text)
    return text


def add_secret_values(values: Iterable[str]) -> None:
    """Mask these exact values in every rendered line from now on (the process's configured secrets)."""
    global _secrets
    # The JSON renderer escapes quotes, backslashes and non-ASCII: match the escaped form too.
    values = list(values)
    _secrets = Redactor([*_secrets.values, *values, *(json.dumps(v)[1:-1] for v in values)])


def _redact_keys(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in event_dict:
        if key.lower() in _REDACT_KEYS:
            event_dict[key] = MASK
    return event_dict


def _scrub_strings(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Top-level strings only: stdlib messages, tracebacks, URLs a caller passed. Nested values are ours
    # (e.g. the log handler's canonical event) and already hold no credentials.
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub_text(value)
    return event_dict


def _mask_secret_values(_: Any, __: str, line: str) -> str:
    return _secrets(line)


def _identity(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return event_dict


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact_keys,
]

# Set at import, not in configure(): the chain never changes, only the stdlib formatter does, so loggers
# cached before configure() (module-level `log = get_logger()` used at import) stay correct.
structlog.configure(
    processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (pytest's capture, a redirected stream)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        raise AttributeError("the stream of this handler is always sys.stderr")


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter every handler of the process uses: structlog's and stdlib records alike."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _identity,
            _scrub_strings,
            renderer,
            _mask_secret_values,
        ],
    )


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Idempotent; `fmt` is "json" or "console" (default: json unless stderr is a tty)."""
    global _configured
    fmt = fmt or os.environ.get("HOOKLANE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    level_name = (level or os.environ.get("HOOKLANE_LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    if _configured == f"{fmt}:{level_name}" and ours:
        _route_foreign_loggers()
        return
    handler = _StderrHandler()
    handler.setFormatter(make_formatter(fmt))
    # Keep handlers a test harness attached (pytest's caplog); replace anything else, ours included.
    root.handlers[:] = [h for h in root.handlers if _is_capture_handler(h)] + [handler]
    root.setLevel(level_name)
    _route_foreign_loggers()
    _configured = f"{fmt}:{level_name}"


def _is_capture_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest")


def _route_foreign_loggers() -> None:
    """Undo what rq's setup_loghandlers / gunicorn's Logger do to their loggers: own handlers, no propagation.

    rq only installs its plain handlers when no ancestor has one (rq.logutils._has_effective_handler), which the
    root handler above prevents; this covers loggers configured before us (an import-time rq setup, gunicorn).
    """
    for name in ("gunicorn.error", "gunicorn.access", "rq.worker", "rq.job", "rq.scheduler", "werkzeug",
                 "flask.app", *logging.root.manager.loggerDict):
        if not name.startswith(_FOREIGN_PREFIXES):
            continue
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def get_logger(name: str = "hooklane") -> Any:
    return structlog.get_logger(name)
