"""How a delivery becomes an RQ job: one atomic Lua call, no pickling, no Job object.

`rq.Queue.enqueue` costs two transactions, a pickled and zlib-compressed
payload and a description built from the repr of the whole body; on the ingest
hot path that halved throughput (docs/benchmarks.md). `enqueue_delivery`
writes the same hash RQ's own `Job.save` writes (JSON serializer, data stored
uncompressed, which `Job.restore` accepts) and pushes the id, atomically.
tests/test_ingest_redis.py checks the hash against RQ's own (and the worker
tests run it), so an RQ upgrade that changes the format fails the build, not production.
"""

from __future__ import annotations

import hashlib
import weakref
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError
from rq.serializers import JSONSerializer

from shared.config import Config
from shared.envelope import Delivery

SERIALIZER = JSONSerializer
# Seconds a finished job's hash is kept. Not 0: with 0, RQ 3.0 deletes the job on success and
# re-reads every execution it ever had; after a worker was SIGKILLed that execution's hash has
# expired, Execution.fetch raises, and a successful re-run is recorded as a failure
# (tests/test_worker_processes.py). With >0 RQ only sets an EXPIRE: its common, tested path.
RESULT_TTL = 1
PROCESS_DELIVERY = "workers.jobs.process_delivery"
RUN_HANDLER = "workers.jobs.run_handler"


def queue_name(config: Config) -> str:
    return config.redis.prefix


def rq_now() -> str:
    # RQ's own utcformat: naive UTC with microseconds and a Z.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Written empty by RQ's Job.to_dict for a job that has not run yet.
_UNSET_FIELDS = ("success_callback_name", "failure_callback_name", "stopped_callback_name", "started_at",
                 "ended_at", "last_heartbeat", "worker_name", "group_id")
# Fields whose values come from the config, in the order `_config_values` returns them.
_CONFIG_FIELDS = ("origin", "timeout", "result_ttl", "failure_ttl", "retries_left", "retry_intervals")


def _config_values(config: Config) -> tuple[str, ...]:
    return (
        queue_name(config),
        str(config.worker.job_timeout_seconds),
        str(RESULT_TTL),
        str(config.dead_letters.retention_days * 86400 or 365 * 86400),
        str(config.worker.delivery_max_attempts - 1),
        _intervals_json(config),
    )


def _job_data(delivery_json: str) -> str:
    # JSONSerializer's dumps of (func_name, instance, args, kwargs), built without re-encoding the body.
    return f'["{PROCESS_DELIVERY}",null,[{delivery_json}],{{}}]'


def _description(delivery: Delivery) -> str:
    return f"process_delivery({delivery.source}, {delivery.id})"


def delivery_job_mapping(delivery: Delivery, config: Config, *, delivery_json: str | None = None) -> dict[str, str]:
    """The RQ job hash for `process_delivery(delivery)`: exactly what `enqueue_delivery` writes."""
    stamp = rq_now()
    return {
        "status": "queued",
        "created_at": stamp,
        "enqueued_at": stamp,
        "data": _job_data(delivery_json if delivery_json is not None else delivery.to_json()),
        "description": _description(delivery),
        **dict(zip(_CONFIG_FIELDS, _config_values(config), strict=True)),
        **dict.fromkeys(_UNSET_FIELDS, ""),
    }


def _intervals_json(config: Config) -> str:
    return "[" + ", ".join(f"{i:g}" for i in config.worker.delivery_retry_intervals) + "]"


# The job hash, the queue entry and the queue's registration in one server-side step. A script runs
# atomically like MULTI/EXEC, and Redis refuses a writing script over maxmemory before its first write,
# so it is all or nothing too; but it is one command and one reply instead of five, and a dozen
# arguments instead of ~45: on the ingest hot path that cut the client-side cost of the enqueue by
# ~40% (docs/benchmarks.md). KEYS: job hash, queue list, rq:queues. ARGV: id, timestamp, data,
# description, then _CONFIG_FIELDS' values.
_ENQUEUE_LUA = (
    "local stamp = ARGV[2]\n"
    "redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', stamp, 'enqueued_at', stamp,"
    " 'data', ARGV[3], 'description', ARGV[4], "
    + ", ".join(f"'{f}', ARGV[{i}]" for i, f in enumerate(_CONFIG_FIELDS, start=5)) + ", "
    + ", ".join(f"'{f}', ''" for f in _UNSET_FIELDS) + ")\n"
    "redis.call('RPUSH', KEYS[2], ARGV[1])\n"
    "redis.call('SADD', KEYS[3], KEYS[2])\n"
    "return 1\n"
)
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE_LUA.encode()).hexdigest()
# Clients whose server runs no scripts (EVAL renamed away, an ACL without @scripting, fakeredis
# without lupa): they get the MULTI/EXEC transaction, equally atomic, after one failed try.
_SCRIPTLESS: weakref.WeakSet[Redis] = weakref.WeakSet()


def enqueue_delivery(redis: Redis, delivery: Delivery, config: Config) -> None:
    """Atomically store the job and queue its id. Raises redis.RedisError; nothing is half-written."""
    queue = f"rq:queue:{queue_name(config)}"
    job_key = f"rq:job:{delivery.id}"
    delivery_json = delivery.to_json()
    if redis not in _SCRIPTLESS:
        keys_and_args = (job_key, queue, "rq:queues", delivery.id, rq_now(), _job_data(delivery_json),
                         _description(delivery), *_config_values(config))
        try:
            try:
                redis.evalsha(_ENQUEUE_SHA, 3, *keys_and_args)
            except NoScriptError:
                # First call since Redis started (or SCRIPT FLUSH): EVAL runs it and caches it for EVALSHA.
                redis.eval(_ENQUEUE_LUA, 3, *keys_and_args)
            return
        except ResponseError as exc:
            if not (isinstance(exc, NoPermissionError) or str(exc).lower().startswith("unknown command")):
                raise
            _SCRIPTLESS.add(redis)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(job_key, mapping=delivery_job_mapping(delivery, config, delivery_json=delivery_json))
    pipe.rpush(queue, delivery.id)
    pipe.sadd("rq:queues", queue)
    pipe.execute()


# --------------------------------------------------------------------------- off the hot path
# Handler retries and replays are rare, so they use RQ's own API.


def rq_queue(redis: Redis, config: Config):  # -> rq.Queue
    from rq import Queue

    return Queue(queue_name(config), connection=redis, serializer=SERIALIZER,
                 default_timeout=config.worker.job_timeout_seconds)


def enqueue_handler_job(
    redis: Redis,
    pipeline,
    config: Config,
    *,
    task: dict,
    prior_attempts: list[dict],
    retries: int,
    delay: float | None,
    job_id: str | None = None,
    replays: list[dict] | None = None,
    intervals: list[float] | None = None,
):
    """A `run_handler(task)` job with `retries` RQ retries left, queued now or after `delay` seconds.

    `task` = {"event": canonical event dict, "handler": name, "delivery": envelope dict}.
    The attempt history travels in job.meta["attempts"] so a dead letter keeps all of it.
    """
    from datetime import timedelta

    from rq import Retry
    from rq.job import Job

    from workers.backoff import delays

    queue = rq_queue(redis, config)
    retry = None
    if retries > 0:
        retry = Retry(max=retries, interval=intervals if intervals is not None else delays(config.worker, retries))
    job = Job.create(
        RUN_HANDLER,
        args=[task],
        connection=redis,
        serializer=SERIALIZER,
        id=job_id,
        timeout=config.worker.job_timeout_seconds,
        result_ttl=RESULT_TTL,
        failure_ttl=config.dead_letters.retention_days * 86400 or 365 * 86400,
        description=f"run_handler({task['handler']}, {task['event']['id']})",
        meta={"attempts": list(prior_attempts), "replays": list(replays or [])},
        retry=retry,
        origin=queue.name,
    )
    if delay:
        queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay), pipeline=pipeline)
    else:
        queue.enqueue_job(job, pipeline=pipeline)
    return job


def enqueue_delivery_replay(
    redis: Redis,
    pipeline,
    config: Config,
    envelope: dict,
    *,
    job_id: str,
    prior_attempts: list[dict],
    replays: list[dict],
):
    """Re-run a dead-lettered delivery (stage normalize/delivery) with a fresh attempt budget."""
    from rq import Retry
    from rq.job import Job

    queue = rq_queue(redis, config)
    job = Job.create(
        PROCESS_DELIVERY,
        args=[envelope],
        connection=redis,
        serializer=SERIALIZER,
        id=job_id,
        timeout=config.worker.job_timeout_seconds,
        result_ttl=RESULT_TTL,
        failure_ttl=config.dead_letters.retention_days * 86400 or 365 * 86400,
        description=f"process_delivery({envelope.get('source')}, {envelope.get('id')}) replay",
        meta={"attempts": list(prior_attempts), "replays": list(replays)},
        retry=Retry(max=config.worker.delivery_max_attempts - 1, interval=list(config.worker.delivery_retry_intervals))
        if config.worker.delivery_max_attempts > 1 else None,
        origin=queue.name,
    )
    queue.enqueue_job(job, pipeline=pipeline)
    return job
