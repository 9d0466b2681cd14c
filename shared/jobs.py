"""How a delivery becomes an RQ job: one MULTI/EXEC, no pickling, no Job object.

`rq.Queue.enqueue` costs two transactions, a pickled and zlib-compressed
payload and a description built from the repr of the whole body; on the ingest
hot path that halved throughput (docs/benchmarks.md). `enqueue_delivery`
writes the same hash RQ's own `Job.save` writes (JSON serializer, data stored
uncompressed, which `Job.restore` accepts) and pushes the id, atomically.
`tests/test_jobs.py` checks the hash against RQ's own and runs it on a real
worker, so an RQ upgrade that changes the format fails the build, not production.
"""

from __future__ import annotations

from datetime import UTC, datetime

from redis import Redis
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


def delivery_job_mapping(delivery: Delivery, config: Config, *, delivery_json: str | None = None) -> dict[str, str]:
    """The RQ job hash for `process_delivery(delivery)`."""
    body = delivery_json if delivery_json is not None else delivery.to_json()
    stamp = rq_now()
    attempts = config.worker.delivery_max_attempts
    return {
        "status": "queued",
        "created_at": stamp,
        "enqueued_at": stamp,
        # JSONSerializer's dumps of (func_name, instance, args, kwargs), built without re-encoding the body.
        "data": f'["{PROCESS_DELIVERY}",null,[{body}],{{}}]',
        "origin": queue_name(config),
        "description": f"process_delivery({delivery.source}, {delivery.id})",
        "timeout": str(config.worker.job_timeout_seconds),
        "result_ttl": str(RESULT_TTL),
        "failure_ttl": str(config.dead_letters.retention_days * 86400 or 365 * 86400),
        "retries_left": str(attempts - 1),
        "retry_intervals": _intervals_json(config),
        "success_callback_name": "",
        "failure_callback_name": "",
        "stopped_callback_name": "",
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
        "group_id": "",
    }


def _intervals_json(config: Config) -> str:
    return "[" + ", ".join(f"{i:g}" for i in config.worker.delivery_retry_intervals) + "]"


def enqueue_delivery(redis: Redis, delivery: Delivery, config: Config) -> None:
    """Atomically store the job and queue its id. Raises redis.RedisError; nothing is half-written."""
    name = queue_name(config)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(f"rq:job:{delivery.id}", mapping=delivery_job_mapping(delivery, config))
    pipe.rpush(f"rq:queue:{name}", delivery.id)
    pipe.sadd("rq:queues", f"rq:queue:{name}")
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
