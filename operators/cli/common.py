"""Helpers every command uses: load the config (exit 2 naming the bad key), connect to Redis."""

from __future__ import annotations

import argparse
import sys

from redis import Redis

from hooklane.shared import config as config_mod
from hooklane.shared.config import Config, ConfigError
from hooklane.shared.redisconn import connect


def load_config(args: argparse.Namespace) -> Config:
    try:
        return config_mod.load(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"hooklane: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def redis_for(config: Config) -> Redis:
    return connect(config.redis.url, socket_timeout=10.0)
