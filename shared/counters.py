"""Per-minute counters in Redis, shared by every worker, read by `hooklane stats`."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

KEEP_SECONDS = 2 * 3600


def _key(prefix: str, kind: str, minute: int) -> str:
    return f"{prefix}:stats:{kind}:{minute}"


def bump(pipe: Any, prefix: str, kind: str, n: int = 1, *, now: float | None = None) -> None:
    minute = int((time.time() if now is None else now) // 60)
    key = _key(prefix, kind, minute)
    pipe.incrby(key, n)
    pipe.expire(key, KEEP_SECONDS)


def recent(redis: Redis, prefix: str, kind: str, minutes: int = 5, *, now: float | None = None) -> int:
    current = int((time.time() if now is None else now) // 60)
    values = redis.mget([_key(prefix, kind, m) for m in range(current - minutes + 1, current + 1)])
    return sum(int(v) for v in values if v is not None)
