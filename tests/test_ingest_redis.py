"""Ingest against a real redis-server: the job RQ reads back, its hash against RQ's own, and an outage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, RedisServer
from flask.testing import FlaskClient
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from hooklane.ingest.app import create_app
from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery, utc_now_iso
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.queueing import (
    PROCESS_DELIVERY,
    RESULT_TTL,
    DeliveryEnqueuer,
    delivery_job_mapping,
    enqueue_delivery,
)

pytestmark = pytest.mark.redis

QUEUE = "hooklane"
BODY = json.dumps({"event": "call.completed", "data": {"call_id": "call_r1", "outcome": "INTERESTED",
                                                       "transcript": "x" * 1500}}).encode() + b"\n"


def signed_headers(body: bytes = BODY) -> dict[str, str]:
    sign = PROVIDERS["volumereach"].sign
    assert sign is not None
    return {**sign(body, TEST_ENV["VR_SECRET"].encode()), "X-Webhook-Delivery-Id": "dlv_r1"}


def ingest_client(make_config: Callable[..., Config], url: str) -> FlaskClient:
    # No client passed in: the app builds its own from the URL, as under gunicorn.
    return create_app(make_config(BASE_CONFIG, redis_url=url)).test_client()


def job_ids_in_hashes(r: redis.Redis) -> set[str]:
    return {k.decode().removeprefix("rq:job:") for k in r.scan_iter("rq:job:*") if k.count(b":") == 2}


def assert_no_partial_jobs(r: redis.Redis) -> set[str]:
    """Every job hash has its queue entry and every queue entry its hash; returns the ids."""
    queued = [x.decode() for x in r.lrange(f"rq:queue:{QUEUE}", 0, -1)]
    assert len(queued) == len(set(queued)), "an id was pushed twice"
    hashes = job_ids_in_hashes(r)
    assert set(queued) == hashes
    for job_id in hashes:
        job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
        assert job.func_name == PROCESS_DELIVERY
        assert Delivery.from_dict(job.args[0]).id == job_id
    return hashes


# --------------------------------------------------------------------------- what the workers read


def test_accepted_delivery_is_an_rq_job_with_the_exact_bytes(make_config: Callable[..., Config],
                                                             redis_server: RedisServer,
                                                             real_redis: redis.Redis) -> None:
    client = ingest_client(make_config, redis_server.url)
    resp = client.post("/webhooks/vr", data=BODY, headers=signed_headers())
    assert resp.status_code == 200
    job_id = resp.get_json()["id"]

    job = Job.fetch(job_id, connection=real_redis, serializer=JSONSerializer)
    assert job.func_name == PROCESS_DELIVERY
    assert job.get_status() == JobStatus.QUEUED
    assert job.origin == QUEUE
    assert job.kwargs == {}
    delivery = Delivery.from_dict(job.args[0])
    assert delivery.body == BODY
    assert (delivery.id, delivery.source, delivery.provider) == (job_id, "vr", "volumereach")
    assert delivery.delivery_id == "dlv_r1"
    assert Queue(QUEUE, connection=real_redis, serializer=JSONSerializer).job_ids == [job_id]
    assert real_redis.smembers("rq:queues") == {f"rq:queue:{QUEUE}".encode()}


def test_job_carries_the_retry_budget_and_ttls_from_config(make_config: Callable[..., Config],
                                                           redis_server: RedisServer,
                                                           real_redis: redis.Redis) -> None:
    config = make_config(BASE_CONFIG, redis_url=redis_server.url)
    resp = create_app(config).test_client().post("/webhooks/vr", data=BODY, headers=signed_headers())
    job = Job.fetch(resp.get_json()["id"], connection=real_redis, serializer=JSONSerializer)
    assert job.timeout == config.worker.job_timeout_seconds
    assert job.result_ttl == RESULT_TTL
    assert job.failure_ttl == config.dead_letters.retention_days * 86400
    assert job.retries_left == config.worker.delivery_max_attempts - 1


def test_job_hash_has_every_field_rq_itself_writes(config: Config, real_redis: redis.Redis) -> None:
    """An RQ upgrade that adds a field Job.restore relies on must fail here, not in production."""
    delivery = Delivery(id="a" * 32, source="vr", provider="volumereach", received_at="2025-01-01T00:00:00.000000Z",
                        body=BODY)
    enqueue_delivery(real_redis, delivery, config)
    ours = {k.decode(): v.decode() for k, v in real_redis.hgetall(f"rq:job:{delivery.id}").items()}
    our_keys = sorted(k.decode().replace(delivery.id, "<id>") for k in real_redis.keys("*"))
    assert set(ours) == set(delivery_job_mapping(delivery, config))
    real_redis.flushall()

    # The same job through RQ's public API.
    queue = Queue(QUEUE, connection=real_redis, serializer=JSONSerializer)
    rq_job = queue.enqueue(
        PROCESS_DELIVERY, delivery.to_dict(), job_id="b" * 32, job_timeout=int(ours["timeout"]),
        result_ttl=int(ours["result_ttl"]), failure_ttl=int(ours["failure_ttl"]), description=ours["description"],
        retry=Retry(max=int(ours["retries_left"]), interval=json.loads(ours["retry_intervals"])),
    )
    theirs = {k.decode(): v for k, v in real_redis.hgetall(f"rq:job:{rq_job.id}").items()}
    their_keys = sorted(k.decode().replace(rq_job.id, "<id>") for k in real_redis.keys("*"))

    assert set(theirs) - set(ours) == set(), "RQ writes a job field that shared.queueing does not"
    assert set(rq_job.to_dict()) - set(ours) == set(), "Job.to_dict has a field that shared.queueing does not write"
    assert set(ours) - set(theirs) == set(), "shared.queueing writes a field RQ no longer knows"
    assert our_keys == their_keys, "RQ's enqueue touches Redis keys shared.queueing does not"
    for name in ("status", "origin", "timeout", "result_ttl", "failure_ttl", "retries_left", "description",
                 "success_callback_name", "failure_callback_name", "stopped_callback_name", "started_at",
                 "ended_at", "last_heartbeat", "worker_name", "group_id"):
        assert ours[name] == theirs[name].decode(), name
    assert json.loads(ours["retry_intervals"]) == json.loads(theirs["retry_intervals"])

    # And RQ reads ours back as the job it would have written itself.
    enqueue_delivery(real_redis, delivery, config)
    mine = Job.fetch(delivery.id, connection=real_redis, serializer=JSONSerializer)
    rq_job = Job.fetch(rq_job.id, connection=real_redis, serializer=JSONSerializer)
    for attr in ("func_name", "args", "kwargs", "description", "origin", "timeout", "result_ttl", "failure_ttl",
                 "retries_left", "retry_intervals"):
        assert getattr(mine, attr) == getattr(rq_job, attr), attr
    assert mine.get_status() == rq_job.get_status() == JobStatus.QUEUED


def _hash(r: redis.Redis, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(f"rq:job:{job_id}").items()}


def _without_stamps(h: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in h.items() if k not in ("created_at", "enqueued_at")}


def test_enqueue_writes_exactly_delivery_job_mapping(config: Config, real_redis: redis.Redis) -> None:
    delivery = Delivery(id="c" * 32, source="vr", provider="volumereach", received_at="2025-01-01T00:00:00.000000Z",
                        body=BODY, headers={"x-webhook-delivery-id": "d1"}, delivery_id="d1")
    enqueue_delivery(real_redis, delivery, config)
    written = _hash(real_redis, delivery.id)
    assert _without_stamps(written) == _without_stamps(delivery_job_mapping(delivery, config))
    assert written["created_at"] == written["enqueued_at"]
    assert real_redis.lrange(f"rq:queue:{QUEUE}", 0, -1) == [delivery.id.encode()]


def test_enqueue_reloads_its_script_after_a_script_flush(config: Config, real_redis: redis.Redis) -> None:
    # A Redis restart or failover empties the script cache; the next delivery must not fail for it.
    first = Delivery(id="d" * 32, source="vr", provider="volumereach", received_at=utc_now_iso(), body=BODY)
    enqueue_delivery(real_redis, first, config)
    real_redis.script_flush()
    second = Delivery(id="e" * 32, source="vr", provider="volumereach", received_at=utc_now_iso(), body=BODY)
    enqueue_delivery(real_redis, second, config)
    assert assert_no_partial_jobs(real_redis) == {first.id, second.id}


def test_enqueue_without_scripting_falls_back_to_a_transaction_once(config: Config, redis_server: RedisServer,
                                                                      real_redis: redis.Redis) -> None:
    # Managed or hardened Redis may deny scripts (an ACL without @scripting): same job, via MULTI/EXEC.
    real_redis.acl_setuser("noscript", enabled=True, nopass=True, keys=["*"], channels=["*"],
                           commands=["+@all", "-@scripting"])
    try:
        client = redis.Redis.from_url(redis_server.url, username="noscript")
        ids = ["f" * 32, "0" * 32]
        real_redis.config_resetstat()
        enqueue = DeliveryEnqueuer(config)  # as ingest holds one per app
        for job_id in ids:
            delivery = Delivery(id=job_id, source="vr", provider="volumereach", received_at=utc_now_iso(), body=BODY)
            enqueue(client, delivery)
            assert _without_stamps(_hash(real_redis, job_id)) == _without_stamps(
                delivery_job_mapping(delivery, config))
        assert assert_no_partial_jobs(real_redis) == set(ids)
        # Refused once, then not tried again for this client.
        assert real_redis.info("commandstats")["cmdstat_evalsha"]["rejected_calls"] == 1
        client.close()
    finally:
        real_redis.acl_deluser("noscript")


def test_duplicate_deliveries_are_separate_complete_jobs(make_config: Callable[..., Config],
                                                         redis_server: RedisServer,
                                                         real_redis: redis.Redis) -> None:
    client = ingest_client(make_config, redis_server.url)
    ids = [client.post("/webhooks/vr", data=BODY, headers=signed_headers()).get_json()["id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert assert_no_partial_jobs(real_redis) == set(ids)


def test_refused_deliveries_write_nothing(make_config: Callable[..., Config], redis_server: RedisServer,
                                          real_redis: redis.Redis) -> None:
    client = ingest_client(make_config, redis_server.url)
    assert client.post("/webhooks/vr", data=BODY).status_code == 401
    assert client.post("/webhooks/vr", data=b"[]", headers=signed_headers(b"[]")).status_code == 400
    assert client.post("/webhooks/vb?token=nope", data=BODY).status_code == 401
    assert real_redis.keys("*") == []


def test_readyz_follows_the_real_server(make_config: Callable[..., Config],
                                        disposable_redis: RedisServer) -> None:
    client = ingest_client(make_config, disposable_redis.url)
    assert client.get("/readyz").status_code == 200
    disposable_redis.stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "Retry-After" in resp.headers
    disposable_redis.start()
    assert _eventually(lambda: client.get("/readyz").status_code == 200)


# --------------------------------------------------------------------------- outage


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_redis_stopped_is_503_with_retry_after_never_500(make_config: Callable[..., Config],
                                                         disposable_redis: RedisServer) -> None:
    client = ingest_client(make_config, disposable_redis.url)
    assert client.post("/webhooks/vr", data=BODY, headers=signed_headers()).status_code == 200
    disposable_redis.stop()
    for _ in range(5):
        started = time.monotonic()
        resp = client.post("/webhooks/vr", data=BODY, headers=signed_headers())
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert resp.headers["Retry-After"] == "5"
        assert resp.get_json() == {"status": "refused", "reason": "queue unavailable, retry later"}
        # A sync worker blocked in retries during an outage stops answering everyone else.
        assert time.monotonic() - started < 1.0


def test_outage_under_load_leaves_no_partial_job_and_loses_no_accepted_one(
    make_config: Callable[..., Config], disposable_redis: RedisServer
) -> None:
    # RDB on shutdown, so what Redis held when it stopped is what it holds after the restart.
    disposable_redis.client().config_set("save", "3600 1")
    app = create_app(make_config(BASE_CONFIG, redis_url=disposable_redis.url))
    accepted: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        client = app.test_client()
        while not stop.is_set():
            resp = client.post("/webhooks/vr", data=BODY, headers=signed_headers())
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                accepted.append(resp.get_json()["id"])

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        assert _eventually(lambda: len(accepted) >= 50)
        disposable_redis.stop()  # mid-traffic: some request is in flight when the server goes
        stopped_at = len(statuses)
        assert _eventually(lambda: statuses[stopped_at:].count(503) >= 20)
        accepted_before_restart = len(accepted)
        disposable_redis.start()
        assert _eventually(lambda: len(accepted) > accepted_before_restart)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()

    assert set(statuses) <= {200, 503}, f"unexpected statuses: {sorted(set(statuses))}"
    stored = assert_no_partial_jobs(disposable_redis.client())
    missing = set(accepted) - stored
    assert not missing, f"{len(missing)} deliveries answered 200 are not in Redis"
    # Anything stored but not answered 200 can only be a 503 whose EXEC landed: a harmless redelivery.
    assert len(stored - set(accepted)) <= statuses.count(503)
