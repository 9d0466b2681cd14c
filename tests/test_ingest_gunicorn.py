"""Ingest under the shipped gunicorn config, over raw sockets: malformed framing and slow clients.

One real gunicorn (ingest/gunicorn.conf.py, two workers) against a private redis-server, started once
for the module. What is checked is what a client on the wire sees, and the lines the server logs:
- a chunked body with broken framing is 400 with its reason, logged as one warning, never a 500 with
  a traceback; a chunked body past the limit stays 413, a valid one split anywhere is accepted;
- clients trickling their head or body (2 x the worker count) hold nothing: /healthz and a signed
  delivery are answered at once meanwhile, and the tricklers get 408 once the read deadline passes;
- clients each sending most of a large body and stalling hold at most max_buffered_bytes per worker:
  past it they get 503 with Retry-After, while complete deliveries are still served.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_ENV, RedisServer, free_port, parse_log_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklane.ingest.gunicorn_worker import _ChunkedEnd
from hooklane.shared.providers import PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
READ_TIMEOUT = 1.5
MAX_BODY = 4096
MAX_BUFFERED = 6 * MAX_BODY  # per worker process

CONFIG = f"""
[redis]
url = "{{redis_url}}"

[ingest]
max_body_bytes = {MAX_BODY}
request_read_timeout_seconds = {READ_TIMEOUT}
max_buffered_bytes = {MAX_BUFFERED}

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]
tolerance_seconds = 86400

[handlers.log]
type = "log"

[[routes]]
events = ["*"]
handlers = ["log"]
"""

BODY = json.dumps({"event": "call.completed", "data": {"call_id": "call_gunicorn", "outcome": "INTERESTED"}}).encode()


@dataclass
class Ingest:
    port: int
    log: Path

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def lines_since(self, offset: int) -> list[dict[str, Any]]:
        time.sleep(0.2)  # the worker writes its line right after the answer
        with self.log.open("rb") as f:
            f.seek(offset)
            return parse_log_lines(f.read().decode(), still_writing=True)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    tmp = tmp_path_factory.mktemp("ingest-gunicorn")
    with RedisServer.running() as redis_server:
        config = tmp / "hooklane.toml"
        config.write_text(CONFIG.format(redis_url=redis_server.url))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(TEST_ENV, HOOKLANE_CONFIG=str(config), HOOKLANE_BIND=f"127.0.0.1:{port}",
                   HOOKLANE_INGEST_WORKERS=str(WORKERS), HOOKLANE_LOG_FORMAT="json")
        log = tmp / "gunicorn.log"
        with log.open("wb") as out:
            argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "ingest" / "gunicorn.conf.py"),
                    "hooklane.ingest.wsgi:app"]
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            server = Ingest(port, log)
            _wait_until_serving(server, proc)
            yield server
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_until_serving(server: Ingest, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, server.log.read_text()
        booted = server.log.read_text().count("Booting worker")
        if booted >= WORKERS:
            try:
                if exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200:
                    return
            except OSError:
                pass
        time.sleep(0.1)
    pytest.fail(f"ingest did not serve within 30 s:\n{server.log.read_text()}")


def read_answer(sock: socket.socket, *, with_head: bool = False) -> Any:
    """(status, JSON body) of the answer, read to the close; with_head: (status, body, head bytes)."""
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    assert data, "the connection closed without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    parsed = json.loads(body) if body.startswith(b"{") else {"raw": body.decode(errors="replace")}
    return (status, parsed, head + b"\r\n") if with_head else (status, parsed)


def exchange(server: Ingest, request: bytes, *, half_close: bool = False) -> tuple[int, dict[str, Any]]:
    with server.connect() as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def signed_headers(body: bytes) -> str:
    signer = PROVIDERS["volumereach"].sign
    assert signer is not None
    return "".join(f"{k}: {v}\r\n" for k, v in signer(body, TEST_ENV["VR_SECRET"].encode()).items())


def chunked_request(framing: bytes, headers: str = "") -> bytes:
    return (b"POST /webhooks/vr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + headers.encode() + b"\r\n" + framing)


def delivery_request(body: bytes = BODY) -> bytes:
    return (f"POST /webhooks/vr HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{signed_headers(body)}\r\n").encode() + body


# --------------------------------------------------------------------------- malformed chunked bodies

MALFORMED = {
    "size zz": (b"zz\r\nabc\r\n0\r\n\r\n", "malformed chunked body: invalid chunk size"),
    "size -5": (b"-5\r\nabc\r\n0\r\n\r\n", "malformed chunked body: invalid chunk size"),
    "size 3 4": (b"3 4\r\nabc\r\n0\r\n\r\n", "malformed chunked body: invalid chunk size"),
    "empty size line": (b"\r\nabc\r\n0\r\n\r\n", "malformed chunked body: invalid chunk size"),
    # More than any body ingest takes, announced by a client that then keeps its connection open.
    "size ffffffffffffffff": (b"ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
                              "incomplete body: the input ended before the last chunk"),
    "bad chunk terminator": (b"3\r\nabcXY0\r\n\r\n", "malformed chunked body: chunk data not followed by CRLF"),
    "bad trailer": (b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n", "malformed chunked body: invalid trailer"),
    "bad chunk extension": (b"3;=x\r\nabc\r\n0\r\n\r\n", "malformed chunked body: invalid chunk extension"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_chunked_body_is_400_with_its_reason_and_one_warning_line(ingest: Ingest, case: str) -> None:
    framing, reason = MALFORMED[case]
    offset = ingest.log_offset()
    started = time.monotonic()
    status, answer = exchange(ingest, chunked_request(framing))
    assert (status, answer) == (400, {"status": "refused", "reason": reason})
    assert time.monotonic() - started < READ_TIMEOUT  # refused on sight, not when the read deadline passes
    assert_one_warning(ingest.lines_since(offset), reason)


def test_chunked_body_ending_mid_chunk_is_400(ingest: Ingest) -> None:
    offset = ingest.log_offset()
    status, answer = exchange(ingest, chunked_request(b"a\r\nabc"), half_close=True)
    reason = "incomplete body: the input ended before the last chunk"
    assert (status, answer) == (400, {"status": "refused", "reason": reason})
    assert_one_warning(ingest.lines_since(offset), reason)


def assert_one_warning(lines: list[dict[str, Any]], reason: str) -> None:
    assert [(ln["event"], ln["level"], ln["reason"]) for ln in lines] == [("delivery.refused", "warning", reason)]
    assert "Traceback" not in json.dumps(lines)


def test_chunked_body_over_the_limit_is_413(ingest: Ingest) -> None:
    piece = b"x" * 1000
    framing = b"".join(b"3e8\r\n" + piece + b"\r\n" for _ in range(MAX_BODY // 1000 + 1)) + b"0\r\n\r\n"
    status, answer = exchange(ingest, chunked_request(framing, signed_headers(piece)))
    assert (status, answer["reason"]) == (413, "request entity too large")


def test_chunked_body_announcing_more_than_the_limit_in_one_chunk_is_refused_at_once(ingest: Ingest) -> None:
    status, _ = exchange(ingest, chunked_request(b"%x\r\n" % (MAX_BODY + 1) + b"x" * 100))
    assert status in (400, 413)


@pytest.mark.parametrize("step", [1, 3, 7, 64])
def test_valid_chunked_delivery_sent_in_pieces_is_accepted(ingest: Ingest, step: int) -> None:
    # Chunk boundaries, an extension and a trailer, split across packets at every kind of place.
    chunks = [BODY[:5], BODY[5:6], BODY[6:]]
    framing = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Trailer: t\r\n\r\n"
    request = chunked_request(framing, signed_headers(BODY) + "Content-Type: application/json\r\n")
    with ingest.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(request), step):
            sock.sendall(request[i:i + step])
            time.sleep(0.0005 if step < 8 else 0.01)
        status, answer = read_answer(sock)
    assert (status, answer["reason"]) == (200, "queued")


def test_content_length_over_the_limit_is_413_without_waiting_for_the_body(ingest: Ingest) -> None:
    started = time.monotonic()
    with ingest.connect() as sock:
        sock.sendall(b"POST /webhooks/vr HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        status, answer = read_answer(sock)
    assert (status, answer["reason"]) == (413, "request entity too large")
    assert time.monotonic() - started < READ_TIMEOUT


def test_a_head_over_gunicorns_limits_is_refused_by_gunicorn(ingest: Ingest) -> None:
    status, _ = exchange(ingest, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    assert status == 431


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline_without_an_answer(ingest: Ingest) -> None:
    started = time.monotonic()
    with ingest.connect() as sock:
        assert sock.recv(100) == b""
    assert READ_TIMEOUT - 0.1 <= time.monotonic() - started <= READ_TIMEOUT + 1.5


def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent(ingest: Ingest) -> None:
    request = delivery_request()
    head, _, body = request.partition(b"\r\n\r\n")
    with ingest.connect() as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, answer = read_answer(sock)
    assert (status, answer["reason"]) == (200, "queued")


# --------------------------------------------------------------------------- slow clients


class Tricklers:
    """Connections sending `prefix` at once, then the rest of `request` a byte every 0.3 s."""

    def __init__(self, server: Ingest, request: bytes, prefix_len: int, count: int) -> None:
        self.request, self.prefix_len = request, prefix_len
        self.socks = [server.connect() for _ in range(count)]
        self.started = time.monotonic()
        for sock in self.socks:
            sock.sendall(request[:prefix_len])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        sent = self.prefix_len
        while not self.stop.wait(0.3) and sent < len(self.request) - 1:  # never the last byte
            for sock in self.socks:
                try:
                    sock.sendall(self.request[sent:sent + 1])
                except OSError:
                    continue  # answered and closed: nothing more to send there
            sent += 1

    def answers(self) -> list[tuple[int, float]]:
        """Each connection's status and when it came, in seconds after the connection was opened."""
        out = []
        for sock in self.socks:
            sock.settimeout(READ_TIMEOUT + 5)
            out.append((read_answer(sock)[0], time.monotonic() - self.started))
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def timed(server: Ingest, request: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = exchange(server, request)
    return status, (time.perf_counter() - started) * 1000


@pytest.mark.parametrize("part", ["head", "body"])
def test_clients_trickling_a_request_hold_nothing_and_get_408_after_the_read_timeout(
    ingest: Ingest, part: str,
) -> None:
    request = delivery_request()
    prefix = 20 if part == "head" else request.index(b"\r\n\r\n") + 4 + 10
    offset = ingest.log_offset()
    tricklers = Tricklers(ingest, request, prefix, 2 * WORKERS)
    try:
        time.sleep(0.3)  # every trickler accepted and holding whatever it can hold
        # The bound, a functional one (sync took 30 s here): the median of three probes each, so that
        # one scheduling hiccup on a busy CI machine is not taken for the fault.
        health = [timed(ingest, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(3)]
        deliveries = [timed(ingest, request) for _ in range(3)]
        for probes in (health, deliveries):
            assert [status for status, _ in probes] == [200] * 3, probes
            assert sorted(ms for _, ms in probes)[1] < 100, probes
        answers = tricklers.answers()
    finally:
        tricklers.close()
    assert [status for status, _ in answers] == [408] * (2 * WORKERS)
    assert all(READ_TIMEOUT - 0.1 <= when <= READ_TIMEOUT + 1.5 for _, when in answers), answers
    timeouts = [ln for ln in ingest.lines_since(offset) if ln["event"] == "request.timeout"]
    assert len(timeouts) == 2 * WORKERS
    assert all(ln["level"] == "warning" and ln["status"] == 408 for ln in timeouts)
    assert timeouts[0]["head_received"] is (part == "body")


# --------------------------------------------------------------------------- where a chunked body ends


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=6))
    ext = draw(st.sampled_from([b"", b";a=1", b' ; name="q \\" v"']))
    trailers = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\r\nC: d\r\n"]))
    return b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks) + b"0\r\n" + trailers + b"\r\n"


@settings(max_examples=200, deadline=None)
@given(body=chunked_bodies(), data=st.data())
def test_a_valid_chunked_body_is_complete_at_its_last_byte_and_not_before(body: bytes, data: st.DataObject) -> None:
    # Fed as it would arrive, in pieces of any size: the worker must neither wait past the end nor start early.
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=8)))
    end = _ChunkedEnd(limit=MAX_BODY)
    buf = bytearray()
    for cut in [*cuts, len(body)]:
        buf += body[len(buf):cut]
        assert end.ready(buf) is (cut == len(body)), (body, cut)
    assert end.found


def refused_counts(server: Ingest) -> dict[str, float]:
    """hooklane_ingest_connections_refused_total by status, summed over the workers by /metrics."""
    status, answer = exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    found = dict(re.findall(r'^hooklane_ingest_connections_refused_total\{status="(\d+)"\} (\S+)$',
                            answer["raw"], re.M))
    return {code: float(found.get(code, 0)) for code in ("408", "503")}


# A request that has sent all but 96 bytes of its body and stalls.
STALLED = (b"POST /webhooks/vr HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % MAX_BODY
           + b"x" * (MAX_BODY - 96))


def test_stalled_bodies_past_the_buffer_budget_get_503_and_complete_deliveries_are_still_served(
    ingest: Ingest,
) -> None:
    # Each connection stalls holding MAX_BODY - 96 body bytes: a worker can hold 6 of them (MAX_BUFFERED). With
    # 16 on 2 workers, however they are shared out, 4 to 10 are over budget and 6 to 12 are held until the
    # read deadline. A second round gets the same: what the first round held was given back.
    count, held_per_worker = 16, MAX_BUFFERED // (MAX_BODY - 96)
    for _ in range(2):
        offset, before = ingest.log_offset(), refused_counts(ingest)
        socks = [ingest.connect() for _ in range(count)]
        try:
            for sock in socks:
                sock.sendall(STALLED)
            time.sleep(0.3)
            assert timed(ingest, delivery_request())[0] == 200
            answers = []
            for sock in socks:
                sock.settimeout(READ_TIMEOUT + 5)
                answers.append(read_answer(sock, with_head=True))
        finally:
            for sock in socks:
                sock.close()
        shed = [(head, body) for status, body, head in answers if status == 503]
        assert count - WORKERS * held_per_worker <= len(shed) <= count - held_per_worker, answers
        assert sorted({status for status, _, _ in answers}) == [408, 503], answers
        assert {body["reason"] for _, body in shed} == {"ingest is receiving too many requests at once"}
        assert all(b"\r\nRetry-After: 5\r\n" in head for head, _ in shed), shed
        lines = [ln for ln in ingest.lines_since(offset) if ln["event"] == "request.shed"]
        assert len(lines) == len(shed)
        after = refused_counts(ingest)
        assert {k: after[k] - before[k] for k in after} == {"408": count - len(shed), "503": len(shed)}
        assert all(ln["level"] == "warning" and ln["status"] == 503 and ln["buffered_bytes"] > MAX_BUFFERED
                   for ln in lines), lines


def test_a_large_delivery_arriving_while_stalled_bodies_fill_the_budget_displaces_them(ingest: Ingest) -> None:
    # The budget goes to whoever is sending: a delivery that arrives in pieces while both workers' budgets
    # are full of stalled connections makes the stalled ones that sent nothing for longest give way.
    body = json.dumps({"event": "call.completed", "data": {"call_id": "call_large", "outcome": "INTERESTED",
                                                           "notes": "n" * (MAX_BODY - 200)}}).encode()
    request = delivery_request(body)
    socks = [ingest.connect() for _ in range(24)]
    try:
        for sock in socks:
            sock.sendall(STALLED)
        time.sleep(0.3)
        for _ in range(4):
            with ingest.connect() as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(request[:len(request) // 2])
                time.sleep(0.05)
                sock.sendall(request[len(request) // 2:])
                status, answer = read_answer(sock)
            assert (status, answer["reason"]) == (200, "queued")
    finally:
        for sock in socks:
            sock.close()
