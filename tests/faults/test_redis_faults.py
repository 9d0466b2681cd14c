"""Redis faults production sees every week, over real processes: restart, outage at start-up, dropped idle
connections, a full Redis. Each ends in the accounting of faults/ledger.py and records its figures.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RedisServer
from e2e.harness import Pipeline, is_running, pids_under, wait_for

from faults.ledger import Ledger, SteadySender, account, retryable

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

OUTAGE = 3.0  # seconds Redis is down: longer than the slow handler reply below, so its settle step meets it
SLOW_REPLY = 2.0


def settle_figures(ledger: Ledger, *, down: float, up: float, **extra: Any) -> dict[str, Any]:
    """outage -> the window ingest refused (503 or no answer) -> first 2xx after Redis is back."""
    first, last = ledger.refused_window(since=down - 0.5)
    first_ack = ledger.first_ack_after(up)
    return {
        "outage_s": up - down,
        "refused_window_s": (last - first) if first is not None else 0.0,
        "refused_answers": sum(1 for t, a in ledger.answers() if t >= down - 0.5 and retryable(a)),
        "first_2xx_after_up_s": (first_ack - up) if first_ack is not None else None,
        **extra,
    }


def hold_a_handler_in_flight(p: Pipeline) -> None:
    """Make the sink's next reply slow and wait until a handler call is waiting on it: the worker is busy."""
    before = len(p.sink.snapshot())
    p.sink.http.script((200, {}, SLOW_REPLY))
    wait_for(lambda: p.check_alive() or len(p.sink.snapshot()) > before, 10, "a handler call at the sink",
             p.explain)


def acked_within(ledger: Ledger, moment: float, window: float) -> set[str]:
    """Event ids of the deliveries accepted in the `window` seconds before `moment`."""
    return {i.event_id for i in ledger.acked() if i.event_id and moment - window <= i.acked_at <= moment}


AOF_POSTPONED = "Asynchronous AOF fsync is taking too long"


@pytest.mark.parametrize("aof_redis", ["everysec", "always"], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_redis_restarted_mid_send_every_accepted_delivery_arrives_once(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None],
        sig: signal.Signals) -> None:
    redis = aof_redis
    p = make_pipeline(redis)
    ledger = Ledger(p)
    with SteadySender(ledger) as sender:
        sender.wait_acked(30)
        hold_a_handler_in_flight(p)
        down = time.monotonic()
        redis.stop(sig)
        time.sleep(OUTAGE)
        redis.start()
        up = time.monotonic()
        sender.wait_acked(30, timeout=30)
    sender.finish()
    # Redis writes each command to the AOF before it answers, so a crash of the process loses nothing,
    # except with everysec while a background fsync is still pending: Redis then postpones the write (up
    # to 2 s, logging AOF_POSTPONED when it gives up waiting) and answers meanwhile. So only an
    # everysec SIGKILL may lose anything, and only deliveries acknowledged in the 2 s before it; the
    # count is reported. A SIGTERM (Redis flushes on shutdown) and `always` must lose nothing.
    may_lose = acked_within(ledger, down, 2.0) if sig == signal.SIGKILL and redis.appendfsync == "everysec" else set()
    result = account(ledger, in_flight=1, may_lose=may_lose)
    figures(**settle_figures(ledger, down=down, up=up, drain_s=result.settled_at - up),
            aof_write_postponed=AOF_POSTPONED in redis.logfile.read_text(errors="replace"), **result.figures())


def test_ingest_and_worker_started_while_redis_is_down_serve_as_soon_as_it_is_up(
        down_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    redis = down_redis
    down = time.monotonic()
    p = make_pipeline(redis, start=False)
    ingest = p.start_ingest(2)
    worker = p.start_worker()

    def alive() -> bool:
        p.check_alive()
        try:
            return p.session.get(f"{p.base_url}/healthz", timeout=1).status_code == 200
        except OSError:
            return False

    wait_for(alive, 30, "ingest /healthz with Redis down", p.explain)
    ready = p.session.get(f"{p.base_url}/readyz", timeout=5)
    assert ready.status_code == 503, ready.text
    ledger = Ledger(p)
    refused = ledger.new()
    assert ledger.post(refused) == 503, refused.attempts

    # A gunicorn worker replaced while Redis is down (killed, max-requests, timeout) must boot again.
    victim = min(pids_under(ingest.proc.pid) - {ingest.proc.pid})
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not is_running(victim), 10, "the killed gunicorn worker to exit")
    wait_for(lambda: len(pids_under(ingest.proc.pid)) >= 3, 15, "gunicorn to replace its worker", p.explain)
    time.sleep(1)  # a replacement that cannot boot exits within this, and the master with it
    assert alive(), p.explain()
    assert "Traceback" not in worker.tail(200), "a worker waiting for Redis logs a line, not a traceback"

    with SteadySender(ledger) as sender:
        time.sleep(1)
        redis.start()
        up = time.monotonic()
        sender.wait_acked(30, timeout=30)
    sender.finish()
    ledger.send(refused)
    result = account(ledger)
    figures(**settle_figures(ledger, down=down, up=up, drain_s=result.settled_at - up), **result.figures())


@pytest.mark.parametrize("drop", ["idle-timeout", "client-kill"])
def test_the_first_deliveries_after_redis_dropped_idle_connections_are_accepted(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None],
        drop: str) -> None:
    p = make_pipeline(aof_redis)
    ledger = Ledger(p)
    # Enough requests that every gunicorn worker holds a connection to Redis.
    for _ in range(10):
        assert ledger.send().accepted_id
    if drop == "idle-timeout":
        p.redis.config_set("timeout", 1)
        time.sleep(2.5)  # idle past the timeout: Redis closes the connections (its cron checks every 100 ms)
        p.redis.config_set("timeout", 0)
    else:
        killed = p.redis.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 2, "ingest's and the worker's connections"
    # VoiceKit never retries: each of these is an event lost at the provider unless answered 2xx.
    first = [ledger.post(ledger.new()) for _ in range(9)]
    ledger.send(ledger.new())  # and the worker, whose connection went too, still delivers
    for item in ledger.items:
        if item.accepted_id is None:
            ledger.send(item)
    result = account(ledger)
    figures(first_requests=len(first), refused=sum(1 for a in first if a != 200), **result.figures())
    assert first == [200] * 9, f"answers to the first requests after the drop: {first}"


def test_redis_full_ingest_answers_503_workers_survive_and_drain_once_memory_is_raised(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    p = make_pipeline(aof_redis)
    ledger = Ledger(p)
    admin = aof_redis.client()
    with SteadySender(ledger) as sender:
        sender.wait_acked(20)
        hold_a_handler_in_flight(p)
        admin.config_set("maxmemory-policy", "noeviction")
        # Below what is in use: full now, whatever the queue holds; every write that allocates is refused.
        admin.config_set("maxmemory", max(1, int(admin.info("memory")["used_memory"]) // 2))
        full = time.monotonic()
        wait_for(lambda: p.check_alive() or ledger.refused_window(since=full)[0], 10, "ingest to answer 503",
                 p.explain)
        time.sleep(OUTAGE)  # several heartbeats and dequeues of the workers meet the refusal
        p.check_alive()
        admin.config_set("maxmemory", 0)
        raised = time.monotonic()
        sender.wait_acked(20, timeout=30)
    sender.finish()
    result = account(ledger, in_flight=1)
    statuses = {a for t, a in ledger.answers() if full <= t <= raised}
    figures(**settle_figures(ledger, down=full, up=raised, drain_s=result.settled_at - raised), **result.figures())
    assert statuses <= {200, 503}, f"a full Redis is a 503 with Retry-After, nothing else: {statuses}"
    admin.close()
