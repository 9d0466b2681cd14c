"""What a worker process builds once at start-up and every job uses.

RQ jobs are plain functions named by string, so they find their config,
Redis connection and built handlers here. `workers.main` installs it; a job run
by any other RQ worker loads it lazily from HOOKLANE_CONFIG.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from redis import Redis
from rq.registry import StartedJobRegistry

from hooklane.shared import config as config_mod
from hooklane.shared.config import Config
from hooklane.shared.queueing import queue_name
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
            deduper=Deduper(redis, config.redis.prefix, config.worker.dedupe_window_seconds,
                            started_registry=StartedJobRegistry(queue_name(config), connection=redis).key),
            redact=Redactor.from_config(config),
        )


_current: Runtime | None = None

# The RQ execution running the current job, "<job id>:<execution id>" (set by workers.main's worker
# classes): the dedupe claim records it, so a second run of the same delivery can tell the first is alive.
current_execution: ContextVar[str] = ContextVar("hooklane_execution", default="")


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def get() -> Runtime:
    global _current
    if _current is None:
        config = config_mod.load()
        _current = Runtime.build(config, connect(config.redis.url, socket_timeout=None))
    return _current
