"""A gunicorn worker that reads each request whole before the app sees it: slow clients cannot hold it.

gunicorn's sync worker reads a request while the app waits for it, so a client trickling its
headers or body at a byte a second holds a worker until gunicorn kills it (30 s); two such
clients stopped a two-worker ingest. This worker keeps sync's model for the part that costs CPU,
one request at a time in the worker's only thread (an ingest request is CPU-bound around one short
Redis round trip, and threads measured slower: docs/benchmarks.md), and moves the reading into an
event loop:

- every connection is read without blocking, into memory, until its request is complete: the head
  (found by its blank line, then parsed once by gunicorn's own parser) and then the body its
  framing announces (Content-Length, or chunked up to the last chunk and its trailers);
- only then does the app run, over the buffered bytes, so it never waits on a socket;
- a request not complete within `[ingest] request_read_timeout_seconds` of its connection's accept
  (head and body together: header trickling counts too) is answered 408 and closed;
- a body past `[ingest] max_body_bytes` is handed over once the limit is crossed, so the app answers
  its 413 without the worker buffering more; malformed framing is handed over at once, and the app
  answers 400 with gunicorn's reason;
- what the connections still sending hold in all is bounded by `[ingest] max_buffered_bytes`: when a
  read crosses it, the connections that sent nothing for longest are answered 503 with Retry-After and
  closed until it fits. A crowd of clients each sending most of a large body and stalling costs a
  bounded amount of memory, not the process, and a large delivery arriving at full speed meanwhile
  displaces them instead of being refused (a request that arrives whole is always served).

What this does not cover: TLS (terminate it in front of ingest) and HTTP/2. The answer is written
with the socket blocking for at most the read timeout, which only a client that stops reading a
response larger than its socket buffers could hit (ingest's answers are a few hundred bytes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.errors import NoMoreData, ParseException
from gunicorn.http.message import Request
from gunicorn.http.unreader import Unreader
from gunicorn.workers.sync import SyncWorker

from hooklane.shared import config as hl_config
from hooklane.shared import logs

log = logs.get_logger("hooklane.ingest")

_RECV = 65536
# How long a closed connection's remaining input is read and dropped, so that unread input does not
# turn the close into a reset that could destroy the answer before the client reads it (RFC 9112 9.6).
_LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 65536
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_MAX_TRAILERS = 8190 * 32  # gunicorn's bound on a trailer section
# A chunked body's size lines and trailers cost bytes beyond the data they frame; past this many
# bytes per allowed body byte (plus a head's worth), the body is handed over to be refused.
_CHUNKED_OVERHEAD = 4


class _Received(Unreader):
    """What a connection has received so far, handed out once; after that, the end of the input."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def chunk(self, size_hint: int | None = None) -> bytes:
        data, self.data = self.data, b""
        return data


class _ChunkedEnd:
    """Finds where a chunked body ends, incrementally, without decoding it.

    Only a readiness test: gunicorn's ChunkedReader still decodes and checks the body when the app
    reads it. Anything this cannot follow counts as ready, so that the reader reports it.
    """

    __slots__ = ("decoded", "limit", "pos", "in_trailers", "scanned", "found")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pos = 0  # start of the next size line (or of the trailers)
        self.decoded = 0
        self.in_trailers = False
        self.scanned = 0  # trailer bytes already searched for their end
        self.found = False  # the whole body is buffered

    def ready(self, buf: bytearray) -> bool:
        while not self.in_trailers:
            eol = buf.find(b"\r\n", self.pos)
            if eol < 0:
                return len(buf) - self.pos > 8192  # a size line that long is refused by the reader
            size_field = bytes(buf[self.pos:eol]).split(b";", 1)[0].rstrip(b" \t")
            if not _HEX.fullmatch(size_field):
                return True
            size = int(size_field, 16)
            if size == 0:
                self.in_trailers = True
                self.pos = eol + 2
                break
            if self.decoded + size > self.limit:
                return True  # the app reads past its limit and answers 413 (or 400 if the data ends first)
            end = eol + 2 + size + 2
            if len(buf) < end:
                return False
            if buf[end - 2:end] != b"\r\n":
                return True
            self.decoded += size
            self.pos = end
        # Trailers: none ("\r\n" right away) or header lines up to a blank line.
        if len(buf) - self.pos < 2:
            return False
        start = max(self.pos, self.scanned - 3)  # each byte searched once, however slowly the trailers come
        self.scanned = len(buf)
        self.found = buf[self.pos:self.pos + 2] == b"\r\n" or buf.find(b"\r\n\r\n", start) >= 0
        return self.found or len(buf) - self.pos > _MAX_TRAILERS


class _Conn:
    __slots__ = ("sock", "addr", "listener", "deadline", "buf", "scanned", "head_seen", "req", "body_done",
                 "body_whole", "lingering", "drained", "counted")

    def __init__(self, sock: socket.socket, addr: Any, listener: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.listener = listener
        self.deadline = deadline
        self.buf = bytearray()  # the head until it is parsed, then the body
        self.scanned = 0  # head bytes already searched for the blank line that ends it
        self.head_seen = False
        self.req: Request | None = None
        # Ready for the app: a function of the buffered body, set once the head is parsed.
        self.body_done: Callable[[bytearray], bool] | None = None
        # Whether the whole body is buffered (it may be ready for the app before, to be refused).
        self.body_whole: Callable[[bytearray], bool] = lambda buf: False
        self.lingering = False
        self.drained = 0
        self.counted = 0  # len(buf) as last added to the worker's buffered total


def _refusal(status: bytes, reason: str, headers: bytes = b"") -> bytes:
    body = json.dumps({"status": "refused", "reason": reason}, separators=(",", ":")).encode()
    return (b"HTTP/1.1 %s\r\nConnection: close\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (status, headers, len(body), body))


class BufferingWorker(SyncWorker):
    """gunicorn's sync worker with each request read whole, without blocking, before the app runs."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if cfg.is_ssl:
            raise RuntimeError("ingest's worker does not terminate TLS: terminate it in front of ingest")

    def init_process(self) -> None:
        # Here, in the worker, not at import: the master imports this module before gunicorn.conf.py has set
        # PROMETHEUS_MULTIPROC_DIR, and prometheus_client picks its storage when it is first imported.
        from hooklane.ingest import http_metrics

        self.refused = http_metrics.CONNECTIONS_REFUSED
        ingest = hl_config.load().ingest
        self.read_timeout = ingest.request_read_timeout_seconds
        self.max_body = ingest.max_body_bytes
        self.answer_408 = _refusal(b"408 Request Timeout", f"request not received within {self.read_timeout:g} s")
        self.answer_503 = _refusal(b"503 Service Unavailable", "ingest is receiving too many requests at once",
                                   b"Retry-After: %d\r\n" % ingest.retry_after_seconds)
        self.max_buffered = ingest.max_buffered_bytes
        self.buffered = 0  # len(buf) summed over the connections still sending
        # Those holding bytes, by when they last sent some: the first is the first to be shed.
        self.holding: dict[int, _Conn] = {}
        # Past this, a head is refused by gunicorn's parser: hand it over to be refused.
        self.max_head = (self.cfg.limit_request_line + 4
                         + max(self.cfg.limit_request_fields, 1) * (self.cfg.limit_request_field_size + 2))
        # Each connection is a file descriptor: stay clear of the process's limit, or accept() would fail.
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            fd_limit = self.cfg.worker_connections + 64
        self.max_conns = max(1, min(self.cfg.worker_connections, fd_limit - 64))
        # What one connection can need before it is certain to be handed over (a chunked body's framing).
        self.max_conn_bytes = _CHUNKED_OVERHEAD * self.max_body + self.max_head
        self.selector = selectors.DefaultSelector()
        # By accept time, so by deadline: the first entry is always the next to expire.
        self.waiting: dict[int, _Conn] = {}
        self.lingering: dict[int, _Conn] = {}
        super().init_process()

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ, listener)
        self.selector.register(self.PIPE[0], selectors.EVENT_READ, None)
        accepting = True
        stop_by: float | None = None
        while True:
            self.notify()
            now = time.monotonic()
            if not self.alive:
                if stop_by is None:  # SIGTERM or max_requests: finish what was accepted, within the grace
                    stop_by = now + self.cfg.graceful_timeout
                if not (self.waiting or self.lingering) or now > stop_by:
                    break
            want_accept = self.alive and len(self.waiting) + len(self.lingering) < self.max_conns
            if want_accept != accepting:
                for listener in self.sockets:
                    if want_accept:
                        self.selector.register(listener, selectors.EVENT_READ, listener)
                    else:
                        self.selector.unregister(listener)
                accepting = want_accept
            for key, _ in self.selector.select(self._next_wake(now)):
                what = key.data
                if what is None:
                    _drain_pipe(self.PIPE[0])
                elif isinstance(what, _Conn):
                    if what.lingering:
                        self._linger_read(what)
                    else:
                        self._read(what)
                elif accepting:
                    self._accept(what)
            self._expire(time.monotonic())
            if not self.is_parent_alive():
                break
        for conn in [*self.waiting.values(), *self.lingering.values()]:
            self._close(conn)

    def _next_wake(self, now: float) -> float:
        wake = 1.0  # the heartbeat (gunicorn's timeout is 30 s)
        for table in (self.waiting, self.lingering):
            if table:
                wake = min(wake, next(iter(table.values())).deadline - now)
        return max(wake, 0.0)

    def _expire(self, now: float) -> None:
        while self.waiting:
            conn = next(iter(self.waiting.values()))
            if conn.deadline > now:
                break
            self._read(conn)  # what arrived while the app ran for someone else counts: if complete, it is served
            if self.waiting.get(conn.sock.fileno()) is conn:
                self._time_out(conn)
        while self.lingering:
            conn = next(iter(self.lingering.values()))
            if conn.deadline > now:
                break
            self._close(conn)

    # ------------------------------------------------------------------ reading

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return  # another worker took it, or the client left
            raise
        sock.setblocking(False)
        conn = _Conn(sock, addr, listener, time.monotonic() + self.read_timeout)
        # The request has usually arrived with the connection: most are served without a wait.
        self._read(conn)

    def _read(self, conn: _Conn) -> None:
        eof = False
        try:
            while True:
                data = conn.sock.recv(_RECV)
                if not data:
                    eof = True
                    break
                conn.buf += data
                if len(data) < _RECV or len(conn.buf) > self.max_conn_bytes:
                    break  # all there is for now, or enough to decide: a fast sender cannot keep this loop
        except BlockingIOError:
            eof = False  # all there is for now
        except OSError:
            self._close(conn)
            return
        try:
            ready = self._ready(conn) or eof
        except ParseException as exc:  # a head gunicorn refuses: answered as sync would (400, 414, 431, ...)
            self._forget(conn)
            self._respond(conn, error=exc)
            return
        if ready:
            self._forget(conn)
            self._respond(conn)
            return
        fd = conn.sock.fileno()
        if len(conn.buf) != conn.counted:  # it sent something: it goes to the back of the line
            self._release(conn)
            if conn.buf:
                conn.counted = len(conn.buf)
                self.buffered += conn.counted
                self.holding[fd] = conn
        shed_self = False
        while self.buffered > self.max_buffered and self.holding:
            victim = next(iter(self.holding.values()))  # at worst this one, when it alone is over
            self._shed(victim)
            shed_self = shed_self or victim is conn
        if not shed_self and fd not in self.waiting:
            self.waiting[fd] = conn
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _ready(self, conn: _Conn) -> bool:
        """Whether the request can go to the app: complete, or certain to be refused whatever follows."""
        if conn.req is None:
            if not conn.head_seen:
                start = max(0, conn.scanned - 3)  # each byte searched once, however slowly the head comes
                conn.scanned = len(conn.buf)
                if conn.buf.find(b"\r\n\r\n", start) < 0 and conn.buf.find(b"\n\n", start) < 0:
                    return len(conn.buf) > self.max_head
                conn.head_seen = True
            received = _Received(bytes(conn.buf))
            try:
                req = Request(self.cfg, received, conn.addr)
            except NoMoreData:
                return False  # the parser wants more than the blank line: wait for it
            conn.req = req
            conn.buf = bytearray(received.take_buffered())
            reader = req.body.reader
            if isinstance(reader, LengthReader):
                length, limit = reader.length, self.max_body
                conn.body_whole = lambda buf: len(buf) >= length
                conn.body_done = lambda buf: length > limit or len(buf) >= length
            elif isinstance(reader, ChunkedReader):
                end = _ChunkedEnd(self.max_body)
                cap = self.max_conn_bytes
                conn.body_whole = lambda buf: end.found
                conn.body_done = lambda buf: end.ready(buf) or len(buf) > cap
            else:  # gunicorn frames every request body by length or chunks; anything else, the app decides
                conn.body_done = lambda buf: True
            if req._expected_100_continue and not conn.body_done(conn.buf):
                # The client waits for this before sending its body; the app must not send it again.
                req._expected_100_continue = False
                # A client that cannot take 25 bytes will not send its body either: the deadline ends it.
                with contextlib.suppress(OSError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert conn.body_done is not None
        return conn.body_done(conn.buf)

    def _forget(self, conn: _Conn) -> None:
        self._release(conn)
        if self.waiting.pop(conn.sock.fileno(), None) is not None:
            self.selector.unregister(conn.sock)

    # ------------------------------------------------------------------ answering

    def _respond(self, conn: _Conn, error: Exception | None = None) -> None:
        """Run the app over the buffered request (or answer the parser's error) on this thread."""
        sock, req = conn.sock, conn.req
        sock.setblocking(True)
        sock.settimeout(self.read_timeout)
        whole = conn.body_whole(conn.buf)
        try:
            if error is not None:
                raise error
            if req is None:  # the input ended or overflowed before a head: the parser says why
                req = Request(self.cfg, _Received(bytes(conn.buf)), conn.addr)
            assert isinstance(req.unreader, _Received)
            req.unreader.data = bytes(conn.buf)
            self.handle_request(conn.listener, req, sock, conn.addr)
        except (NoMoreData, StopIteration) as exc:
            self.log.debug("Closing connection: %s", exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:  # what sync does: gunicorn answers its own parse errors (400, 431, ...)  # noqa: BLE001
            self.handle_error(req, sock, conn.addr, exc)
        if whole:
            self._close(conn)  # everything the client sent was read: nothing can turn the close into a reset
        else:
            self._linger(conn)

    def _time_out(self, conn: _Conn) -> None:
        self._forget(conn)
        if conn.req is not None or conn.buf:  # a connection that sent nothing is closed without a word
            logs.clear()  # no line of this connection may carry an earlier request's ids
            log.warning("request.timeout", status=408, head_received=conn.req is not None,
                        body_bytes=len(conn.buf) if conn.req is not None else 0,
                        seconds=self.read_timeout, client_ip=_peer(conn.addr))
            self.refused.labels("408").inc()
            with contextlib.suppress(OSError):  # gone or not reading: the close below is all that is left
                conn.sock.send(self.answer_408)
        self._linger(conn)

    def _shed(self, conn: _Conn) -> None:
        held = self.buffered
        self._forget(conn)
        logs.clear()  # no line of this connection may carry an earlier request's ids
        log.warning("request.shed", status=503, buffered_bytes=held, max_buffered_bytes=self.max_buffered,
                    connection_bytes=len(conn.buf), head_received=conn.req is not None, client_ip=_peer(conn.addr))
        self.refused.labels("503").inc()
        with contextlib.suppress(OSError):  # gone or not reading: the close below is all that is left
            conn.sock.send(self.answer_503)
        self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        conn.buf = bytearray()  # answered: what it sent is not needed while its last input is dropped
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self._close(conn)
            return
        conn.lingering = True
        conn.deadline = time.monotonic() + _LINGER_SECONDS
        self.lingering[conn.sock.fileno()] = conn
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _linger_read(self, conn: _Conn) -> None:
        try:
            while conn.drained < _LINGER_MAX_BYTES:
                data = conn.sock.recv(_RECV)
                if not data:
                    break
                conn.drained += len(data)
            else:
                self._close(conn)
                return
        except BlockingIOError:
            return
        except OSError:
            self.log.debug("Connection reset while closing")
        self._close(conn)

    def _release(self, conn: _Conn) -> None:
        if conn.counted:
            self.buffered -= conn.counted
            conn.counted = 0
            del self.holding[conn.sock.fileno()]

    def _close(self, conn: _Conn) -> None:
        self._release(conn)
        fd = conn.sock.fileno()
        if fd >= 0 and (self.waiting.pop(fd, None) is not None or self.lingering.pop(fd, None) is not None):
            self.selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()


def _drain_pipe(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 64):
            continue


def _peer(addr: Any) -> str:
    return addr[0] if isinstance(addr, tuple) and addr else str(addr or "")
