"""`hooklane stats`: is the pipeline keeping up? Queue, retries, dead letters, throughput, workers.

The numbers come from operators.actions.collect_stats, the same function behind
`GET /admin/stats`. Exit 0, or 2 when the config or Redis cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from redis import RedisError

from hooklane.operators.actions import STAT_KINDS, STAT_WINDOWS, collect_stats
from hooklane.operators.cli.common import load_config, redis_for

LABELS = {
    "processed": "events processed",
    "duplicates": "duplicates dropped",
    "retries": "retries scheduled",
    "dead_lettered": "dead-lettered",
    "unrouted": "unrouted (no handler)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="queue depth, retries, dead letters, recent throughput, workers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    config = load_config(args)
    try:
        data = collect_stats(redis_for(config), config)
    except RedisError as exc:
        print(f"hooklane stats: Redis error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render(data))
    return 0


def render(data: dict[str, Any]) -> str:
    q = data["queue"]
    oldest = "" if q["oldest_waiting_age_seconds"] is None else \
        f" (oldest waiting {_age(q['oldest_waiting_age_seconds'])})"
    lines = [
        f"queue {q['name']}: {q['waiting']} waiting{oldest}, {q['running']} running, "
        f"{q['scheduled_retries']} retries scheduled",
    ]
    dl = data["dead_letters"]
    groups = ", ".join(f"{h} {n}" for h, n in dl["by_handler"].items())
    partial = "" if dl["by_handler_complete"] else " (grouped over the newest ones only)"
    lines.append(f"dead letters: {dl['total']}" + (f" ({groups}){partial}" if groups else ""))
    lines.append("")
    heads = [f"{m}m" for m in STAT_WINDOWS]
    label_w = max(len(v) for v in LABELS.values())
    lines.append(f"{'last':<{label_w}}  " + "  ".join(f"{h:>7}" for h in heads))
    for kind in STAT_KINDS:
        counts = data["events"][kind]
        lines.append(f"{LABELS[kind]:<{label_w}}  " + "  ".join(f"{counts[h]:>7}" for h in heads))
    lines.append("")
    workers = data["workers"]
    lines.append(f"workers alive: {len(workers)}")
    for w in workers:
        beat = "never" if w["heartbeat_age_seconds"] is None else f"{_age(w['heartbeat_age_seconds'])} ago"
        lines.append(f"  {w['name']}  {w['state']}  pid {w['pid'] or '?'} on {w['hostname'] or '?'}  "
                     f"heartbeat {beat}")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
