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
PROCESS_DELIVERY = "workers.jobs.process_delivery"
RUN_HANDLER = "workers.jobs.run_handler"
# RQ's retry schedule for a delivery job whose worker died or hit a Redis error.
DELIVERY_RETRY_INTERVALS = (5, 30, 120, 600)


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
        "result_ttl": "0",
        "failure_ttl": str(config.dead_letters.retention_days * 86400 or 365 * 86400),
        "retries_left": str(attempts - 1),
        "retry_intervals": "[" + ", ".join(str(i) for i in DELIVERY_RETRY_INTERVALS) + "]",
        "success_callback_name": "",
        "failure_callback_name": "",
        "stopped_callback_name": "",
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
        "group_id": "",
    }


def enqueue_delivery(redis: Redis, delivery: Delivery, config: Config) -> None:
    """Atomically store the job and queue its id. Raises redis.RedisError; nothing is half-written."""
    name = queue_name(config)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(f"rq:job:{delivery.id}", mapping=delivery_job_mapping(delivery, config))
    pipe.rpush(f"rq:queue:{name}", delivery.id)
    pipe.sadd("rq:queues", f"rq:queue:{name}")
    pipe.execute()
