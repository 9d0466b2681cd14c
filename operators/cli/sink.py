"""`hooklane sink`: a local downstream that prints every event POSTed to it.

For trying the pipeline end to end: point an `http` handler at it, stop it (or
run it with `--fail-with 503`) to see retries and dead letters, start it again
and replay. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sink", help="a local downstream that prints the events it receives (for trying things)")
    p.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 (default 8001)")
    p.add_argument("--fail-with", type=int, metavar="STATUS",
                   help="answer every request with this status instead of 200 (e.g. 503 to see retries)")
    p.set_defaults(func=sink)


def make_server(port: int, fail_with: int | None = None, out: Any = None) -> ThreadingHTTPServer:
    out = out or sys.stdout

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = fail_with or 200
            try:
                event = json.loads(body)
                what = f"{event.get('type')} {event.get('id')}"
            except ValueError:
                what = f"{len(body)} bytes, not JSON"
            key = self.headers.get("Idempotency-Key", "-")
            print(f"{time.strftime('%H:%M:%S')} {status} {what} (Idempotency-Key: {key})", file=out, flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return  # one line per event is printed above; http.server's own line would repeat it

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def sink(args: argparse.Namespace) -> int:
    server = make_server(args.port, args.fail_with)
    mode = f"answering {args.fail_with}" if args.fail_with else "answering 200"
    print(f"hooklane sink on http://127.0.0.1:{args.port}/ ({mode}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0
