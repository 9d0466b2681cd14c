"""The worker pipeline against a real Redis: ingest's job -> RQ worker -> handlers -> retries -> dead letters."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import redis
from conftest import set_worker_concurrency
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from support import handlers as th

from hooklane.ingest.app import create_app
from hooklane.operators import actions
from hooklane.shared import deadletters
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery, utc_now_iso
from hooklane.shared.providers import volumereach
from hooklane.shared.queueing import SERIALIZER, enqueue_delivery
from hooklane.workers import runtime
from hooklane.workers.main import build_worker

pytestmark = pytest.mark.redis

# Retries within a test's time: 0.2 s backoff, delivery retries at once.
FAST_RETRIES = """
[worker]
backoff_base_seconds = 0.2
backoff_multiplier = 1
backoff_cap_seconds = 0.2
backoff_jitter = 0
delivery_retry_intervals = [0]
"""

CONFIG = FAST_RETRIES + """
[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]

[handlers.first]
type = "python"
target = "support.handlers:first"
max_attempts = 3

[handlers.second]
type = "python"
target = "support.handlers:second"
max_attempts = 3

[[routes]]
events = ["call.*"]
handlers = ["first", "second"]
"""


@pytest.fixture
def cfg(make_config: Callable[..., Config], real_redis: redis.Redis, redis_server, worker_concurrency) -> Config:
    return make_config(set_worker_concurrency(CONFIG, worker_concurrency), redis_url=redis_server.url)


@pytest.fixture(autouse=True)
def _reset_handlers() -> Iterator[None]:
    th.CALLS.clear()
    th.SCRIPT.clear()
    yield
    runtime.install(None)


def payload(call_id: str = "call_1", outcome: str = "INTERESTED") -> bytes:
    body = volumereach.PROVIDER.samples()["call.completed"]
    body["data"] = {**body["data"], "call_id": call_id, "outcome": outcome}
    return json.dumps(body).encode()


def deliver(cfg: Config, r: redis.Redis, body: bytes, delivery_id: str = "dlv-1") -> str:
    client = create_app(cfg, r).test_client()
    headers = {**volumereach.sign(body, b"vr-secret-current"), "X-Webhook-Delivery-Id": delivery_id}
    resp = client.post("/webhooks/vr", data=body, headers=headers)
    assert resp.status_code == 200, resp.json
    return resp.json["id"]


def drain(cfg: Config, r: redis.Redis, *, until: Callable[[], bool] | None = None, timeout: float = 10.0) -> None:
    """Run burst workers (each one first moves due scheduled retries back) until `until` or the queue is idle."""
    deadline = time.monotonic() + timeout
    scheduled = ScheduledJobRegistry(queue=Queue("hooklane", connection=r, serializer=SERIALIZER))
    while True:
        build_worker(cfg, redis=r).work(burst=True, with_scheduler=True)
        if until is not None and until():
            return
        if until is None and scheduled.count == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError("pipeline did not settle in time")
        time.sleep(0.1)


def calls(name: str) -> list[dict[str, Any]]:
    return [e for n, e in th.CALLS if n == name]


def test_an_accepted_delivery_reaches_every_routed_handler_as_a_canonical_event(cfg, real_redis):
    deliver(cfg, real_redis, payload("call_42"))
    drain(cfg, real_redis)
    for name in ("first", "second"):
        [event] = calls(name)
        assert event["id"] == "vr:call.completed:call_42"
        assert event["type"] == "call.completed"
        assert event["delivery_id"] == "dlv-1"
        assert event["call"]["phone"] == "+15551234567"


def test_a_job_written_before_the_hooklane_namespace_still_runs(cfg, real_redis):
    # Jobs queued (or scheduled for a retry) by the previous layout name `workers.jobs.*` in their hash.
    deliver(cfg, real_redis, payload("call_legacy"))
    [job_id] = [i.decode() for i in real_redis.lrange("rq:queue:hooklane", 0, -1)]
    data = real_redis.hget(f"rq:job:{job_id}", "data").decode()
    assert data.startswith('["hooklane.workers.jobs.process_delivery"')
    real_redis.hset(f"rq:job:{job_id}", "data", data.replace("hooklane.workers.jobs.", "workers.jobs.", 1))

    drain(cfg, real_redis)

    assert [e["call"]["id"] for e in calls("first")] == ["call_legacy"]
    assert [e["call"]["id"] for e in calls("second")] == ["call_legacy"]


def test_a_redelivered_event_fans_out_only_once(cfg, real_redis):
    deliver(cfg, real_redis, payload("call_7"), delivery_id="dlv-a")
    deliver(cfg, real_redis, payload("call_7"), delivery_id="dlv-b")
    drain(cfg, real_redis)
    assert len(calls("first")) == 1 and len(calls("second")) == 1


def test_distinct_events_are_not_mistaken_for_duplicates(cfg, real_redis):
    deliver(cfg, real_redis, payload("call_1"))
    deliver(cfg, real_redis, payload("call_2"))
    drain(cfg, real_redis)
    assert sorted(e["call"]["id"] for e in calls("first")) == ["call_1", "call_2"]


def test_a_delivery_job_that_crashes_mid_fanout_is_rerun_and_still_delivers(cfg, real_redis):
    # The crash happens after the dedupe claim and after `first` succeeded: the re-run of the
    # same delivery must not be taken for a duplicate, and must not run `first` again.
    th.SCRIPT["second"] = ["crash"]
    deliver(cfg, real_redis, payload("call_9"))
    drain(cfg, real_redis, until=lambda: len(calls("second")) == 1)
    assert len(calls("first")) == 1
    assert len(calls("second")) == 1
    assert deadletters.count(real_redis, cfg) == 0


def test_a_transient_failure_is_retried_with_backoff_and_only_that_handler_reruns(cfg, real_redis):
    th.SCRIPT["second"] = ["transient", "transient"]
    deliver(cfg, real_redis, payload("call_3"))
    drain(cfg, real_redis, until=lambda: len(calls("second")) == 1)
    assert len(calls("first")) == 1, "a handler that succeeded must not run again"
    assert deadletters.count(real_redis, cfg) == 0


def test_a_permanent_failure_is_dead_lettered_at_once_with_its_event_and_delivery(cfg, real_redis):
    th.SCRIPT["first"] = ["permanent"]
    deliver(cfg, real_redis, payload("call_4"))
    drain(cfg, real_redis)
    [entry] = deadletters.list_entries(real_redis, cfg)
    assert entry["stage"] == "handler" and entry["handler"] == "first"
    assert len(entry["attempts"]) == 1
    assert entry["error"] == {"class": "PermanentError", "message": "first refused", "status": 400}
    assert entry["event"]["id"] == "vr:call.completed:call_4"
    assert json.loads(__import__("base64").b64decode(entry["delivery"]["body_b64"])) == json.loads(payload("call_4"))
    assert "PermanentError" in entry["traceback"]
    assert len(calls("second")) == 1, "the other handler still ran"


def test_exhausted_retries_are_dead_lettered_with_every_attempt(cfg, real_redis):
    th.SCRIPT["second"] = ["transient", "bug", "transient"]
    deliver(cfg, real_redis, payload("call_5"))
    drain(cfg, real_redis, until=lambda: deadletters.count(real_redis, cfg) == 1)
    [entry] = deadletters.list_entries(real_redis, cfg)
    assert [a["error_class"] for a in entry["attempts"]] == ["TransientError", "KeyError", "TransientError"]
    assert entry["attempts"][0]["status"] == 503
    assert all(a["at"].endswith("Z") for a in entry["attempts"])
    assert calls("second") == []
    assert len(calls("first")) == 1


def test_retries_wait_in_rq_scheduled_registry_between_attempts(cfg, real_redis):
    th.SCRIPT["second"] = ["transient"]
    deliver(cfg, real_redis, payload("call_6"))
    build_worker(cfg, redis=real_redis).work(burst=True, with_scheduler=False)
    queue = Queue("hooklane", connection=real_redis, serializer=SERIALIZER)
    registry = ScheduledJobRegistry(queue=queue)
    [job_id] = registry.get_job_ids()
    job = queue.fetch_job(job_id)
    assert job.func_name == "hooklane.workers.jobs.run_handler"
    assert job.meta["attempts"][0]["error_class"] == "TransientError"
    assert job.retries_left == 1  # max_attempts 3: the inline attempt, this job, one retry


def test_a_body_that_is_not_json_is_dead_lettered_at_stage_normalize(cfg, real_redis):
    deliver(cfg, real_redis, b'{"event": "call.completed", "data": ')
    drain(cfg, real_redis)
    [entry] = deadletters.list_entries(real_redis, cfg)
    assert entry["stage"] == "normalize"
    assert entry["error"]["class"] == "NormalizeFailed"
    assert entry["event"] is None and entry["delivery"]["source"] == "vr"
    assert len(entry["attempts"]) == 1, "a permanent normalize failure is not retried"


def test_an_event_no_route_matches_is_counted_not_failed(cfg, make_config, redis_server, real_redis):
    cfg = make_config(set_worker_concurrency(CONFIG.replace('events = ["call.*"]', 'events = ["campaign.*"]'),
                                             cfg.worker.concurrency), redis_url=redis_server.url)
    deliver(cfg, real_redis, payload("call_8"))
    drain(cfg, real_redis)
    assert th.CALLS == []
    assert deadletters.count(real_redis, cfg) == 0
    from hooklane.shared import counters

    assert counters.recent(real_redis, "hooklane", "unrouted") == 1


def test_a_replayed_handler_dead_letter_runs_only_that_handler_with_history_kept(cfg, real_redis):
    th.SCRIPT["second"] = ["permanent"]
    deliver(cfg, real_redis, payload("call_10"))
    drain(cfg, real_redis)
    [entry] = deadletters.list_entries(real_redis, cfg)
    th.SCRIPT["second"] = ["permanent"]
    deadletters.replay(real_redis, cfg, entry["id"])
    drain(cfg, real_redis)
    [again] = deadletters.list_entries(real_redis, cfg)
    assert len(again["attempts"]) == 2 and len(again["replays"]) == 1
    deadletters.replay(real_redis, cfg, again["id"])
    drain(cfg, real_redis)
    assert deadletters.count(real_redis, cfg) == 0
    assert len(calls("second")) == 1 and len(calls("first")) == 1


def test_a_dead_letter_stored_before_the_typed_records_replays_with_its_history(cfg, real_redis):
    # Written as a literal: the stored format is the interface, whatever writes it today.
    attempt = {"at": "2026-11-30T10:00:00.5Z", "error_class": "TransientError", "message": "answered 503",
               "status": 503, "duration_ms": 12.5}
    earlier = {"at": "2026-11-30T09:00:00Z", "job_id": "a" * 32, "entry_id": "b" * 32}
    event = {"id": "vr:call.completed:call_old", "type": "call.completed", "source": "vr",
             "provider": "volumereach"}
    stored = {"id": "c" * 32, "stage": "handler", "died_at": "2026-11-30T10:00:01Z", "source": "vr",
              "provider": "volumereach", "event_id": event["id"], "event_type": "call.completed",
              "handler": "second", "error": {"class": "TransientError", "message": "answered 503", "status": 503},
              "attempts": [attempt], "traceback": "Traceback ...", "event": event,
              "delivery": {"v": 1, "id": "d" * 32, "source": "vr", "provider": "volumereach",
                           "received_at": "2026-11-30T10:00:00Z", "body_b64": ""},
              "replays": [earlier]}
    real_redis.set(deadletters.entry_key("hooklane", stored["id"]), json.dumps(stored))
    real_redis.zadd(deadletters.index_key("hooklane"), {stored["id"]: 1796032801})
    assert deadletters.get(real_redis, cfg, stored["id"]) == stored

    plan = deadletters.replay(real_redis, cfg, stored["id"])
    job = Job.fetch(plan["job_id"], connection=real_redis, serializer=SERIALIZER)
    assert job.args == [{"event": event, "handler": "second", "delivery": stored["delivery"]}]
    assert job.meta["attempts"] == [attempt]
    assert job.meta["replays"][0] == earlier and job.meta["replays"][1]["entry_id"] == stored["id"]
    drain(cfg, real_redis)

    assert calls("second") == [event] and calls("first") == []
    assert deadletters.count(real_redis, cfg) == 0


def test_a_malformed_dead_letter_is_refused_by_replay_with_the_reason_and_kept(cfg, real_redis):
    entry = dead_letter_of_second(cfg, real_redis, "call_12")
    broken = {k: v for k, v in entry.items() if k != "attempts"}
    real_redis.set(deadletters.entry_key("hooklane", entry["id"]), json.dumps(broken))

    result = actions.replay_one(real_redis, cfg, entry["id"])

    assert result["status"] == actions.CONFLICT
    assert result["reason"] == f"cannot replay a malformed entry: dead letter {entry['id']}: missing attempts"
    assert deadletters.get(real_redis, cfg, entry["id"]) == broken


def test_a_handler_job_whose_task_is_malformed_is_dead_lettered_at_once_with_its_argument(cfg, real_redis):
    from rq import Retry

    from hooklane.shared.queueing import RUN_HANDLER, rq_queue

    task = {"handler": "second", "delivery": None}  # no event
    job = rq_queue(real_redis, cfg).enqueue(RUN_HANDLER, task, retry=Retry(max=2, interval=0))
    drain(cfg, real_redis)

    [entry] = deadletters.list_entries(real_redis, cfg)
    assert entry["id"] == job.id and entry["stage"] == "handler"
    assert [a["error_class"] for a in entry["attempts"]] == ["PermanentError"], "not retried: it cannot succeed"
    assert "handler task: missing event" in entry["error"]["message"]
    assert entry["delivery"] == task, "the argument is kept whole"
    assert calls("second") == []


# --------------------------------------------------------------------------- hostile but accepted payloads

HTTP_CONFIG = FAST_RETRIES + """
[[sources]]
name = "vk"
provider = "voicekit"
token = "env:VOICEKIT_TOKEN"

[handlers.crm]
type = "http"
url = "{url}/crm"
max_attempts = 3

[[routes]]
events = ["*"]
handlers = ["crm"]
"""


def enqueue_raw(cfg: Config, r: redis.Redis, body: bytes) -> str:
    """What ingest writes for an accepted VoiceKit delivery (VoiceKit authenticates by URL token)."""
    delivery = Delivery(id=uuid.uuid4().hex, source="vk", provider="voicekit", received_at=utc_now_iso(), body=body)
    enqueue_delivery(r, delivery, cfg)
    return delivery.id


def call_started(call_id: str) -> bytes:
    return json.dumps({"event": "call_started", "data": {"call_id": call_id}}, ensure_ascii=False).encode()


@pytest.mark.parametrize("call_id", ["日本-1", "📞-2", "line\r\nX-Injected: 1"])
def test_an_event_whose_id_is_not_ascii_reaches_the_http_downstream_once_with_one_key(make_config, redis_server,
                                                                                     real_redis, http_sink, call_id):
    cfg = make_config(HTTP_CONFIG.format(url=http_sink.url), redis_url=redis_server.url)
    http_sink.script((503, {}, 0.0))  # the first attempt fails: the retry must carry the same key
    enqueue_raw(cfg, real_redis, call_started(call_id))
    drain(cfg, real_redis, until=lambda: len(http_sink.delivered()) == 1)
    failed, delivered = http_sink.requests
    assert delivered.event["id"] == f"vk:call_started:{call_id}"
    assert failed.key == delivered.key and unquote(delivered.key) == delivered.event["id"]
    assert deadletters.count(real_redis, cfg) == 0


POISON_BODIES = {
    "overflowing number": b'{"event":"call_started","data":{"call_id":"c1"},"x":1e400}',
    "overflowing call id": b'{"event":"call_started","data":{"call_id":-1e400}}',
    "lone surrogate id": b'{"event":"call_started","data":{"call_id":"\\ud800"}}',
    "deep nesting": b'{"event":"call_started","data":{"call_id":"c2"},"x":' + b"[" * 990 + b"]" * 990 + b"}",
}


@pytest.mark.parametrize("body", POISON_BODIES.values(), ids=POISON_BODIES.keys())
def test_a_poison_payload_is_dead_lettered_once_at_normalize_and_never_sent(make_config, redis_server, real_redis,
                                                                           http_sink, body):
    cfg = make_config(HTTP_CONFIG.format(url=http_sink.url), redis_url=redis_server.url)
    delivery_id = enqueue_raw(cfg, real_redis, body)
    drain(cfg, real_redis)
    [entry] = deadletters.list_entries(real_redis, cfg)
    assert entry["stage"] == "normalize" and entry["error"]["class"] == "NormalizeFailed"
    assert len(entry["attempts"]) == 1, "refused once, not retried"
    assert entry["delivery"]["id"] == delivery_id
    assert http_sink.requests == []


# --------------------------------------------------------------------------- one truth with RQ's own tools


def failed_registry(r: redis.Redis) -> FailedJobRegistry:
    """What `rq info` counts and rq-dashboard lists (and offers to requeue)."""
    return FailedJobRegistry(queue=Queue("hooklane", connection=r, serializer=SERIALIZER))


def dead_letter_of_second(cfg: Config, r: redis.Redis, call_id: str, failures: int = 3) -> dict[str, Any]:
    """`second` fails every attempt (max_attempts 3): its retry job dies in RQ and becomes a dead letter."""
    th.SCRIPT["second"] = ["transient"] * failures
    deliver(cfg, r, payload(call_id))
    drain(cfg, r, until=lambda: deadletters.count(r, cfg) == 1)
    [entry] = deadletters.list_entries(r, cfg)
    assert failed_registry(r).get_job_ids() == [entry["id"]], "RQ holds the job that died"
    return entry


def test_a_replayed_dead_letter_leaves_rqs_failed_registry_and_cannot_be_requeued_there(cfg, real_redis):
    entry = dead_letter_of_second(cfg, real_redis, "call_11")
    deadletters.replay(real_redis, cfg, entry["id"])
    assert failed_registry(real_redis).count == 0
    assert not Job.exists(entry["id"], connection=real_redis)
    with pytest.raises((NoSuchJobError, InvalidJobOperation)):
        failed_registry(real_redis).requeue(entry["id"])
    drain(cfg, real_redis)
    assert len(calls("second")) == 1


def test_a_purged_dead_letter_leaves_rqs_failed_registry_too(cfg, real_redis):
    deliver(cfg, real_redis, b"{not json")
    drain(cfg, real_redis)
    [entry] = deadletters.list_entries(real_redis, cfg)
    assert failed_registry(real_redis).get_job_ids() == [entry["id"]]
    assert actions.purge_many(real_redis, cfg, [entry["id"]]).counts == {actions.PURGED: 1}
    assert failed_registry(real_redis).count == 0
    assert not Job.exists(entry["id"], connection=real_redis)


def test_a_dead_letter_requeued_with_rqs_tools_is_its_replay_and_dlq_replay_then_finds_nothing(cfg, real_redis):
    entry = dead_letter_of_second(cfg, real_redis, "call_12")
    failed_registry(real_redis).requeue(entry["id"])  # rq-dashboard's "Requeue"
    drain(cfg, real_redis)
    assert len(calls("second")) == 1
    assert deadletters.count(real_redis, cfg) == 0, "the requeue took the dead letter"
    assert actions.replay_one(real_redis, cfg, entry["id"])["status"] == actions.NOT_FOUND
    drain(cfg, real_redis)
    assert len(calls("second")) == 1, "delivered once, not once per tool"


def test_a_requeue_racing_the_replay_does_nothing_and_the_event_is_delivered_once(cfg, real_redis):
    entry = dead_letter_of_second(cfg, real_redis, "call_13")
    Job.fetch(entry["id"], connection=real_redis, serializer=SERIALIZER).requeue()  # queued, not run yet
    deadletters.replay(real_redis, cfg, entry["id"])
    drain(cfg, real_redis)
    assert len(calls("second")) == 1
    assert deadletters.count(real_redis, cfg) == 0 and failed_registry(real_redis).count == 0


def test_a_requeued_dead_letter_that_fails_again_comes_back_with_its_history(cfg, real_redis):
    entry = dead_letter_of_second(cfg, real_redis, "call_14", failures=4)
    failed_registry(real_redis).requeue(entry["id"])
    drain(cfg, real_redis, until=lambda: failed_registry(real_redis).count == 1)
    [again] = deadletters.list_entries(real_redis, cfg)
    assert again["id"] == entry["id"]
    assert len(again["attempts"]) == 4 and len(again["replays"]) == 1
    deadletters.replay(real_redis, cfg, again["id"])
    drain(cfg, real_redis)
    assert len(calls("second")) == 1 and failed_registry(real_redis).count == 0
