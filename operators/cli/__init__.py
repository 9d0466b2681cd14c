"""`hooklane` — one command for every process and operator task.

Each command group lives in its own module with a `register(subparsers)`;
adding one is adding a module and its line in COMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hooklane.operators.cli import config_cmd, serve

COMMANDS = [serve, config_cmd]

for _optional in ("dlq", "send", "stats", "dev", "sink"):
    try:
        COMMANDS.append(__import__(f"operators.cli.{_optional}", fromlist=["register"]))
    except ModuleNotFoundError as exc:
        if exc.name != f"operators.cli.{_optional}":
            raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooklane", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="path of hooklane.toml (default: $HOOKLANE_CONFIG or ./hooklane.toml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
