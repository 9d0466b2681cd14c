"""Hostile and slow clients against the real gunicorn ingest, beside a stream of genuine deliveries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
import requests
from conftest import RedisServer
from e2e.harness import Pipeline

from faults import hostile
from faults.ledger import Ledger, SteadySender, account, latency_summary, sink_arrivals

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

INGEST_WORKERS = 2


def test_hundreds_of_hostile_requests_get_no_500_and_the_valid_stream_is_intact(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    p = make_pipeline(aof_redis, ingest_workers=INGEST_WORKERS)
    port = int(p.base_url.rsplit(":", 1)[1])
    ledger = Ledger(p)
    answers: dict[str, hostile.Answer] = {}
    cases: list[hostile.Hostile] = []
    with SteadySender(ledger, interval=0.1):
        for case in hostile.generate(ledger):
            cases.append(case)
            at = time.monotonic()
            answer = hostile.exchange(port, case.raw)
            answers[case.name] = answer
            if case.item is not None:
                hostile.record(case.item, answer, at)
    by_status: dict[str, int] = {}
    for answer in answers.values():
        by_status[str(answer.status)] = by_status.get(str(answer.status), 0) + 1
    print("hostile answers by status:", by_status)
    # 501 is RFC 9112's answer to a transfer coding the server does not implement (gzip, xchunked): not a fault.
    server_errors = {name: (a.status, a.body[:120]) for name, a in answers.items()
                     if a.status is not None and a.status >= 500 and not (a.status == 501 and "-te-" in name)}
    assert len(answers) >= 200
    assert not server_errors, f"{len(server_errors)} of {len(answers)} answered 5xx: {server_errors}"
    garbled = {id(case.item) for case in cases}
    disturbed = [(i.wire.body[:60], i.attempts) for i in ledger.items
                 if id(i) not in garbled and any(a != 200 for _, a in i.attempts)]
    assert not disturbed, f"the valid stream was disturbed: {disturbed[:5]}"
    result = account(ledger)
    non_ascii = {c.name: c.item.event_id for c in cases if c.name.startswith(hostile.NON_ASCII_CASE)}
    arrived, _ = sink_arrivals(p)
    assert {eid for eid in non_ascii.values() if not arrived[eid]} == set(), \
        "valid events whose ids are not ASCII reach the sink (not the dead-letter queue)"
    figures(hostile_requests=len(answers), answers=by_status,
            slowest_answer_s=max(a.seconds for a in answers.values()), **result.figures())
    ingest_log = next(proc for proc in p.procs if proc.name == "ingest").log.read_text(errors="replace")
    assert "Traceback" not in ingest_log, "a client's mistake is one short line, not a traceback"


class Trickler:
    """A connection sending a POST body at 1 byte/s: a slow client holding whatever serves it."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(hostile.request_bytes(path, {"Content-Type": "application/json"}, b"", content_length=False,
                                                raw_headers=b"Content-Length: 1000"))
        self.answer: bytes | None = None
        self.answered_after: float | None = None
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except OSError:
            pass
        self.answer = data
        self.answered_after = time.monotonic() - self.started

    def drip(self) -> None:
        if self.answer is None:
            try:
                self.sock.send(b" ")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


def test_slow_clients_cannot_hold_ingest_deliveries_and_healthz_answer_fast(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    p = make_pipeline(aof_redis, ingest_workers=INGEST_WORKERS)
    port = int(p.base_url.rsplit(":", 1)[1])
    ledger = Ledger(p)
    tricklers = [Trickler(port, "/webhooks/volumereach") for _ in range(2 * INGEST_WORKERS)]
    try:
        time.sleep(1.5)  # every trickler's request has reached a worker (or a queue) and sent a byte
        health: list[float] = []
        deliveries: list[float] = []
        next_drip = time.monotonic()
        for _ in range(20):
            if time.monotonic() >= next_drip:
                for t in tricklers:
                    t.drip()
                next_drip += 1
            started = time.monotonic()
            try:
                status = requests.get(f"{p.base_url}/healthz", timeout=5).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            health.append(time.monotonic() - started)
            assert status == 200, f"/healthz while slow clients trickle: {status}"
            item = ledger.new()
            started = time.monotonic()
            answer = ledger.post(item)
            deliveries.append(time.monotonic() - started)
            assert answer == 200, f"a delivery while slow clients trickle: {answer}"
            time.sleep(0.2)
        # The trickling requests end with 408/400 after a bounded time (they would take 1,000 s to finish).
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline and any(t.answer is None for t in tricklers):
            for t in tricklers:
                t.drip()
            time.sleep(1)
    finally:
        for t in tricklers:
            t.close()
    result = account(ledger)
    ended = [(hostile.parse_status(t.answer or b""), t.answered_after) for t in tricklers]
    figures(slow_clients=len(tricklers), healthz=latency_summary(health), delivery=latency_summary(deliveries),
            slow_clients_ended=ended, **result.figures())
    for samples, what in ((health, "/healthz"), (deliveries, "delivery")):
        summary = latency_summary(samples)
        # The median, not each sample: a machine shared with other work may stall any one request.
        assert summary["p50_ms"] < 100, f"{what} while slow clients trickle: {summary}"
    assert all(status in (400, 408) for status, _ in ended), f"slow clients' answers (status, after s): {ended}"
