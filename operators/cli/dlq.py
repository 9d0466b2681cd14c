"""`hooklane dlq list|show|replay|purge`: what was dead-lettered, in full, and putting it back to work.

Exit codes: 0 done, 1 some ids were not found or lost to a concurrent operator
(or the operator declined), 2 usage, config or Redis error. Tables and
summaries go to stdout, prompts and the progress bar to stderr, so `--json`
output can always be piped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from typing import Any, TextIO

from redis import Redis, RedisError

from hooklane.operators import actions
from hooklane.operators.actions import OperatorError
from hooklane.operators.cli.common import load_config, redis_for
from hooklane.shared import deadletters
from hooklane.shared.config import Config
from hooklane.shared.deadletters import Filters

DEFAULT_LIMIT = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="list, inspect, replay and purge dead letters")
    commands = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    ls = commands.add_parser("list", help="dead letters, newest first, with a count by handler and error")
    _add_filters(ls)
    ls.add_argument("--limit", type=_non_negative, default=DEFAULT_LIMIT,
                    help=f"rows to show (default {DEFAULT_LIMIT}, 0 = all); the summary counts every match")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_guard(cmd_list))

    show = commands.add_parser("show", help="one dead letter in full (secrets redacted)")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_guard(cmd_show))

    rp = commands.add_parser("replay", help="put the failed stage back to work with a fresh attempt budget")
    _add_selection(rp)
    rp.add_argument("--dry-run", action="store_true", help="show what would be replayed, change nothing")
    rp.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (bulk replay)")
    rp.add_argument("--json", action="store_true", help="machine-readable output")
    rp.set_defaults(func=_guard(cmd_replay))

    pg = commands.add_parser("purge", help="delete dead letters for good")
    _add_selection(pg)
    pg.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    pg.add_argument("--json", action="store_true", help="machine-readable output")
    pg.set_defaults(func=_guard(cmd_purge))


def _add_selection(p: argparse.ArgumentParser) -> None:
    """Which dead letters a bulk action touches: these ids, or --all of those matching the filters."""
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every dead letter matching the filters (or all of them)")
    _add_filters(p)


def _add_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters")
    g.add_argument("--source", help="configured source name")
    g.add_argument("--provider", help="provider name, e.g. volumereach")
    g.add_argument("--type", help="canonical event type; 'call.*' matches a family")
    g.add_argument("--handler", help="handler name")
    g.add_argument("--stage", choices=deadletters.STAGES, help="stage that failed")
    g.add_argument("--error", help="substring of the last error's class or message (case-insensitive)")
    g.add_argument("--since", help="died at or after: ISO 8601 or an age like 15m, 2h, 3d")
    g.add_argument("--until", help="died at or before: ISO 8601 or an age like 15m, 2h, 3d")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _guard(func: Callable[[argparse.Namespace, Config, Redis], int]) -> Callable[[argparse.Namespace], int]:
    """Config, Redis and input errors become one line on stderr and exit 2, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        config = load_config(args)
        try:
            return func(args, config, redis_for(config))
        except OperatorError as exc:
            _err(f"hooklane dlq: {exc}")
            return 2
        except RedisError as exc:
            # redis-py's messages name host and port, never the password of the URL.
            _err(f"hooklane dlq: Redis error: {type(exc).__name__}: {exc}")
            return 2

    return run


def _filters(args: argparse.Namespace) -> Filters:
    return actions.parse_filters({k: getattr(args, k, None) for k in actions.FILTER_FIELDS})


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    filters = _filters(args)
    listing = actions.scan(redis, config, filters, limit=args.limit or None)
    if args.json:
        _print_json({
            "total": listing.total,
            "count": len(listing.rows),
            "filters": actions.filters_dict(filters),
            "entries": listing.rows,
            "summary": [{"handler": h, "error": e, "count": n} for h, e, n in listing.summary],
        })
        return 0
    if not listing.total:
        print("No dead letters" + ("" if not actions.has_filters(filters) else " match these filters") + ".")
        return 0
    # A terminal gets a table cut to its width; a pipe or file gets every value whole (grep, awk, less -S).
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else None
    for line in render_table(listing.rows, width):
        print(line)
    print()
    shown = len(listing.rows)
    head = f"{listing.total} dead letter{'s' if listing.total != 1 else ''}"
    if shown < listing.total:
        head += f" (newest {shown} shown; --limit 0 shows all)"
    print(f"{head}, by handler and error:")
    w_handler = max(len(h) for h, _, _ in listing.summary)
    w_error = max(len(e) for _, e, _ in listing.summary)
    for handler, error, n in listing.summary:
        print(f"  {handler:<{w_handler}}  {error:<{w_error}}  {n:>6}")
    return 0


def render_table(rows: list[dict[str, Any]], width: int | None) -> list[str]:
    """Columns sized to their content; the last error takes what is left of the terminal width.

    The id is never cut: it is what `show` and `replay` take. `width=None` cuts nothing.
    """
    cells = [
        [
            r["id"] or "",
            _short_time(r.get("died_at")),
            r.get("source") or "-",
            r.get("event_type") or "-",
            r.get("handler") or f"[{r.get('stage')}]",
            str(r.get("attempts", 0)),
            _error_text(r.get("error") or {}),
        ]
        for r in rows
    ]
    headers = ["ID", "DIED AT (UTC)", "SOURCE", "TYPE", "HANDLER", "ATT", "LAST ERROR"]
    caps = [None, None, 16, 24, 20, None] if width is not None else [None] * 6
    widths = []
    for i, cap in enumerate(caps):
        w = max(len(headers[i]), *(len(c[i]) for c in cells))
        widths.append(min(w, cap) if cap else w)
    gap = 2
    if width is None:
        widths.append(max(len(headers[6]), *(len(c[6]) for c in cells)))
        return _table_lines(headers, cells, widths, gap)
    rest = width - sum(widths) - gap * len(widths)
    # A narrow terminal: give up room in source, type and handler (never below 8) before the error's.
    for i in (3, 4, 2):
        if rest >= 20:
            break
        give = min(widths[i] - 8, 20 - rest)
        if give > 0:
            widths[i] -= give
            rest += give
    widths.append(max(rest, 20))
    return _table_lines(headers, cells, widths, gap)


def _table_lines(headers: list[str], cells: list[list[str]], widths: list[int], gap: int) -> list[str]:
    lines = []
    for row in [headers, *cells]:
        parts = []
        for i, text in enumerate(row):
            text = _fit(text, widths[i])
            parts.append(text.rjust(widths[i]) if i == 5 else text.ljust(widths[i]))
        lines.append((" " * gap).join(parts).rstrip())
    return lines


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _short_time(iso: str | None) -> str:
    # "2025-03-14T15:02:11.123456Z" -> "2025-03-14 15:02:11": seconds are precise enough to read.
    return (iso or "-")[:19].replace("T", " ")


def _error_text(error: dict[str, Any]) -> str:
    text = f"{error.get('class') or '?'}: {error.get('message') or ''}"
    if error.get("status"):
        text += f" [{error['status']}]"
    return " ".join(text.split())  # tracebacks and multi-line messages: one table line


# --------------------------------------------------------------------------- show


def cmd_show(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    entry = deadletters.get(redis, config, args.id)
    if entry is None:
        _err(f"hooklane dlq: no dead letter {args.id!r} (replayed, purged or expired?)")
        return 1
    shown = actions.present_entry(entry, actions.redactor_for(config))
    if args.json:
        _print_json(shown)
    else:
        print(render_entry(shown))
    return 0


def render_entry(e: dict[str, Any]) -> str:
    error = e.get("error") or {}
    lines = [
        f"dead letter   {e.get('id')}",
        f"stage         {e.get('stage')}"
        + {"normalize": "  (replay re-normalizes the raw delivery)",
           "delivery": "  (replay re-runs the whole delivery)",
           "handler": "  (replay re-runs only this handler)"}.get(e.get("stage") or "", ""),
        f"died at       {e.get('died_at')}",
        f"source        {e.get('source') or '-'} ({e.get('provider') or '?'})",
        f"event         {e.get('event_id') or '-'}  {e.get('event_type') or ''}".rstrip(),
        f"handler       {e.get('handler') or '-'}",
        f"last error    {_error_text(error)}",
    ]
    replays = e.get("replays") or []
    if replays:
        lines.append(f"replayed      {len(replays)} time{'s' if len(replays) != 1 else ''} before:")
        for r in replays:
            lines.append(f"                {r.get('at')}  job {r.get('job_id')}  from {r.get('entry_id')}")
    attempts = e.get("attempts") or []
    lines += ["", f"attempts ({len(attempts)}):"]
    for i, a in enumerate(attempts, 1):
        dur = f"{a['duration_ms']:.0f} ms" if isinstance(a.get("duration_ms"), int | float) else "-"
        status = f" [{a['status']}]" if a.get("status") else ""
        lines.append(f"  {i:>2}  {a.get('at')}  {dur:>9}  {a.get('error_class')}{status}: {a.get('message')}")
    if e.get("event") is not None:
        lines += ["", "canonical event:", _indent(json.dumps(e["event"], indent=2, ensure_ascii=False))]
    d = e.get("delivery")
    if isinstance(d, dict):
        lines += ["", "raw delivery:"]
        for key in ("id", "received_at", "method", "path", "query", "client_ip", "remote_addr", "delivery_id"):
            if d.get(key) not in (None, "", {}):
                lines.append(f"  {key:<12}{d[key]}")
        for name, value in sorted((d.get("headers") or {}).items()):
            lines.append(f"  header      {name}: {value}")
        lines.append(f"  body        {d.get('body_bytes', '?')} bytes, {d.get('body_encoding', '?')}:")
        lines.append(_indent(_pretty_body(d)))
    if e.get("traceback"):
        lines += ["", "traceback:", _indent(e["traceback"].rstrip())]
    return "\n".join(lines)


def _pretty_body(d: dict[str, Any]) -> str:
    body = d.get("body")
    if body is None:
        return d.get("body_error") or "(no body)"
    if d.get("body_encoding") == "utf-8":
        try:
            return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except ValueError:
            return body
    return body


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


# --------------------------------------------------------------------------- replay / purge


def _targets(args: argparse.Namespace, config: Config, redis: Redis, verb: str) -> tuple[list[str], Filters, bool]:
    """(ids, filters, bulk): explicit ids, or every match of --all / the filters."""
    filters = _filters(args)
    filtered = actions.has_filters(filters)
    if args.ids:
        if args.all or filtered:
            raise OperatorError(f"{verb}: give ids, or --all / filters, not both")
        return list(dict.fromkeys(args.ids)), filters, False
    if not (args.all or filtered):
        raise OperatorError(f"{verb}: give dead-letter ids, or --all and/or filters (e.g. --handler crm)")
    return actions.matching_ids(redis, config, filters), filters, True


def _confirm(question: str, assume_yes: bool) -> bool | None:
    """True/False from the operator; None when nobody can answer (stdin is not a terminal)."""
    if assume_yes:
        return True
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        return None
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def _ask(question: str, args: argparse.Namespace, verb: str) -> int | None:
    """None to go ahead, else the exit code."""
    answer = _confirm(question, args.yes)
    if answer is None:
        _err(f"hooklane dlq: refusing to {verb} without confirmation: stdin is not a terminal (pass --yes)")
        return 2
    if not answer:
        _err("hooklane dlq: nothing done")
        return 1
    return None


class ProgressBar:
    """A few `\\r` lines on stderr, only for a person watching a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.width = width
        self._last = -1
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 1:
            return
        filled = self.width * done // total
        # Redraw on a visible change only: thousands of writes would slow the replay itself.
        if filled == self._last and done != total:
            return
        self._last = filled
        self._drawn = True
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def cmd_replay(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    ids, filters, bulk = _targets(args, config, redis, "replay")
    if bulk and not ids:
        if args.json:
            _print_json(actions.BulkResult("replay", dry_run=args.dry_run).to_dict())
        else:
            print("No dead letters match: nothing to replay.")
        return 0
    if bulk and not args.dry_run:
        code = _ask(f"Replay {len(ids)} dead letter{'s' if len(ids) != 1 else ''} "
                    f"(filters: {actions.describe_filters(filters)})?", args, "replay in bulk")
        if code is not None:
            return code
    bar = ProgressBar("replaying" if not args.dry_run else "checking")
    try:
        result = actions.replay_many(redis, config, ids, dry_run=args.dry_run, progress=bar if bulk else None)
    finally:
        bar.close()
    _report(result, args.json, each=not bulk or args.dry_run)
    return 0 if result.ok else 1


def cmd_purge(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    ids, filters, bulk = _targets(args, config, redis, "purge")
    if not ids:
        if args.json:
            _print_json(actions.BulkResult("purge").to_dict())
        else:
            print("No dead letters match: nothing to purge.")
        return 0
    what = f"{len(ids)} dead letter{'s' if len(ids) != 1 else ''}"
    question = (f"Delete {what} for good (filters: {actions.describe_filters(filters)})?" if bulk
                else f"Delete {what} for good ({', '.join(ids[:5])}{', …' if len(ids) > 5 else ''})?")
    code = _ask(question, args, "purge")
    if code is not None:
        return code
    bar = ProgressBar("purging")
    try:
        result = actions.purge_many(redis, config, ids, progress=bar if bulk else None)
    finally:
        bar.close()
    _report(result, args.json, each=not bulk)
    return 0 if result.ok else 1


def _report(result: actions.BulkResult, as_json: bool, *, each: bool) -> None:
    """Problems always get a line; successes only when `each` (explicit ids, or a dry run's plan)."""
    if as_json:
        _print_json(result.to_dict())
        return
    for r in result.results:
        status = r["status"]
        if status in (actions.REPLAYED, actions.PURGED) and not each:
            continue
        if status == actions.REPLAYED:
            print(f"replayed      {r['id']} -> job {r['job_id']} ({_what(r)})")
        elif status == actions.WOULD_REPLAY:
            print(f"would replay  {r['id']} ({_what(r)})")
        elif status == actions.PURGED:
            print(f"purged        {r['id']}")
        elif status == actions.NOT_FOUND:
            _err(f"not found     {r['id']} (already replayed, purged or expired)")
        else:
            _err(f"conflict      {r['id']}: {r.get('reason')}")
    counts = result.counts
    parts = [f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items())]
    print(f"{'dry run: ' if result.dry_run else ''}{len(result.results)} dead letter"
          f"{'s' if len(result.results) != 1 else ''}: {', '.join(parts)}")


def _what(r: dict[str, Any]) -> str:
    if r.get("stage") == "handler":
        return f"handler {r.get('handler')} for {r.get('event_id')}"
    return f"re-{'normalize' if r.get('stage') == 'normalize' else 'run'} delivery"
