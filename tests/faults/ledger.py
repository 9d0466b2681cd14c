"""What the fault tests sent, what ingest answered, and the one accounting every fault test ends with.

The promise under test: every delivery ingest answered 2xx reaches the sink exactly once or the
dead-letter queue, never both, never twice. A sender here behaves like a provider: a 503 (or no answer
at all) is retried after `Retry-After` until it is accepted, so those deliveries must be accounted too.
Events are matched at the sink by the canonical id in the body they carry, so a test does not depend on
how the Idempotency-Key header spells an id; the header is checked to be stable across arrivals.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from e2e.harness import Pipeline, event_id

from hooklane.operators import sending
from hooklane.shared import deadletters

# A refused attempt: the HTTP status, or the name of the exception when nothing answered (ingest down).
Answer = int | str


@dataclass
class Sent:
    """One delivery and every attempt at it; `event_id` None marks a poison body expected at `normalize`."""

    source: str
    wire: sending.WireDelivery
    event_id: str | None
    # False for a genuine delivery a test only sends garbled: it may be refused every time, but if ingest
    # accepts one of the variants, the event is accounted like any other.
    must_accept: bool = True
    attempts: list[tuple[float, Answer]] = field(default_factory=list)
    accepted_id: str | None = None  # ingest's id for it (the job id), from its 2xx answer
    acked_at: float | None = None

    @property
    def refused(self) -> list[tuple[float, Answer]]:
        return [(t, a) for t, a in self.attempts if not (isinstance(a, int) and 200 <= a < 300)]


class Ledger:
    """Every delivery a test sent, thread-safe: the steady sender runs beside the test's own requests."""

    def __init__(self, pipeline: Pipeline, source: str = "volumereach") -> None:
        self.p = pipeline
        self.source = source
        self.run = sending.new_run_id()
        self.items: list[Sent] = []
        self._lock = threading.Lock()
        self._seq = 0
        # One connection per thread: requests.Session is not thread-safe.
        self._local = threading.local()

    def new(self, source: str | None = None, *, poison: bool = False, must_accept: bool = True,
            **build: Any) -> Sent:
        """The next delivery of `source`, signed; `build` overrides (payload=, body=) as in Pipeline.build."""
        source = source or self.source
        with self._lock:
            self._seq += 1
            seq = self._seq
        wire = self.p.build(source, seq=seq, run=self.run, **build)
        item = Sent(source, wire, None if poison else event_id(source, wire), must_accept and not poison)
        with self._lock:
            self.items.append(item)
        return item

    def post(self, item: Sent, timeout: float = 5) -> Answer:
        """One attempt, recorded; returns the status or the exception's name."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        url = sending.with_suffix(self.p.url(item.source), item.wire.url_suffix)
        at = time.monotonic()
        try:
            resp = session.post(url, data=item.wire.body, headers=item.wire.headers, timeout=timeout)
        except requests.RequestException as exc:
            answer: Answer = type(exc).__name__
            retry_after = None
        else:
            answer = resp.status_code
            retry_after = resp.headers.get("Retry-After")
            if 200 <= answer < 300:
                item.accepted_id = resp.json()["id"]
                item.acked_at = time.monotonic()
            elif answer == 503:
                assert retry_after, "a 503 without Retry-After: the provider cannot know when to retry"
        item.attempts.append((at, answer))
        return answer

    def send(self, item: Sent | None = None, *, within: float = 60) -> Sent:
        """Post until accepted, retrying a 503 or no answer as a provider does; a 4xx is final."""
        item = item or self.new()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            answer = self.post(item)
            if not retryable(answer):
                return item
            time.sleep(self.p.config.ingest.retry_after_seconds if answer == 503 else 0.2)
        return item

    # ---------------------------------------------------------------- views

    def acked(self) -> list[Sent]:
        with self._lock:
            return [i for i in self.items if i.accepted_id is not None]

    def answers(self) -> list[tuple[float, Answer]]:
        with self._lock:
            return sorted(a for i in self.items for a in i.attempts)

    def refused_window(self, since: float = 0.0) -> tuple[float | None, float | None]:
        """(first, last) time an attempt after `since` got a 503 or no answer."""
        times = [t for t, a in self.answers() if t >= since and retryable(a)]
        return (times[0], times[-1]) if times else (None, None)

    def first_ack_after(self, since: float) -> float | None:
        return min((i.acked_at for i in self.acked() if i.acked_at >= since), default=None)


def retryable(answer: Answer) -> bool:
    return answer == 503 or isinstance(answer, str)


class SteadySender:
    """Sends a new delivery every `interval` seconds from a thread, retrying refused ones when due.

    A provider keeps sending new events while it retries old ones, so a refused delivery waits in a
    retry list instead of holding the stream up.
    """

    def __init__(self, ledger: Ledger, interval: float = 0.05) -> None:
        self.ledger = ledger
        self.interval = interval
        self._stop = threading.Event()
        self._retries: list[tuple[float, Sent]] = []
        self._thread = threading.Thread(target=self._run, name="steady-sender", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> SteadySender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        retry_after = self.ledger.p.config.ingest.retry_after_seconds
        next_new = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                due = [r for r in self._retries if r[0] <= now]
                if due:
                    self._retries.remove(due[0])
                    item = due[0][1]
                elif now >= next_new:
                    item = self.ledger.new()
                    next_new = now + self.interval
                else:
                    time.sleep(min(0.01, next_new - now))
                    continue
                answer = self.ledger.post(item)
                if retryable(answer):
                    self._retries.append((time.monotonic() + (retry_after if answer == 503 else 0.2), item))
        except BaseException as exc:  # reported by finish(): a thread's failure must fail the test
            self.error = exc

    def finish(self, within: float = 60) -> None:
        """Stop sending new deliveries, then retry the refused ones until each is accepted (or `within`)."""
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        for _, item in sorted(self._retries, key=lambda r: r[0]):
            self.ledger.send(item, within=within)
        self._retries.clear()

    def wait_acked(self, count: int, timeout: float = 30) -> None:
        """Until `count` more deliveries than now were accepted."""
        target = len(self.ledger.acked()) + count
        deadline = time.monotonic() + timeout
        while len(self.ledger.acked()) < target:
            self.ledger.p.check_alive()
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                pytest.fail(f"{count} deliveries not accepted within {timeout:.0f}s; last answers: "
                            f"{self.ledger.answers()[-5:]}\n{self.ledger.p.explain()}")
            time.sleep(0.05)


# --------------------------------------------------------------------------- the accounting


@dataclass
class Accounting:
    acked: int
    delivered: int
    dead_lettered: int
    lost: list[str]
    extra_arrivals: dict[str, int]  # event id -> arrivals beyond the first
    settled_at: float
    never_accepted: list[str]

    def figures(self) -> dict[str, Any]:
        return {"acked": self.acked, "delivered": self.delivered, "dead_lettered": self.dead_lettered,
                "lost": len(self.lost), "extra_arrivals": sum(self.extra_arrivals.values())}


def account(ledger: Ledger, *, timeout: float = 60, in_flight: int = 0, may_lose: Collection[str] = (),
            quiet: float = 2.0) -> Accounting:
    """Wait until every accepted delivery is settled (or the pipeline has been idle for `quiet` s),
    then check: each accepted delivery at the sink exactly once or in the dead-letter queue, never both.

    `in_flight`: arrivals beyond one allowed in total, for the handler calls in flight when a fault hit
    (their success could not be recorded, so they run again with the same Idempotency-Key).
    `may_lose`: event ids of accepted deliveries Redis itself may have lost (a test must justify each);
    any other loss fails.
    """
    p = ledger.p
    acked = ledger.acked()
    idle_since: float | None = None
    deadline = time.monotonic() + timeout
    while True:
        p.check_alive()
        state = _locate(ledger, acked)
        now = time.monotonic()
        idle = _idle(p)
        if idle and not state["missing"]:
            break
        idle_since = (idle_since or now) if idle else None
        if (idle_since is not None and now - idle_since > quiet) or now > deadline:
            break
        time.sleep(0.1)
    settled_at = time.monotonic()

    report = [f"accepted {len(acked)}, at the sink {len(state['at_sink'])}, dead-lettered {len(state['in_dlq'])}; "
              f"dead letters (stage, error, event id): {state['dlq_summary'][:20]}"]
    never = [i.wire.body[:80].decode(errors="replace") for i in ledger.items
             if i.accepted_id is None and i.must_accept]
    both = sorted(state["at_sink"] & state["in_dlq"])
    lost = sorted(state["missing"])
    extra = {e: n - 1 for e, n in state["arrivals"].items() if n > 1}
    unexpected = sorted(set(state["arrivals"]) - {i.event_id for i in ledger.items})
    problems = []
    if never:
        problems.append(f"{len(never)} valid deliveries never accepted: {never[:3]}")
    if both:
        problems.append(f"{len(both)} both at the sink and dead-lettered: {both[:5]}")
    unexplained = [name for name in lost if name not in set(may_lose)]
    if unexplained:
        problems.append(f"{len(unexplained)} accepted deliveries lost: {unexplained[:5]}")
    if sum(extra.values()) > in_flight:
        problems.append(f"{sum(extra.values())} arrivals beyond the first (allowed {in_flight}): {extra}")
    if state["dlq_dupes"]:
        problems.append(f"dead-lettered more than once: {state['dlq_dupes']}")
    if state["unstable_keys"]:
        problems.append(f"Idempotency-Key changed between arrivals of one event: {state['unstable_keys']}")
    if unexpected:
        problems.append(f"events at the sink nobody sent (or poison that should have died at normalize): "
                        f"{unexpected[:5]}")
    if not _idle(p):
        problems.append("the pipeline never went idle: jobs still queued, running or scheduled")
    if problems:
        pytest.fail("accounting failed: " + "; ".join(problems) + "\n" + report[0] + "\n" + p.explain())
    return Accounting(acked=len(acked), delivered=len(state["at_sink"]), dead_lettered=len(state["in_dlq"]),
                      lost=lost, extra_arrivals=extra, settled_at=settled_at, never_accepted=never)


def _idle(p: Pipeline) -> bool:
    try:
        return p.idle()
    except Exception:  # noqa: BLE001 - Redis may be mid-fault; "not idle" is the honest answer then
        return False


def sink_arrivals(p: Pipeline) -> tuple[Counter[str], dict[str, set[str | None]]]:
    """Arrivals answered 2xx by the event id in their body, and the Idempotency-Keys each id came with."""
    arrivals: Counter[str] = Counter()
    keys: dict[str, set[str | None]] = defaultdict(set)
    for req in p.sink.snapshot():
        try:
            eid = json.loads(req.body)["id"]
        except (ValueError, KeyError, TypeError):
            eid = f"<unparsable body {req.body[:60]!r}>"
        if 200 <= req.status < 300:
            arrivals[eid] += 1
            keys[eid].add(req.key)
    return arrivals, keys


def _locate(ledger: Ledger, acked: list[Sent]) -> dict[str, Any]:
    """Where each accepted delivery is: sink arrivals by event id, dead letters by event or delivery id."""
    arrivals, keys = sink_arrivals(ledger.p)
    try:
        entries = deadletters.list_entries(ledger.p.redis, ledger.p.config, limit=None)
    except Exception:  # noqa: BLE001 - Redis may be mid-fault: nothing located there yet
        entries = []
    dlq: Counter[str] = Counter()
    for e in entries:
        dlq[e.get("event_id") or f"delivery:{(e.get('delivery') or {}).get('id')}"] += 1
    # For a failure's message: what died where, and why.
    dlq_summary = [(e.get("stage"), (e.get("error") or {}).get("class"), (e.get("event_id") or "")[:60])
                   for e in entries]
    at_sink, in_dlq, missing = set(), set(), set()
    for item in acked:
        name = item.event_id or f"delivery:{item.accepted_id}"
        # A delivery that died at normalize has no event id in its dead letter, whatever the test expected.
        dead = dlq[name] + (dlq[f"delivery:{item.accepted_id}"] if item.event_id else 0)
        if arrivals[name]:
            at_sink.add(name)
        if dead:
            in_dlq.add(name)
        if not arrivals[name] and not dead:
            missing.add(name)
    return {"arrivals": arrivals, "at_sink": at_sink, "in_dlq": in_dlq, "missing": missing,
            "dlq_dupes": sorted(k for k, n in dlq.items() if n > 1), "dlq_summary": dlq_summary,
            "unstable_keys": sorted(k for k, v in keys.items() if len(v) > 1)}


def latency_summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}
