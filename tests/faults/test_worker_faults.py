"""Workers stopped mid-handler over real processes: SIGKILL (a lost machine) and SIGTERM (a deploy)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from conftest import RedisServer, parse_log_lines
from e2e.harness import Pipeline, Proc, wait_for
from rq.registry import StartedJobRegistry

from faults.conftest import FAULT_HANDLER, FAULT_WORKER, recovery_bound
from faults.ledger import Ledger, account

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

SLOW_REPLY = 4.0  # the sink's answer to the handler call the fault interrupts (below the handler's timeout)


def busy_worker(p: Pipeline) -> str:
    """The name of the worker running the one started job."""
    registry = StartedJobRegistry(p.config.redis.prefix, connection=p.redis)

    def name() -> str | None:
        for job_id in registry.get_job_ids():
            worker = p.redis.hget(f"rq:job:{job_id}", "worker_name")
            if worker:
                return worker.decode()
        return None

    return wait_for(name, 10, "the started job's worker", p.explain)


def send_slow_one(p: Pipeline, ledger: Ledger, delay: float = SLOW_REPLY) -> tuple[str, float]:
    """One delivery whose handler call the sink holds for `delay` s; returns its event id and arrival time."""
    # Every earlier event at the sink first: else one of their calls could take the slow reply.
    p.wait_delivered({i.event_id for i in ledger.acked() if i.event_id})
    p.sink.http.script((200, {}, delay))
    item = ledger.send()
    assert item.event_id is not None
    wait_for(lambda: p.check_alive() or p.sink.attempts({item.event_id}), 15, "the slow handler call",
             p.explain)
    return item.event_id, time.monotonic()


def test_sigkilled_worker_mid_handler_its_event_arrives_again_within_the_documented_bound(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    # A reply slow enough for a second worker to start while the first is in the handler call; the job
    # timeout covers it, as it must cover any handler's worst case.
    slow = 10.0
    p = make_pipeline(aof_redis, worker={**FAULT_WORKER, "job_timeout_seconds": int(slow) + 4},
                      handler={**FAULT_HANDLER, "timeout_seconds": slow + 2})
    # worker-1 alone: it holds the scheduler lock, as the first worker of a deployment does.
    ledger = Ledger(p)
    for _ in range(3):
        ledger.send()
    eid, arrived = send_slow_one(p, ledger, slow)
    assert busy_worker(p) == "worker-1"
    # The platform brings up another worker while worker-1 is in the handler; then worker-1's machine is lost.
    p.start_worker("worker-2")
    wait_for(lambda: p.check_alive() or p.redis.exists("rq:worker:worker-2"), 20, "worker-2 to register",
             p.explain)
    victim: Proc = next(proc for proc in p.procs if proc.name == "worker-1")
    p.procs.remove(victim)
    os.killpg(victim.proc.pid, signal.SIGKILL)  # the worker and its scheduler child, like a lost machine
    killed = time.monotonic()
    victim.proc.wait(timeout=10)
    assert killed - arrived < slow, "the kill came after the handler call ended; the test proves nothing"

    bound = recovery_bound(p)
    again = wait_for(lambda: p.check_alive() or len(p.sink.attempts({eid})) >= 2, bound + 30,
                     "the killed job's handler call to run again", p.explain)
    recovered = time.monotonic() - killed
    for _ in range(3):
        ledger.send()
    result = account(ledger, in_flight=1)
    figures(recovery_s=recovered, documented_bound_s=bound, **result.figures())
    assert again
    assert recovered <= bound + 3, f"recovered after {recovered:.1f}s, documented bound {bound:.1f}s"


def test_sigterm_mid_handler_finishes_the_call_exits_0_and_delivers_once(
        aof_redis: RedisServer, make_pipeline: Callable[..., Pipeline], figures: Callable[..., None]) -> None:
    p = make_pipeline(aof_redis)
    ledger = Ledger(p)
    for _ in range(3):
        ledger.send()
    eid, _ = send_slow_one(p, ledger)
    worker = next(proc for proc in p.procs if proc.name == "worker-1")
    p.procs.remove(worker)
    stopping = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)  # to the worker only, as a platform's stop does
    code = worker.proc.wait(timeout=SLOW_REPLY + 20)
    stopped = time.monotonic() - stopping
    assert code == 0, worker.tail(40)
    events = [line.get("event", "") for line in parse_log_lines(worker.log.read_text(errors="replace"))]
    asked = next(i for i, e in enumerate(events) if "warm shut down requested" in e)
    restarted = [e for e in events[asked:] if e.startswith("Scheduler for") and "started" in e]
    assert not restarted, f"a scheduler was started on the way out of a warm shutdown: {restarted}"

    p.start_worker("worker-2")
    for _ in range(3):
        ledger.send()
    result = account(ledger)
    figures(shutdown_s=stopped, **result.figures())
    assert len(p.sink.attempts({eid})) == 1, "the call SIGTERM interrupted ran once: finished, not redone"
