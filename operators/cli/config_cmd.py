"""`hooklane check-config`: print what was understood, or name the bad key (exit 2)."""

from __future__ import annotations

import argparse

from hooklane.operators.cli.common import load_config, redis_for
from hooklane.shared.config import describe
from hooklane.workers.handlers.suppression import is_suppressed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate hooklane.toml and print what it configures")
    p.set_defaults(func=check_config)
    s = sub.add_parser("suppression", help="look up a number in a suppression list")
    s.add_argument("action", choices=["check"])
    s.add_argument("phone")
    s.add_argument("--list", default="suppression", help="the handler's suppression_key (default: suppression)")
    s.set_defaults(func=suppression)


def check_config(args: argparse.Namespace) -> int:
    config = load_config(args)
    print(describe(config))
    return 0


def suppression(args: argparse.Namespace) -> int:
    config = load_config(args)
    record = is_suppressed(redis_for(config), config.redis.prefix, args.list, args.phone)
    if record is None:
        print(f"{args.phone}: not suppressed")
        return 1
    print(f"{args.phone}: suppressed ({record['outcome']}, event {record['event_id']})")
    return 0
