"""`hooklane` — one command for every process and operator task.

Each command group lives in its own module with a `register(subparsers)`;
adding one is adding a module and its line in COMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hooklane.operators.cli import config_cmd, dev, dlq, send, serve, sink, stats

COMMANDS = [serve, config_cmd, dlq, send, stats, dev, sink]


_CONFIG_HELP = "path of hooklane.toml (default: $HOOKLANE_CONFIG or ./hooklane.toml)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooklane", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=_CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    _accept_config_after_command(parser)
    return parser


def _accept_config_after_command(parser: argparse.ArgumentParser) -> None:
    """`hooklane dlq list --config x.toml` as well as `hooklane --config x.toml dlq list`.

    SUPPRESS: a subcommand that was not given --config must not reset the value given before it.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                subparser.add_argument("--config", default=argparse.SUPPRESS, help=_CONFIG_HELP)
                _accept_config_after_command(subparser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
