"""The dead-letter queue: what could not be delivered, with everything needed to replay it.

Storage: one JSON document per entry at ``<prefix>:dlq:<id>`` and an index
sorted set ``<prefix>:dlq`` (score = died_at, unix seconds). With
``[dead_letters] retention_days > 0`` each document expires after that many days
(the index forgets expired ids lazily); with 0 entries stay until removed.

An entry is a `shared.records.DeadLetter` (each field documented there; ``stage`` tells
what to replay), stored as its ``to_dict()``. Listing and showing read that stored dict
as it is, so even an entry no version wrote can be seen and purged; replay reads it
back as a record and refuses a malformed one with the reason.

Replay is safe to run twice at once: the entry is taken with WATCH/MULTI in the
same transaction that enqueues its job, so exactly one operator's replay wins
and the entry leaves the queue only when its job is safely in Redis.

One truth with RQ's own tools. An entry written by the worker's exception handler
has the id of the RQ job that died, and RQ keeps that job in its FailedJobRegistry
(`rq info`, rq-dashboard). Replaying or purging the entry deletes that job too, in
the same transaction. A job RQ's tools requeue anyway (before the replay, or in a
race with it) carries `meta["dead_letter"]`, and its run first `take`s the entry:
if the entry is still there, the requeue is the replay (and `hooklane dlq replay`
then finds nothing); if it is gone, the event was replayed or purged already and
the run does nothing. Either way an event leaves the dead-letter queue once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from redis import Redis, WatchError

from hooklane.shared.config import Config
from hooklane.shared.envelope import parse_utc
from hooklane.shared.records import STAGES as STAGES  # re-exported: the operators' filters offer them
from hooklane.shared.records import DeadLetter, HandlerTask, RecordError, Replay


def index_key(prefix: str) -> str:
    return f"{prefix}:dlq"


def entry_key(prefix: str, entry_id: str) -> str:
    return f"{prefix}:dlq:{entry_id}"


def add(redis: Redis, config: Config, entry: DeadLetter, *, pipeline: Any = None) -> None:
    prefix = config.redis.prefix
    died = parse_utc(entry.died_at)
    if died is None:  # written by utc_now_iso: unreadable is a bug, not an entry to index at time 0
        raise ValueError(f"dead letter {entry.id} has no readable died_at: {entry.died_at!r}")
    ttl = config.dead_letters.retention_days * 86400 or None
    pipe = pipeline if pipeline is not None else redis.pipeline(transaction=True)
    pipe.set(entry_key(prefix, entry.id), json.dumps(entry.to_dict(), separators=(",", ":")), ex=ttl)
    pipe.zadd(index_key(prefix), {entry.id: died.timestamp()})
    if pipeline is None:
        pipe.execute()


def get(redis: Redis, config: Config, entry_id: str) -> dict[str, Any] | None:
    raw = redis.get(entry_key(config.redis.prefix, entry_id))
    return json.loads(raw) if raw is not None else None


def remove(redis: Redis, config: Config, entry_id: str) -> bool:
    """Purge: the entry and RQ's failed copy of its job, at once; False if the entry was not there."""
    failed = _failed_rq_job(redis, config, entry_id)
    pipe = redis.pipeline(transaction=True)
    _drop(pipe, config.redis.prefix, entry_id, failed)
    return bool(pipe.execute()[0])


def take(redis: Redis, config: Config, entry_id: str) -> bool:
    """Remove the entry for the job that is about to re-run it; True if it was still there to take.

    The job RQ's tools requeued calls this: whoever removes the entry owns its one replay.
    """
    pipe = redis.pipeline(transaction=True)
    _drop(pipe, config.redis.prefix, entry_id, None)
    return bool(pipe.execute()[0])


def _drop(pipe: Any, prefix: str, entry_id: str, failed_job: Any) -> None:
    pipe.delete(entry_key(prefix, entry_id))  # first: its reply says whether the entry was there
    pipe.zrem(index_key(prefix), entry_id)
    if failed_job is not None:
        failed_job.delete(pipeline=pipe)  # out of the FailedJobRegistry, its hash and results gone


def _failed_rq_job(redis: Redis, config: Config, entry_id: str) -> Any:
    """The RQ job an entry came from, while RQ holds it as failed; else None.

    A job RQ's tools requeued is left alone: it is queued or running, and its
    run finds the entry gone and does nothing (see `take`).
    """
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    from hooklane.shared.queueing import SERIALIZER

    try:
        job = Job.fetch(entry_id, connection=redis, serializer=SERIALIZER)
    except (NoSuchJobError, ValueError):  # ValueError: not an RQ job id (an inline handler's entry)
        return None
    return job if job.get_status(refresh=False) in (JobStatus.FAILED, JobStatus.STOPPED) else None


def count(redis: Redis, config: Config) -> int:
    return int(redis.zcard(index_key(config.redis.prefix)))


@dataclass(frozen=True)
class Filters:
    source: str | None = None
    provider: str | None = None
    type: str | None = None  # canonical event type; a trailing ".*" matches a family
    handler: str | None = None
    stage: str | None = None
    error: str | None = None  # substring of the last error's class or message
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None

    def match(self, e: dict[str, Any]) -> bool:
        if self.source and e.get("source") != self.source:
            return False
        if self.provider and e.get("provider") != self.provider:
            return False
        if self.type and self.type != "*":
            et = e.get("event_type") or ""
            if not (et == self.type or (self.type.endswith(".*") and et.startswith(self.type[:-1]))):
                return False
        if self.handler and e.get("handler") != self.handler:
            return False
        if self.stage and e.get("stage") != self.stage:
            return False
        if self.error:
            err = e.get("error") or {}
            text = f"{err.get('class', '')} {err.get('message', '')}".lower()
            if self.error.lower() not in text:
                return False
        return True


def iter_entries(redis: Redis, config: Config, filters: Filters = Filters(), *, batch: int = 200) -> Iterator[dict]:
    """Matching entries, newest first. Ids whose document expired are dropped from the index."""
    prefix = config.redis.prefix
    hi = "+inf" if filters.until is None else filters.until
    lo = "-inf" if filters.since is None else filters.since
    offset = 0
    while True:
        ids = redis.zrevrangebyscore(index_key(prefix), hi, lo, start=offset, num=batch)
        if not ids:
            return
        offset += len(ids)
        ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
        docs = redis.mget([entry_key(prefix, i) for i in ids])
        gone = []
        for entry_id, raw in zip(ids, docs, strict=True):
            if raw is None:
                gone.append(entry_id)
                continue
            entry = json.loads(raw)
            if filters.match(entry):
                yield entry
        if gone:
            redis.zrem(index_key(prefix), *gone)
            offset -= len(gone)


def list_entries(redis: Redis, config: Config, filters: Filters = Filters(), *, limit: int | None = 50,
                 offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for i, entry in enumerate(iter_entries(redis, config, filters)):
        if i < offset:
            continue
        out.append(entry)
        if limit is not None and len(out) >= limit:
            break
    return out


def summarize(entries: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(handler or stage, error class, count), largest groups first."""
    counts = Counter(
        (e.get("handler") or f"[{e.get('stage')}]", (e.get("error") or {}).get("class") or "?") for e in entries
    )
    return [(h, err, n) for (h, err), n in counts.most_common()]


# --------------------------------------------------------------------------- replay


class ReplayConflict(Exception):
    """The entry is gone or changed: someone else replayed or purged it first."""


def replay(redis: Redis, config: Config, entry_id: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Put the failed stage back to work with a fresh attempt budget; returns {"entry_id", "job_id", ...}."""
    from hooklane.shared import queueing as jobs  # late: jobs imports rq, not needed to list or show

    prefix = config.redis.prefix
    key = entry_key(prefix, entry_id)
    with redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            raw = pipe.get(key)
            if raw is None:
                raise ReplayConflict(f"dead letter {entry_id} not found (already replayed or purged)")
            entry = _replayable(json.loads(raw))
            if entry.stage == "handler" and entry.handler not in config.handlers:
                raise ReplayConflict(f"handler {entry.handler!r} is no longer configured")
            failed = None if dry_run else _failed_rq_job(redis, config, entry_id)
            job_id = uuid.uuid4().hex
            plan = {"entry_id": entry_id, "job_id": job_id, "stage": entry.stage, "handler": entry.handler,
                    "event_id": entry.event_id}
            if dry_run:
                pipe.unwatch()
                return plan
            history = [*entry.replays, Replay.now(job_id, entry_id)]
            pipe.multi()
            if entry.stage == "handler":
                handler = config.handlers[entry.handler]
                jobs.enqueue_handler_job(
                    redis, pipe, config,
                    task=HandlerTask(event=entry.event, handler=entry.handler, delivery=entry.delivery),
                    prior_attempts=list(entry.attempts),
                    retries=handler.max_attempts - 1,
                    delay=None,
                    job_id=job_id,
                    replays=history,
                )
            else:
                jobs.enqueue_delivery_replay(redis, pipe, config, entry.delivery, job_id=job_id,
                                             prior_attempts=list(entry.attempts), replays=history)
            _drop(pipe, prefix, entry_id, failed)
            pipe.execute()
        except WatchError:
            raise ReplayConflict(f"dead letter {entry_id} changed while replaying (replayed by someone else?)") \
                from None
    return plan


def _replayable(stored: Any) -> DeadLetter:
    """The stored entry as a record; a malformed one is refused with the reason, never half-replayed."""
    try:
        entry = DeadLetter.from_dict(stored)
    except RecordError as exc:
        raise ReplayConflict(f"cannot replay a malformed entry: {exc}") from None
    if entry.stage == "handler" and (entry.event is None or not isinstance(entry.delivery, (dict, type(None)))):
        raise ReplayConflict(f"cannot replay dead letter {entry.id}: a handler entry needs its event")
    if entry.stage != "handler" and not isinstance(entry.delivery, dict):
        raise ReplayConflict(f"cannot replay dead letter {entry.id}: it holds no delivery envelope to re-run")
    return entry


def now_epoch() -> float:
    return time.time()
