"""One downstream the tests control: a local HTTP receiver that records every POST and answers as told.

The http handler, dead-letter replays and the e2e pipeline all post to "a CRM". The tests need to choose
its answers (a status, a Retry-After, a reply too slow for the timeout) and to read back exactly what
arrived, so they share this one receiver rather than each writing its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# (status, extra response headers, seconds to wait before answering)
Reply = tuple[int, dict[str, str], float]


@dataclass(frozen=True)
class SinkRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the sink answered

    @property
    def event(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


class HttpSink:
    """Records every POST; answers the next scripted reply, else `status_by_path[path]`, else `default_status`.

    Listens on 127.0.0.1 (a free port) from construction until `close()`; also a context manager.
    """

    def __init__(self, default_status: int = 200) -> None:
        self.default_status = default_status
        self.status_by_path: dict[str, int] = {}
        self._script: deque[Reply] = deque()
        self._requests: list[SinkRequest] = []
        # The server answers from its own threads while the test reads and re-scripts.
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="http-sink", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[SinkRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, before falling back to the statuses."""
        with self._lock:
            self._script.extend(replies)

    def delivered(self, path: str | None = None) -> list[SinkRequest]:
        """Requests answered 2xx, optionally only those to `path`."""
        return [r for r in self.requests if 200 <= r.status < 300 and (path is None or r.path == path)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            if self._script:
                reply = self._script.popleft()
            else:
                reply = (self.status_by_path.get(path, self.default_status), {}, 0.0)
            # Recorded before the answer goes out: a client that has its response can already see it here.
            self._requests.append(SinkRequest(path, headers, body, reply[0]))
        return reply


class _Server(ThreadingHTTPServer):
    def __init__(self, sink: HttpSink) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sink = sink


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, delay = self.server.sink._answer(self.path, headers, body)
        time.sleep(delay)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # The tests read the records; an access line on stderr would also land in tests that capture
        # stderr, and test_logging fails on the query-string credentials such a line would carry.
        return
