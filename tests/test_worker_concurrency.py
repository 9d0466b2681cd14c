"""`[worker] concurrency = N`: N jobs at once in one process (workers/threaded.py), with every RQ guarantee.

In-process tests run the worker on the main thread (it installs signal handlers) and watch it from
another; the fault tests (SIGKILL, SIGTERM, a second SIGTERM) run real `hooklane worker` processes.
The existing worker tests run at concurrency 1 and 8 too (the `worker_concurrency` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import set_worker_concurrency
from redis import BlockingConnectionPool
from rq import Queue, Worker
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from support import handlers as th
from test_worker_processes import CONFIG as PROCESS_CONFIG
from test_worker_processes import Workers, deliver, wait_for

from hooklane.shared import deadletters
from hooklane.shared.config import Config, ConfigError
from hooklane.shared.queueing import SERIALIZER
from hooklane.workers import job_metrics as metrics
from hooklane.workers import runtime
from hooklane.workers.main import OWN_CONNECTIONS, HooklaneSimpleWorker, HooklaneThreadedWorker, build_worker
from hooklane.workers.threaded import ThreadDeathPenalty

pytestmark = pytest.mark.redis

CONFIG = """
[worker]
concurrency = {concurrency}
job_timeout_seconds = {timeout}
backoff_base_seconds = 30
delivery_retry_intervals = [0]

[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.h]
type = "python"
target = "support.handlers:{handler}"
{extra}

[[routes]]
events = ["*"]
handlers = ["h"]
"""


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, redis_server) -> Iterator[None]:
    monkeypatch.setenv("HOOKLANE_TEST_REDIS_URL", redis_server.url)
    th.CALLS.clear()
    th.OVERLAP.update(now=0, max=0)
    yield
    runtime.install(None)


def make(make_config: Callable[..., Config], redis_server, *, concurrency: int = 4, handler: str = "hold",
         timeout: int = 60, extra: str = "") -> Config:
    text = CONFIG.format(concurrency=concurrency, handler=handler, timeout=timeout, extra=extra)
    return make_config(text, redis_url=redis_server.url)


def queue(r: redis.Redis) -> Queue:
    return Queue("hooklane", connection=r, serializer=SERIALIZER)


def watch(check: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Run `check` on a side thread (the worker needs the main one); its failure is re-raised by the test."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            errors.append(exc)
        finally:
            redis.Redis.from_url(os.environ["HOOKLANE_TEST_REDIS_URL"]).set("test:release", 1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def finish(thread: threading.Thread, errors: list[BaseException]) -> None:
    thread.join(timeout=30)
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- which worker, sized how


def test_concurrency_picks_the_worker_class_and_sizes_the_pools(make_config, redis_server, real_redis):
    assert type(build_worker(make(make_config, redis_server, concurrency=1), redis=real_redis)) is HooklaneSimpleWorker
    cfg = make(make_config, redis_server, concurrency=24)
    worker = build_worker(cfg)
    assert isinstance(worker, HooklaneThreadedWorker) and worker.concurrency == 24
    assert worker.death_penalty_class is ThreadDeathPenalty, "SIGALRM cannot reach a job thread"
    # Every job may hold a Redis connection, plus the dequeue, the heartbeat thread and RQ's pubsub thread;
    # bounded, and a thread that finds them all in use waits instead of failing with "Too many connections".
    pool = worker.connection.connection_pool
    assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == 24 + OWN_CONNECTIONS
    assert OWN_CONNECTIONS >= 3


def test_the_http_handler_keeps_a_connection_per_job_in_flight(make_config, redis_server, real_redis):
    cfg = make_config(set_worker_concurrency(
        '[handlers.crm]\ntype = "http"\nurl = "http://127.0.0.1:9/x"\n[[routes]]\nevents = ["*"]\n'
        'handlers = ["crm"]\n', 48), redis_url=redis_server.url)
    build_worker(cfg, redis=real_redis)
    pool = runtime.get().handlers["crm"].pool.connection_from_url("http://127.0.0.1:9/x")
    assert pool.pool.maxsize >= 48 and not pool.block


def test_hooklane_worker_refuses_a_socks_proxy_for_an_http_handler_with_a_config_error(
    tmp_path: Path, redis_server, clean_proxy_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from hooklane.operators.cli import main

    clean_proxy_env.setenv("HTTPS_PROXY", "socks5h://127.0.0.1:1080")
    path = tmp_path / "hooklane.toml"
    path.write_text(f'[redis]\nurl = "{redis_server.url}"\n[[sources]]\nname = "vr"\nprovider = "volumereach"\n'
                    'insecure = true\n[handlers.crm]\ntype = "http"\nurl = "https://crm.example.com/x"\n'
                    '[[routes]]\nevents = ["*"]\nhandlers = ["crm"]\n')
    assert main(["--config", str(path), "worker", "--burst", "--no-scheduler"]) == 2
    err = capsys.readouterr().err
    assert "hooklane: config error: handlers.crm.url:" in err and "socks5h proxy" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- N in flight, never more


def test_n_jobs_in_flight_each_have_an_execution_a_registry_entry_and_no_more_are_taken(
    make_config, redis_server, real_redis,
):
    cfg = make(make_config, redis_server, concurrency=4)
    for n in range(7):
        deliver(cfg, real_redis, f"call_{n}")
    worker = build_worker(cfg, redis=real_redis, name="conc-worker")

    def check() -> None:
        wait_for(lambda: real_redis.llen("test:started") == 4, 20, "4 jobs to start")
        time.sleep(0.5)  # had the worker taken a fifth job, it would have started by now
        assert real_redis.llen("test:started") == 4
        assert real_redis.llen("rq:queue:hooklane") == 3, "back-pressure: only N jobs leave the queue"
        assert len(StartedJobRegistry(queue=queue(real_redis)).get_job_ids()) == 4
        [seen] = Worker.all(connection=real_redis)
        executions = seen.get_current_executions(refresh=True)  # what `rq info` and rq-dashboard read
        assert len(executions) == 4 and len({e.job_id for e in executions}) == 4
        assert seen.get_state() == "busy"

    thread, errors = watch(check)
    worker.work(burst=True)
    finish(thread, errors)
    assert real_redis.llen("test:calls") == 7
    assert StartedJobRegistry(queue=queue(real_redis)).count == 0
    assert deadletters.count(real_redis, cfg) == 0


def test_heartbeats_keep_every_long_job_alive_past_its_first_ttl(make_config, redis_server, real_redis):
    cfg = make(make_config, redis_server, concurrency=3)
    for n in range(3):
        deliver(cfg, real_redis, f"call_{n}")
    worker = build_worker(cfg, redis=real_redis)
    # A registry entry lives monitoring interval + grace (3 s) unless a heartbeat extends it.
    worker.job_monitoring_interval, worker.abandoned_grace = 2, 1
    registry = StartedJobRegistry(queue=queue(real_redis))

    def check() -> None:
        wait_for(lambda: real_redis.llen("test:started") == 3, 20, "3 jobs to start")
        until = time.monotonic() + 5
        while time.monotonic() < until:
            assert registry.get_expired_job_ids() == [], "a live job looks abandoned to RQ's maintenance"
            time.sleep(0.2)

    thread, errors = watch(check)
    worker.work(burst=True)
    finish(thread, errors)
    assert real_redis.llen("test:calls") == 3


def test_a_job_that_overruns_its_timeout_is_stopped_and_retried_while_the_others_finish(
    make_config, redis_server, real_redis,
):
    cfg = make(make_config, redis_server, concurrency=4, timeout=2)
    deliver(cfg, real_redis, "call_slow")
    worker = build_worker(cfg, redis=real_redis)
    started = time.monotonic()
    worker.work(burst=True)  # nobody sets test:release: the handler would wait 60 s
    assert time.monotonic() - started < 15
    assert real_redis.llen("test:calls") == 0, "the overrunning handler was stopped"
    [job_id] = ScheduledJobRegistry(queue=queue(real_redis)).get_job_ids()
    retry = queue(real_redis).fetch_job(job_id)
    assert retry.meta["attempts"][0]["error_class"] == "JobTimeoutException"
    assert "2 seconds" in retry.meta["attempts"][0]["message"]


def test_the_timeout_of_one_job_does_not_touch_a_job_that_finished_in_time(make_config, redis_server, real_redis):
    cfg = make(make_config, redis_server, concurrency=4, timeout=1, handler="first")
    for n in range(8):
        deliver(cfg, real_redis, f"call_{n}")
    build_worker(cfg, redis=real_redis).work(burst=True)
    time.sleep(1.5)  # past every job's deadline: a watchdog left armed would fire now, into an idle thread
    assert len(th.CALLS) == 8
    assert ScheduledJobRegistry(queue=queue(real_redis)).count == 0
    assert deadletters.count(real_redis, cfg) == 0


# --------------------------------------------------------------------------- what jobs share


def test_a_handler_not_safe_for_concurrency_runs_one_call_at_a_time(make_config, redis_server, real_redis):
    cfg = make(make_config, redis_server, concurrency=6, handler="overlapping", extra="concurrency_safe = false")
    for n in range(6):
        deliver(cfg, real_redis, f"call_{n}")
    build_worker(cfg, redis=real_redis).work(burst=True)
    assert len(th.CALLS) == 6 and th.OVERLAP["max"] == 1


def test_a_handler_safe_for_concurrency_runs_calls_at_once(make_config, redis_server, real_redis):
    cfg = make(make_config, redis_server, concurrency=6, handler="overlapping")
    for n in range(6):
        deliver(cfg, real_redis, f"call_{n}")
    build_worker(cfg, redis=real_redis).work(burst=True)
    assert len(th.CALLS) == 6 and th.OVERLAP["max"] > 1


def test_redeliveries_of_one_event_running_at_once_fan_out_exactly_once(make_config, redis_server, real_redis):
    cfg = make(make_config, redis_server, concurrency=8, handler="overlapping")
    for _ in range(8):
        deliver(cfg, real_redis, "call_same")  # eight deliveries (request ids) of one event
    build_worker(cfg, redis=real_redis).work(burst=True)
    assert len(th.CALLS) == 1
    assert deadletters.count(real_redis, cfg) == 0
    assert deadletters.count(real_redis, cfg) == 0


def test_concurrent_jobs_count_every_event_and_log_only_their_own_ids(
    make_config, redis_server, real_redis, capsys: pytest.CaptureFixture[str],
):
    from conftest import parse_log_lines

    from hooklane.shared import logs

    cfg = make(make_config, redis_server, concurrency=8, handler="overlapping")
    before = metrics.EVENTS_NORMALIZED.labels("volumereach", "call.completed")._value.get()
    for n in range(16):
        deliver(cfg, real_redis, f"call_{n}")
    logs.configure("json", "INFO")
    capsys.readouterr()
    build_worker(cfg, redis=real_redis).work(burst=True)
    assert th.OVERLAP["max"] > 1, "the jobs did not overlap: this test would prove nothing"
    assert metrics.EVENTS_NORMALIZED.labels("volumereach", "call.completed")._value.get() - before == 16

    done = [ln for ln in parse_log_lines(capsys.readouterr().err) if ln.get("event") == "handler.done"]
    assert len(done) == 16
    for line in done:
        # A delivery's RQ job id is its request id; its event id names its own call.
        assert line["job_id"] == line["request_id"], line
    assert len({ln["event_id"] for ln in done}) == 16 and len({ln["job_id"] for ln in done}) == 16


# --------------------------------------------------------------------------- real processes: kill, stop


@pytest.fixture
def in_flight(tmp_path: Path, redis_server, make_config, real_redis) -> Iterator[Callable[..., tuple]]:
    """`in_flight(handlers, concurrency, deliveries)`: a real `hooklane worker` with `concurrency` jobs
    started (their handlers announce themselves in test:started) -> (config, Workers, process)."""
    made: list[Workers] = []

    def _start(handlers: str, concurrency: int, deliveries: list[str]) -> tuple[Config, Workers, Any]:
        text = set_worker_concurrency(PROCESS_CONFIG.format(url=redis_server.url, handler="hold"), concurrency)
        text = text.replace('handlers = ["h"]', f"handlers = {json.dumps(handlers.split(','))}")
        text += '\n[handlers.first]\ntype = "python"\ntarget = "support.handlers:record_first"\n'
        text += '\n[handlers.hang]\ntype = "python"\ntarget = "support.handlers:hang_once_each"\n'
        path = tmp_path / "hooklane.toml"
        path.write_text(text)
        workers = Workers(path, redis_server.url)
        made.append(workers)
        cfg = make_config(text, redis_url=redis_server.url)
        for call_id in deliveries:
            deliver(cfg, real_redis, call_id)
        proc = workers.start()
        wait_for(lambda: real_redis.llen("test:started") == concurrency, 30, f"{concurrency} jobs to start")
        return cfg, workers, proc

    yield _start
    for w in made:
        w.stop_all()


def test_sigkill_with_n_jobs_in_flight_loses_none_and_reruns_only_what_had_not_settled(in_flight, real_redis):
    # Each job settles `first`, then hangs in `hang` until the kill.
    cfg, workers, victim = in_flight("first,hang", 4, [f"call_k{n}" for n in range(4)])
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)

    workers.start()
    wait_for(lambda: real_redis.llen("test:calls") == 4, 40, "all 4 events to be delivered after the kill")
    delivered = sorted(json.loads(x)["id"] for x in real_redis.lrange("test:calls", 0, -1))
    assert delivered == [f"vr:call.completed:call_k{n}" for n in range(4)]
    first = [x.decode() for x in real_redis.lrange("test:first", 0, -1)]
    assert sorted(first) == delivered, "the handler that had settled before the kill ran again"
    assert deadletters.list_entries(real_redis, cfg) == []


def test_sigterm_finishes_the_jobs_in_flight_takes_no_more_and_exits(in_flight, real_redis):
    _, _, proc = in_flight("h", 3, [f"call_t{n}" for n in range(5)])
    proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert proc.poll() is None, "the worker exited with jobs in flight"
    real_redis.set("test:release", 1)
    assert proc.wait(timeout=20) == 0
    assert real_redis.llen("test:calls") == 3, "every job in flight finished"
    assert real_redis.llen("rq:queue:hooklane") == 2, "no job was taken after SIGTERM"
    assert StartedJobRegistry(queue=queue(real_redis)).count == 0


def test_a_second_sigterm_stops_at_once_and_its_jobs_are_recovered(in_flight, real_redis):
    cfg, workers, proc = in_flight("hang", 3, [f"call_c{n}" for n in range(3)])
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # RQ ignores a second signal within a second of the first
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)  # exits now, without waiting for the handlers' 120 s
    assert StartedJobRegistry(queue=queue(real_redis)).count == 3, "the cold-stopped jobs are left to recovery"

    workers.start()
    wait_for(lambda: real_redis.llen("test:calls") == 3, 40, "the 3 cold-stopped jobs to be recovered")
    assert deadletters.list_entries(real_redis, cfg) == []


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("text", "message"), [
    ("[worker]\nconcurrency = 0", "worker.concurrency: must be an integer >= 1"),
    ("[worker]\nconcurrency = 100000", "worker.concurrency: must be at most"),
    ('[worker]\nconcurrency = "8"', "worker.concurrency: must be an integer"),
    ('[worker]\nworker_class = "fork"\nconcurrency = 4', "worker.concurrency: the fork worker runs one job"),
    ('[handlers.x]\ntype = "log"\nconcurrency_safe = false', "handlers.x.concurrency_safe: only python handlers"),
])
def test_bad_concurrency_settings_fail_at_start_naming_the_key(make_config, text: str, message: str):
    with pytest.raises(ConfigError, match=message):
        make_config(text)


def test_the_fork_worker_defaults_to_one_job_and_the_simple_worker_to_several(make_config):
    assert make_config('[worker]\nworker_class = "fork"').worker.concurrency == 1
    assert make_config().worker.concurrency > 1


def test_the_concurrency_flag_overrides_the_config_and_is_checked_like_it(make_config):
    from hooklane.operators.cli.serve import with_concurrency

    assert with_concurrency(make_config(), 32).worker.concurrency == 32
    with pytest.raises(ConfigError, match="--concurrency: the fork worker"):
        with_concurrency(make_config('[worker]\nworker_class = "fork"'), 4)
    with pytest.raises(ConfigError, match="--concurrency: must be an integer >= 1"):
        with_concurrency(make_config(), 0)


def test_the_same_delivery_queued_twice_and_run_at_once_fans_out_once(make_config, redis_server, real_redis):
    from hooklane.shared.envelope import Delivery, utc_now_iso
    from hooklane.shared.providers import volumereach
    from hooklane.shared.queueing import enqueue_delivery

    cfg = make(make_config, redis_server, concurrency=8, handler="overlapping")
    body = volumereach.PROVIDER.sample("call.completed")
    # What a client retry of ingest's enqueue can leave: one job id twice in the queue.
    d = Delivery(id="f" * 32, source="vr", provider="volumereach", received_at=utc_now_iso(),
                 body=json.dumps(body).encode(), headers={})
    enqueue_delivery(real_redis, d, cfg)
    enqueue_delivery(real_redis, d, cfg)
    build_worker(cfg, redis=real_redis).work(burst=True)
    assert len(th.CALLS) == 1
    assert deadletters.count(real_redis, cfg) == 0
