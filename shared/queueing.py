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
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError
from rq.job import Job
from rq.serializers import JSONSerializer

from hooklane.shared.config import Config
from hooklane.shared.envelope import Delivery
from hooklane.shared.records import Attempt, HandlerTask, Replay

SERIALIZER = JSONSerializer
# Seconds a finished job's hash is kept. Not 0: with 0, RQ 3.0 deletes the job on success and
# re-reads every execution it ever had; after a worker was SIGKILLed that execution's hash has
# expired, Execution.fetch raises, and a successful re-run is recorded as a failure
# (tests/test_worker_processes.py). With >0 RQ only sets an EXPIRE: its common, tested path.
RESULT_TTL = 1
PROCESS_DELIVERY = "hooklane.workers.jobs.process_delivery"
RUN_HANDLER = "hooklane.workers.jobs.run_handler"
# The names jobs written before the hooklane.* namespace carry in their hashes (queued deliveries,
# scheduled retries, failed jobs): read as today's names, so an upgrade with a non-empty queue loses nothing.
LEGACY_FUNC_NAMES = {
    "workers.jobs.process_delivery": PROCESS_DELIVERY,
    "workers.jobs.run_handler": RUN_HANDLER,
}


def queue_name(config: Config) -> str:
    return config.redis.prefix


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
        str(_failure_ttl(config)),
        str(config.worker.delivery_max_attempts - 1),
        _intervals_json(config),
    )


_JOB_DATA_SUFFIX = "],{}]"


def _job_data_prefix() -> str:
    return f'["{PROCESS_DELIVERY}",null,['


def _job_data(delivery_json: str) -> str:
    # JSONSerializer's dumps of (func_name, instance, args, kwargs), built without re-encoding the body.
    return _job_data_prefix() + delivery_json + _JOB_DATA_SUFFIX


def _description(delivery: Delivery) -> str:
    return f"process_delivery({delivery.source}, {delivery.id})"


def delivery_job_mapping(delivery: Delivery, config: Config, *, delivery_json: str | None = None) -> dict[str, str]:
    """The RQ job hash for `process_delivery(delivery)`: exactly what `enqueue_delivery` writes."""
    stamp = delivery.received_at  # already RQ's timestamp format
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


def _lua_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


class DeliveryEnqueuer:
    """Writes `process_delivery` jobs for one config, atomically, in one command per request.

    The job hash, the queue entry and the queue's registration happen in one server-side
    script, atomic like MULTI/EXEC (Redis refuses a writing script over maxmemory before its
    first write, so it is all or nothing too). Everything constant for the config (queue,
    timeouts, TTLs, retry budget, RQ's empty fields) is written into the script itself when
    it is built, so a request sends only its id, timestamp, source and envelope: one command
    about the size of a bare LPUSH of the body (docs/benchmarks.md has the figures).
    KEYS: job hash, queue list, rq:queues. ARGV: id, timestamp, source, envelope JSON.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue_key = f"rq:queue:{queue_name(config)}"
        constants = {**dict(zip(_CONFIG_FIELDS, _config_values(config), strict=True)),
                     **dict.fromkeys(_UNSET_FIELDS, "")}
        fields = ", ".join(f"{_lua_string(k)}, {_lua_string(v)}" for k, v in constants.items())
        self.script = (
            # A job that exists already was written by this very call's first try (ids are uuid4): see _evalsha.
            "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
            "redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', ARGV[2], 'enqueued_at', ARGV[2],"
            f" 'data', {_lua_string(_job_data_prefix())} .. ARGV[4] .. {_lua_string(_JOB_DATA_SUFFIX)},"
            " 'description', 'process_delivery(' .. ARGV[3] .. ', ' .. ARGV[1] .. ')', "
            f"{fields})\n"
            "redis.call('RPUSH', KEYS[2], ARGV[1])\n"
            "redis.call('SADD', KEYS[3], KEYS[2])\n"
            "return 1\n"
        )
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()
        self._sha_bytes = self.sha.encode()
        # Clients whose server runs no scripts (EVAL renamed away, an ACL without @scripting, fakeredis
        # without lupa): they get the MULTI/EXEC transaction, equally atomic, after one failed try.
        self._scriptless: weakref.WeakSet[Redis] = weakref.WeakSet()

    def __call__(self, redis: Redis, delivery: Delivery) -> None:
        """Store the job and queue its id. Raises redis.RedisError; nothing is half-written."""
        job_key = f"rq:job:{delivery.id}"
        delivery_json = delivery.to_json()
        if redis not in self._scriptless:
            # received_at is already in RQ's timestamp format (ISO 8601, microseconds, Z): no second clock read.
            args = (job_key, self.queue_key, "rq:queues", delivery.id, delivery.received_at, delivery.source,
                    delivery_json)
            try:
                try:
                    self._evalsha(redis, args)
                except NoScriptError:
                    # First call since Redis started (or SCRIPT FLUSH): EVAL runs it and caches it for EVALSHA.
                    redis.eval(self.script, 3, *args)
                return
            except ResponseError as exc:
                if not (isinstance(exc, NoPermissionError) or str(exc).lower().startswith("unknown command")):
                    raise
                self._scriptless.add(redis)
        pipe = redis.pipeline(transaction=True)
        pipe.hset(job_key, mapping=delivery_job_mapping(delivery, self.config, delivery_json=delivery_json))
        pipe.rpush(self.queue_key, delivery.id)
        pipe.sadd("rq:queues", self.queue_key)
        pipe.execute()


    def _evalsha(self, redis: Redis, args: tuple[str, ...]) -> None:
        conn = getattr(redis, "connection", None)  # set on single-connection clients (ingest's)
        if conn is None:
            redis.evalsha(self.sha, 3, *args)
            return
        # The one hot-path command, packed here and sent on redis-py's own connection (which keeps
        # its connect, auth, TLS and reconnect handling): redis-py 8 wraps every client call in
        # retry and observability bookkeeping that cost more CPU than the command itself (95 µs vs
        # 55 µs, docs/benchmarks.md).
        parts = [b"EVALSHA", self._sha_bytes, b"3", *(a.encode() for a in args)]
        packed = b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)])
        with redis.single_connection_lock:
            try:
                conn.send_packed_command([packed], check_health=False)
                conn.read_response()  # raises the server's error (NoScriptError, OOM, READONLY) as redis-py would
            except RedisConnectionError:
                # Redis or a proxy closed the connection while it sat idle (server `timeout`, a balancer's idle
                # limit, CLIENT KILL), and only this command found out. Once more on a new connection (redis-py
                # dropped this one): a real outage fails again at once, and if the first try was applied after
                # all, the script's EXISTS guard makes the second a no-op. Not on TimeoutError: that is a slow
                # or unreachable Redis, and a second wait would double the time a worker is held.
                conn.send_packed_command([packed], check_health=False)
                conn.read_response()


def enqueue_delivery(redis: Redis, delivery: Delivery, config: Config) -> None:
    """One-off form of `DeliveryEnqueuer` (tests, benchmarks); ingest builds its enqueuer once."""
    DeliveryEnqueuer(config)(redis, delivery)


# --------------------------------------------------------------------------- off the hot path
# Handler retries and replays are rare, so they use RQ's own API.


class HooklaneJob(Job):
    """RQ's Job, reading the function names of jobs written by an earlier layout as today's."""

    def _deserialize_data(self) -> None:
        super()._deserialize_data()
        self._func_name = LEGACY_FUNC_NAMES.get(self._func_name, self._func_name)  # type: ignore[arg-type]


def rq_queue(redis: Redis, config: Config):  # -> rq.Queue
    from rq import Queue

    return Queue(queue_name(config), connection=redis, serializer=SERIALIZER, job_class=HooklaneJob,
                 default_timeout=config.worker.job_timeout_seconds)


def _failure_ttl(config: Config) -> int:
    # RQ's own copy of a failed job lives as long as our dead letter (a year when ours never expire).
    return config.dead_letters.retention_days * 86400 or 365 * 86400


def _create_job(redis: Redis, config: Config, func: str, arg: dict, *, job_id: str | None, description: str,
                prior_attempts: list[Attempt], replays: list[Replay] | None, retry: Any):
    return HooklaneJob.create(
        func,
        args=[arg],
        connection=redis,
        serializer=SERIALIZER,
        id=job_id,
        timeout=config.worker.job_timeout_seconds,
        result_ttl=RESULT_TTL,
        failure_ttl=_failure_ttl(config),
        description=description,
        # The attempt history travels in the job, so the dead letter it may become keeps all of it.
        meta={"attempts": [a.to_dict() for a in prior_attempts], "replays": [r.to_dict() for r in replays or []]},
        retry=retry,
        origin=queue_name(config),
    )


def enqueue_handler_job(
    redis: Redis,
    pipeline: Any,
    config: Config,
    *,
    task: HandlerTask,
    prior_attempts: list[Attempt],
    retries: int,
    delay: float | None,
    job_id: str | None = None,
    replays: list[Replay] | None = None,
    intervals: list[float] | None = None,
):
    """A `run_handler(task.to_dict())` job with `retries` RQ retries left, queued now or after `delay` seconds."""
    from datetime import timedelta

    from rq import Retry

    from hooklane.shared.backoff import delays

    retry = None
    if retries > 0:
        retry = Retry(max=retries, interval=intervals if intervals is not None else delays(config.worker, retries))
    job = _create_job(redis, config, RUN_HANDLER, task.to_dict(), job_id=job_id,
                      description=f"run_handler({task.handler}, {task.event['id']})",
                      prior_attempts=prior_attempts, replays=replays, retry=retry)
    queue = rq_queue(redis, config)
    if delay:
        queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay), pipeline=pipeline)
    else:
        queue.enqueue_job(job, pipeline=pipeline)
    return job


def enqueue_delivery_replay(
    redis: Redis,
    pipeline: Any,
    config: Config,
    envelope: dict,
    *,
    job_id: str,
    prior_attempts: list[Attempt],
    replays: list[Replay],
):
    """Re-run a dead-lettered delivery (stage normalize/delivery) with a fresh attempt budget."""
    from rq import Retry

    attempts = config.worker.delivery_max_attempts
    retry = Retry(max=attempts - 1, interval=list(config.worker.delivery_retry_intervals)) if attempts > 1 else None
    job = _create_job(redis, config, PROCESS_DELIVERY, envelope, job_id=job_id,
                      description=f"process_delivery({envelope.get('source')}, {envelope.get('id')}) replay",
                      prior_attempts=prior_attempts, replays=replays, retry=retry)
    rq_queue(redis, config).enqueue_job(job, pipeline=pipeline)
    return job
