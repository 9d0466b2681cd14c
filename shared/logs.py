"""structlog, configured once for ingest, workers and the CLI.

JSON lines when stderr is not a terminal (production) or HOOKLANE_LOG_FORMAT=json;
coloured key=value lines in a terminal. Context (delivery_id, source, event_id,
job_id, ...) is bound once per request or job with `bind()` (contextvars) and
appears on every line after.

Two paths, one rendering:
- hooklane's own lines (`get_logger`) are rendered by structlog and written to
  stderr directly (`_StderrLogger`): ingest writes one per delivery, and going
  through stdlib logging cost five times the rendering (docs/benchmarks.md);
- the stdlib loggers of gunicorn, rq, werkzeug and flask go through the root
  handler, whose formatter ends in the same processors (`_tail`).
The chain is fixed at import and reads the level and renderer `configure()` set
on every line, because structlog caches a logger's pipeline on first use and
module-level loggers are used before `configure()` runs.

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

import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

from hooklane.shared.redaction import MASK, Redactor

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

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


class _Output:
    """What configure() chose: the minimum level and the rendering tail. Read per line, so loggers that
    structlog cached before configure() (a module-level `log = get_logger()` used at import) follow it."""

    level = logging.INFO
    render: Any = None  # set below, once the renderers exist


def _drop_below_level(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if _LEVELS.get(event_dict.get("level", "info"), logging.INFO) < _Output.level:
        raise structlog.DropEvent
    return event_dict


def _render(logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
    for processor in _Output.render:
        event_dict = processor(logger, method_name, event_dict)
    return event_dict  # type: ignore[return-value]  # the last processor returned the line


class _StderrLogger:
    """structlog's output for hooklane's own lines: one write of the rendered line to whatever sys.stderr is
    at emit time (a redirected stream, pytest's capture).

    hooklane's lines do not pass through stdlib logging: a LogRecord, its copy in ProcessorFormatter and the
    handler's locking cost more than rendering the line (docs/benchmarks.md, "Where the time goes"), and
    ingest writes one line per delivery. Foreign libraries' stdlib lines (gunicorn, rq, werkzeug) still go
    through the root handler below with the same rendering tail, so a process writes one format.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "hooklane") -> None:
        self.name = name

    def msg(self, line: str) -> None:
        stream = sys.stderr
        with _WRITE_LOCK:  # a long line goes out in several writes: threads must not interleave them
            stream.write(line + "\n")
            stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


# One lock for both paths (the root handler below uses it too), re-created in a forked child in case
# another thread held it at fork time (gunicorn forks its workers).
_WRITE_LOCK = threading.RLock()
os.register_at_fork(after_in_child=_WRITE_LOCK._at_fork_reinit)  # type: ignore[attr-defined]

# Set at import, not in configure(): loggers structlog cached before configure() keep this chain, which
# reads _Output on every line.
structlog.configure(
    processors=[*_SHARED, _drop_below_level, _render],
    logger_factory=_StderrLogger,
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    cache_logger_on_first_use=True,
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (pytest's capture, a redirected stream)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    def createLock(self) -> None:  # noqa: N802  (stdlib's name)
        self.lock = _WRITE_LOCK

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        raise AttributeError("the stream of this handler is always sys.stderr")

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  (stdlib's name)
        # logging swallows what emit raises; an exception a signal handler raised into the thread while it was
        # writing this line (RQ's StopRequested on SIGTERM) is not the line's error and must reach the program.
        if isinstance(sys.exc_info()[1], _RAISED_THROUGH):
            raise  # noqa: PLE0704  (re-raises the exception being handled)
        super().handleError(record)


_RAISED_THROUGH: tuple[type[BaseException], ...] = ()


def raise_through_handlers(*types: type[BaseException]) -> None:
    """Exceptions (raised by signal handlers) that writing a log line must never swallow."""
    global _RAISED_THROUGH
    _RAISED_THROUGH = tuple({*_RAISED_THROUGH, *types})


# Routine at info, kept at debug: RQ's maintenance pass (every maintenance interval) and its four lines per
# successful job (taken, "Job OK", completed in, result kept). hooklane writes its own info line for every
# job's outcome (handler.done, event.duplicate, event.unrouted, the retry and dead-letter lines) with the
# ids bound; RQ's four cost a worker more CPU than the http handler's POST (docs/benchmarks.md).
_ROUTINE_FOREIGN_LINES = frozenset({
    "Worker %s: cleaning registries for queue: %s",
    "Worker %s: cleaning group registries",
    "Worker %s: %s: %s (%s)",  # "<queue>: <description> (<id>)" when taken, "<queue>: Job OK (<id>)" when done
    "Worker %s: %s: %s",  # taken, with log_job_description off
    "Successfully completed %s job in %ss on worker %s",
    "Successfully completed job %s in %ss on worker %s",
    "Worker %s: job %s result is kept for %s seconds",
    "Worker %s: job %s result discarded immediately",
})


def _routine_at_debug(record: logging.LogRecord) -> bool:
    if record.levelno != logging.INFO or record.msg not in _ROUTINE_FOREIGN_LINES:
        return True
    if _Output.level > logging.DEBUG:
        return False
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return True


def _tail(fmt: str) -> list[Any]:
    """The processors that turn an event dict into the final line, for structlog's lines and stdlib's alike."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    return [
        structlog.processors.format_exc_info if fmt == "json" else _identity,
        _scrub_strings,
        renderer,
        _mask_secret_values,
    ]


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for stdlib records (gunicorn, rq, werkzeug): the same rendering as hooklane's own lines."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_tail(fmt)],
    )


def _default_format() -> str:
    return os.environ.get("HOOKLANE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")


_Output.render = _tail(_default_format())


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Idempotent; `fmt` is "json" or "console" (default: json unless stderr is a tty)."""
    global _configured
    fmt = fmt or _default_format()
    level_name = (level or os.environ.get("HOOKLANE_LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    if _configured == f"{fmt}:{level_name}" and ours:
        _route_foreign_loggers()
        return
    handler = _StderrHandler()
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(_routine_at_debug)
    # Keep handlers a test harness attached (pytest's caplog); replace anything else, ours included.
    root.handlers[:] = [h for h in root.handlers if _is_capture_handler(h)] + [handler]
    root.setLevel(level_name)
    _Output.level = logging.getLevelName(level_name)
    _Output.render = _tail(fmt)
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


def context_per_request(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a WSGI app so every request, whatever its route, starts without the previous request's log
    context and leaves none.

    The context (contextvars) lives as long as the thread that serves request after request: a line would
    carry the ids of an earlier delivery, ids its client chose, and so would the server's own lines between
    requests (gunicorn's "Invalid request", a worker's exit). Each request runs in a copy of the thread's
    context, which is never bound to, so what the request binds ends with it: cheaper than clearing at the
    start and the end (copying is constant time; clearing sets every bound variable again).
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return contextvars.copy_context().run(wsgi_app, environ, start_response)

    return app


def get_logger(name: str = "hooklane") -> Any:
    return structlog.get_logger(name)
