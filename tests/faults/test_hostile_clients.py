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
from hooklane.operators import sending

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


class Stallers:
    """Keeps `count` connections each holding most of a large body and stalling, reopening answered ones."""

    def __init__(self, port: int, path: str, content_length: int, sent: int, count: int) -> None:
        self.port, self.count = port, count
        self.request = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {content_length}\r\n\r\n").encode() + b" " * sent
        self.answers: dict[int | None, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stallers", daemon=True)

    def __enter__(self) -> Stallers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(self.request)
        except OSError:  # shed while sending: counted when its answer is read
            return None
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        socks = [s for s in (self._open() for _ in range(self.count)) if s is not None]
        while not self._stop.wait(0.05):
            for sock in list(socks):
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue  # held: still stalling
                except OSError:
                    data = b""
                status = hostile.parse_status(data)
                self.answers[status] = self.answers.get(status, 0) + 1
                sock.close()
                socks.remove(sock)
            while len(socks) < self.count and not self._stop.is_set():
                sock = self._open()
                if sock is None:
                    self.answers[None] = self.answers.get(None, 0) + 1
                    continue
                socks.append(sock)
        for sock in socks:
            sock.close()


def test_stalled_large_bodies_are_shed_past_the_buffer_budget_and_every_accepted_delivery_arrives(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    # 64 KiB bodies, 256 KiB of them held per ingest worker: 24 connections each holding 60 KB and stalling
    # (reopened as soon as one is answered) keep both budgets full for the whole run, beside small deliveries
    # and large ones (48 KB) that must all be accepted, if need be after a 503 and a retry, as a provider does.
    max_body, budget = 65536, 262144
    p = make_pipeline(aof_redis, ingest_workers=INGEST_WORKERS,
                      ingest={"retry_after_seconds": 1, "max_body_bytes": max_body, "max_buffered_bytes": budget})
    port = int(p.base_url.rsplit(":", 1)[1])
    ledger = Ledger(p)
    large: list[int] = []
    with Stallers(port, "/webhooks/volumereach", max_body, 60000, count=24) as stallers, \
            SteadySender(ledger, interval=0.1):
        time.sleep(1)  # the budgets full
        for seq in range(10):
            payload = sending.sample_payload("volumereach", "call.completed", seq=10_000 + seq, run=ledger.run)
            payload["data"]["transcript"] = "Agent: hello. " * 3500  # ~48 KB: more than one read
            item = ledger.send(ledger.new(payload=payload), within=30)
            large.append(item.attempts[-1][1] if item.attempts else 0)
            time.sleep(0.3)
    result = account(ledger)
    figures(stalled_connections=24, stalled_answers={str(k): v for k, v in stallers.answers.items()},
            large_deliveries=len(large), large_first_answers=[str(i.attempts[0][1]) for i in ledger.items
                                                              if len(i.wire.body) > 40_000],
            **result.figures())
    assert stallers.answers.get(503, 0) > 0, f"no stalled connection was shed: {stallers.answers}"
    assert large == [200] * 10, f"large deliveries' last answers: {large}"
