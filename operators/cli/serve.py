"""`hooklane ingest` (gunicorn), `hooklane admin` (gunicorn) and `hooklane worker` (RQ)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from hooklane.operators.cli.common import load_config
from hooklane.shared.config import Config, ConfigError, check_concurrency

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "ingest" / "gunicorn.conf.py"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="run the webhook intake (gunicorn)")
    p.add_argument("--bind", help="HOST:PORT (default 0.0.0.0:$PORT, 8000 without PORT)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes (default: see ingest/gunicorn.conf.py)")
    p.set_defaults(func=ingest)

    a = sub.add_parser("admin", help="run the admin API (dead letters, stats over HTTP) on a private port")
    a.add_argument("--bind", help="HOST:PORT (default 127.0.0.1:8002; keep it off the providers' port)")
    a.set_defaults(func=admin)

    w = sub.add_parser("worker", help="run a worker: normalize, dedupe, handlers, retries, dead letters")
    w.add_argument("--burst", action="store_true", help="exit once the queue is empty (tests, batch jobs)")
    w.add_argument("--no-scheduler", action="store_true", help="do not run RQ's scheduler in this process")
    w.add_argument("--name", help="worker name (default: hooklane-<host>-<pid>-<random>)")
    w.add_argument("--concurrency", type=int, metavar="N",
                   help="jobs this process runs at once, in threads (default: [worker] concurrency)")
    w.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /metrics and /healthz of this worker on PORT (default: [worker] metrics_port, off)")
    w.set_defaults(func=worker)


def ingest_argv(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "hooklane.ingest.wsgi:app"]


def ingest(args: argparse.Namespace) -> int:
    config = load_config(args)  # fail here, naming the key, before gunicorn forks anything
    env = _process_env(args, config)
    if args.bind:
        env["HOOKLANE_BIND"] = args.bind
    if args.workers:
        env["HOOKLANE_INGEST_WORKERS"] = str(args.workers)
    argv = ingest_argv(args)
    os.execve(argv[0], argv, env)
    return 0  # not reached


def admin_argv() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "python:hooklane.operators.admin_gunicorn",
            "hooklane.operators.admin_wsgi:app"]


def admin(args: argparse.Namespace) -> int:
    from hooklane.operators.admin import TOKEN_ENV, admin_token

    config = load_config(args)
    if not admin_token():
        print(f"hooklane admin: {TOKEN_ENV} is not set: every route needs it as a bearer token "
              "(e.g. `openssl rand -hex 32`)", file=sys.stderr)
        return 2
    env = _process_env(args, config)
    if args.bind:
        env["HOOKLANE_ADMIN_BIND"] = args.bind
    argv = admin_argv()
    os.execve(argv[0], argv, env)
    return 0  # not reached


def with_concurrency(config: Config, concurrency: int) -> Config:
    """The config with `--concurrency` in place of `[worker] concurrency`, checked the same way."""
    if concurrency < 1:
        raise ConfigError(f"--concurrency: must be an integer >= 1, got {concurrency}")
    check_concurrency(concurrency, config.worker.worker_class, "--concurrency")
    return dataclasses.replace(config, worker=dataclasses.replace(config.worker, concurrency=concurrency))


def worker(args: argparse.Namespace) -> int:
    from hooklane.workers.main import run

    config = load_config(args)
    try:
        if args.concurrency is not None:
            config = with_concurrency(config, args.concurrency)
        # Handlers are built at start-up and may refuse what only the environment tells (a socks proxy).
        ok = run(config, burst=args.burst, with_scheduler=not args.no_scheduler, name=args.name,
                 metrics_port=args.metrics_port)
    except ConfigError as exc:
        print(f"hooklane: config error: {exc}", file=sys.stderr)
        return 2
    return 0 if ok or args.burst else 1


def _process_env(args: argparse.Namespace, config: Config) -> dict[str, str]:
    """The environment of a gunicorn that loads the config again in each worker: the same file, by absolute path."""
    env = dict(os.environ)
    if args.config:
        env["HOOKLANE_CONFIG"] = str(Path(args.config).resolve())
    elif config.path:
        env["HOOKLANE_CONFIG"] = str(Path(config.path).resolve())
    return env
