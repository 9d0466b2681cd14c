"""The dead-letter queue: what could not be delivered, with everything needed to replay it.

Storage: one JSON document per entry at ``<prefix>:dlq:<id>`` and an index
sorted set ``<prefix>:dlq`` (score = died_at, unix seconds). With
``[dead_letters] retention_days > 0`` each document expires after that many days
(the index forgets expired ids lazily); with 0 entries stay until removed.

An entry (``stage`` tells what to replay):

    id          entry id (the RQ job id that died)
    stage       "normalize" (the body could not become an event: replay re-normalizes,
                so a code fix applies), "delivery" (the delivery job itself kept failing,
                e.g. Redis errors: replay re-runs it whole), or "handler" (one handler
                kept failing for one event: replay re-runs only that handler)
    died_at     ISO 8601 UTC
    source, provider, event_id, event_type, handler   (null where not known)
    error       {"class", "message", "status"} of the last attempt
    attempts    every attempt: {"at", "error_class", "message", "status", "duration_ms"}
    traceback   the final traceback (secrets redacted)
    event       the canonical event (handler stage), else null
    delivery    the delivery envelope (shared.envelope), body included
    replays     earlier replays of this pair: {"at", "job_id", "entry_id"}

Replay is safe to run twice at once: the entry is taken with WATCH/MULTI in the
same transaction that enqueues its job, so exactly one operator's replay wins
and the entry leaves the queue only when its job is safely in Redis.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis, WatchError

from hooklane.shared.config import Config
from hooklane.shared.envelope import utc_now_iso

STAGES = ("normalize", "delivery", "handler")


def index_key(prefix: str) -> str:
    return f"{prefix}:dlq"


def entry_key(prefix: str, entry_id: str) -> str:
    return f"{prefix}:dlq:{entry_id}"


def add(redis: Redis, config: Config, entry: dict[str, Any], *, pipeline: Any = None) -> None:
    prefix = config.redis.prefix
    died = _epoch(entry["died_at"])
    ttl = config.dead_letters.retention_days * 86400 or None
    pipe = pipeline if pipeline is not None else redis.pipeline(transaction=True)
    pipe.set(entry_key(prefix, entry["id"]), json.dumps(entry, separators=(",", ":")), ex=ttl)
    pipe.zadd(index_key(prefix), {entry["id"]: died})
    if pipeline is None:
        pipe.execute()


def get(redis: Redis, config: Config, entry_id: str) -> dict[str, Any] | None:
    raw = redis.get(entry_key(config.redis.prefix, entry_id))
    return json.loads(raw) if raw is not None else None


def remove(redis: Redis, config: Config, entry_id: str) -> bool:
    prefix = config.redis.prefix
    pipe = redis.pipeline(transaction=True)
    pipe.delete(entry_key(prefix, entry_id))
    pipe.zrem(index_key(prefix), entry_id)
    deleted, _ = pipe.execute()
    return bool(deleted)


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
            entry = json.loads(raw)
            if entry["stage"] == "handler" and entry.get("handler") not in config.handlers:
                raise ReplayConflict(f"handler {entry.get('handler')!r} is no longer configured")
            job_id = uuid.uuid4().hex
            plan = {"entry_id": entry_id, "job_id": job_id, "stage": entry["stage"], "handler": entry.get("handler"),
                    "event_id": entry.get("event_id")}
            if dry_run:
                pipe.unwatch()
                return plan
            history = list(entry.get("replays") or []) + [
                {"at": utc_now_iso(), "job_id": job_id, "entry_id": entry_id}
            ]
            pipe.multi()
            if entry["stage"] == "handler":
                handler = config.handlers[entry["handler"]]
                jobs.enqueue_handler_job(
                    redis, pipe, config,
                    task={"event": entry["event"], "handler": entry["handler"], "delivery": entry["delivery"]},
                    prior_attempts=entry.get("attempts") or [],
                    retries=handler.max_attempts - 1,
                    delay=None,
                    job_id=job_id,
                    replays=history,
                )
            else:
                jobs.enqueue_delivery_replay(redis, pipe, config, entry["delivery"], job_id=job_id,
                                             prior_attempts=entry.get("attempts") or [], replays=history)
            pipe.delete(key)
            pipe.zrem(index_key(prefix), entry_id)
            pipe.execute()
        except WatchError:
            raise ReplayConflict(f"dead letter {entry_id} changed while replaying (replayed by someone else?)") \
                from None
    return plan


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def now_epoch() -> float:
    return time.time()
