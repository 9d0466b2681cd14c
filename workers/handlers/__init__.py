"""Downstream handlers: one module per type, one small interface.

A handler is a callable ``handler(event: dict) -> None`` that returns when the
event is delivered and raises `workers.errors.TransientError` /
`PermanentError` (or anything else, counted as transient) when it is not.
`build` turns each ``[handlers.NAME]`` table into one, once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis import Redis

from hooklane.shared.config import Config, HandlerConfig
from hooklane.workers.handlers.http import HttpHandler
from hooklane.workers.handlers.log import LogHandler
from hooklane.workers.handlers.python import PythonHandler
from hooklane.workers.handlers.suppression import SuppressionHandler

Handler = Callable[[dict[str, Any]], None]


def build(cfg: HandlerConfig, config: Config, redis: Redis) -> Handler:
    if cfg.type == "http":
        return HttpHandler(cfg, pool_size=config.worker.concurrency)
    if cfg.type == "suppression":
        return SuppressionHandler(cfg, redis, prefix=config.redis.prefix)
    if cfg.type == "python":
        return PythonHandler(cfg)
    if cfg.type == "log":
        return LogHandler(cfg)
    raise ValueError(f"handlers.{cfg.name}.type: unknown handler type {cfg.type!r}")


def build_all(config: Config, redis: Redis) -> dict[str, Handler]:
    return {name: build(h, config, redis) for name, h in config.handlers.items()}
