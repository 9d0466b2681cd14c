"""What a worker process builds once at start-up and every job uses.

RQ jobs are plain functions named by string, so they find their config,
Redis connection and built handlers here. `workers.main` installs it; a job run
by any other RQ worker loads it lazily from HOOKLANE_CONFIG.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from hooklane.shared import config as config_mod
from hooklane.shared.config import Config
from hooklane.shared.redaction import Redactor
from hooklane.shared.redisconn import connect
from hooklane.workers.dedupe import Deduper
from hooklane.workers.handlers import Handler, build_all


@dataclass
class Runtime:
    config: Config
    redis: Redis
    handlers: dict[str, Handler]
    deduper: Deduper
    redact: Redactor

    @classmethod
    def build(cls, config: Config, redis: Redis) -> Runtime:
        return cls(
            config=config,
            redis=redis,
            handlers=build_all(config, redis),
            deduper=Deduper(redis, config.redis.prefix, config.worker.dedupe_window_seconds),
            redact=Redactor.from_config(config),
        )


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def get() -> Runtime:
    global _current
    if _current is None:
        config = config_mod.load()
        _current = Runtime.build(config, connect(config.redis.url, socket_timeout=None))
    return _current
