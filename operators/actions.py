"""Operator actions shared by the CLI (`hooklane dlq`, `hooklane stats`) and the admin HTTP API.

Both front ends parse the same filters, present an entry the same way (secrets
redacted) and replay or purge through the same loop, so the terminal and the
API can never disagree about what a filter matches or what a replay did.
Nothing here prints or answers HTTP: a client mistake raises `OperatorError`
(the CLI exits 2, the API answers 400), everything else returns plain data.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from hooklane.shared import counters, deadletters
from hooklane.shared.config import Config
from hooklane.shared.deadletters import Filters, ReplayConflict
from hooklane.shared.envelope import iso_utc
from hooklane.shared.redaction import MASK, Redactor

FILTER_FIELDS = ("source", "provider", "type", "handler", "stage", "error", "since", "until")
# Kinds counted per minute by the workers (shared.counters.bump), in display order.
# "retries": (event, handler) pairs whose first attempt failed and were handed to a retry job;
# "retry_attempts": every failed attempt that scheduled another one (what
# hooklane_worker_handler_attempts_total{outcome="retry"} counts, plus delivery-job retries).
STAT_KINDS = ("processed", "duplicates", "retries", "retry_attempts", "dead_lettered", "unrouted")
STAT_WINDOWS = (1, 5, 60)
# `stats` reads every dead letter to group them by handler; past this many it stops rather than
# pulling gigabytes out of Redis on every poll of a dashboard (the total stays exact).
DLQ_SCAN_LIMIT = 10_000

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class OperatorError(ValueError):
    """A client's request cannot be used; the message says why (CLI exit 2, HTTP 400)."""


# --------------------------------------------------------------------------- filters


def parse_time(value: Any, *, name: str = "time", now: float | None = None) -> float:
    """Unix seconds from ISO 8601 (naive = UTC), a relative age (`15m`, `2h`, `3d`, `1w`) or a number."""
    try:
        seconds = _seconds(value, name, now)
        # Numbers and ages can be anything (NaN, 1e400, 10**400, 99999999999w): keep to times a date can
        # show, which Redis also takes as a score and describe_filters can print.
        datetime.fromtimestamp(seconds, UTC)
    except OperatorError:
        raise
    except (OverflowError, ValueError, OSError):
        raise OperatorError(f"{name}: out of range, give a time between the years 1 and 9999") from None
    return seconds


def _seconds(value: Any, name: str, now: float | None) -> float:
    if isinstance(value, bool):
        raise OperatorError(f"{name}: must be ISO 8601 or a relative age like 15m, 2h, 3d")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise OperatorError(f"{name}: must be ISO 8601 or a relative age like 15m, 2h, 3d")
    text = value.strip()
    m = _RELATIVE.match(text)
    if m:
        ref = time.time() if now is None else now
        return ref - float(m.group(1)) * _UNITS[m.group(2).lower()]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise OperatorError(
            f"{name}: {value!r} is neither ISO 8601 (2025-03-14T15:00:00Z) nor a relative age (15m, 2h, 3d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_filters(values: Mapping[str, Any], *, now: float | None = None) -> Filters:
    """A `Filters` from user input; keys outside FILTER_FIELDS or None values are the caller's business."""
    kwargs: dict[str, Any] = {}
    for key in FILTER_FIELDS:
        value = values.get(key)
        if value is None:
            continue
        if key in ("since", "until"):
            kwargs[key] = parse_time(value, name=key, now=now)
            continue
        if not isinstance(value, str) or not value.strip():
            # An empty filter must not silently widen a bulk replay or purge to everything.
            raise OperatorError(f"{key}: must be a non-empty string")
        kwargs[key] = value.strip()
    stage = kwargs.get("stage")
    if stage is not None and stage not in deadletters.STAGES:
        raise OperatorError(f"stage: must be one of {', '.join(deadletters.STAGES)}, got {stage!r}")
    if kwargs.get("since") is not None and kwargs.get("until") is not None and kwargs["since"] > kwargs["until"]:
        raise OperatorError("since: is later than until")
    return Filters(**kwargs)


def has_filters(filters: Filters) -> bool:
    return any(getattr(filters, k) is not None for k in FILTER_FIELDS)


def describe_filters(filters: Filters) -> str:
    parts = []
    for key in FILTER_FIELDS:
        value = getattr(filters, key)
        if value is None:
            continue
        if key in ("since", "until"):
            value = iso_utc(datetime.fromtimestamp(value, UTC))
        parts.append(f"{key}={value}")
    return ", ".join(parts) or "none"


def filters_dict(filters: Filters) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in FILTER_FIELDS:
        value = getattr(filters, key)
        if value is not None:
            out[key] = iso_utc(datetime.fromtimestamp(value, UTC)) if key in ("since", "until") else value
    return out


# --------------------------------------------------------------------------- reading


def entry_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The list view of an entry: what an operator scans and filters by, without payloads."""
    error = entry.get("error") or {}
    return {
        "id": entry.get("id"),
        "died_at": entry.get("died_at"),
        "stage": entry.get("stage"),
        "source": entry.get("source"),
        "provider": entry.get("provider"),
        "event_id": entry.get("event_id"),
        "event_type": entry.get("event_type"),
        "handler": entry.get("handler"),
        "attempts": len(entry.get("attempts") or []),
        "replays": len(entry.get("replays") or []),
        "error": {"class": error.get("class"), "message": error.get("message"), "status": error.get("status")},
    }


@dataclass
class Listing:
    rows: list[dict[str, Any]]  # the newest `limit` matches, as entry_row()
    total: int  # every match
    summary: list[tuple[str, str, int]]  # deadletters.summarize over every match


def scan(redis: Redis, config: Config, filters: Filters, *, limit: int | None) -> Listing:
    """One pass over the matches: the newest `limit` rows, the total and the summary of all of them."""
    rows: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for entry in deadletters.iter_entries(redis, config, filters):
        if limit is None or len(rows) < limit:
            rows.append(entry_row(entry))
        # Only what summarize() groups by, so a large queue is not held in memory whole.
        keys.append({"handler": entry.get("handler"), "stage": entry.get("stage"),
                     "error": {"class": (entry.get("error") or {}).get("class")}})
    return Listing(rows=rows, total=len(keys), summary=deadletters.summarize(keys))


def matching_ids(redis: Redis, config: Config, filters: Filters, *, limit: int | None = None) -> list[str]:
    """Ids first, acted on after: replaying or purging while paging the index would skip entries."""
    ids: list[str] = []
    for entry in deadletters.iter_entries(redis, config, filters):
        ids.append(entry["id"])
        if limit is not None and len(ids) >= limit:
            break
    return ids


def redactor_for(config: Config) -> Redactor:
    """The config's secrets plus the admin token, which the config does not know about."""
    base = Redactor.from_config(config)
    admin = os.environ.get("HOOKLANE_ADMIN_TOKEN", "").strip()
    return Redactor([*base.values, admin]) if admin else base


def present_entry(entry: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """Everything an entry holds, for a human or a script: body decoded, every string redacted.

    The body is redacted as bytes before decoding, so a secret a provider echoed in
    its payload is masked whether the body is shown as text or as base64.
    """
    out = _redact_tree(entry, redactor)
    delivery = out.get("delivery")
    if isinstance(delivery, dict) and isinstance(delivery.get("body_b64"), str):
        raw_b64 = (entry.get("delivery") or {}).get("body_b64")
        try:
            body = base64.b64decode(raw_b64, validate=True)
        except (binascii.Error, ValueError):
            delivery["body_b64"] = None
            delivery["body_error"] = "body_b64 is not valid base64"
            return out
        delivery.pop("body_b64")
        delivery["body_bytes"] = len(body)
        body = _redact_bytes(body, redactor)
        try:
            delivery["body"] = body.decode("utf-8")
            delivery["body_encoding"] = "utf-8"
        except UnicodeDecodeError:
            delivery["body"] = base64.b64encode(body).decode("ascii")
            delivery["body_encoding"] = "base64"
    return out


def _redact_tree(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {redactor(k) if isinstance(k, str) else k: _redact_tree(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_tree(v, redactor) for v in value]
    return value


def _redact_bytes(body: bytes, redactor: Redactor) -> bytes:
    for secret in redactor.values:
        needle = secret.encode("utf-8")
        if needle in body:
            body = body.replace(needle, MASK.encode("ascii"))
    return body


# --------------------------------------------------------------------------- acting

REPLAYED, WOULD_REPLAY, PURGED, NOT_FOUND, CONFLICT = "replayed", "would_replay", "purged", "not_found", "conflict"


@dataclass
class BulkResult:
    action: str  # "replay" or "purge"
    dry_run: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r["status"] for r in self.results))

    @property
    def ok(self) -> bool:
        """False when some id was not found or lost to a concurrent operator (CLI exit 1)."""
        return all(r["status"] not in (NOT_FOUND, CONFLICT) for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "dry_run": self.dry_run, "matched": len(self.results),
                "counts": self.counts, "results": self.results}


Progress = Callable[[int, int], None]


def replay_many(redis: Redis, config: Config, ids: Iterable[str], *, dry_run: bool = False,
                progress: Progress | None = None) -> BulkResult:
    """Replay each id once through deadletters.replay; losing a race is reported, never fatal.

    A redis.RedisError propagates: the entries replayed so far have left the queue,
    so running the same command again replays exactly the rest.
    """
    ids = list(ids)
    result = BulkResult("replay", dry_run=dry_run)
    for done, entry_id in enumerate(ids, 1):
        result.results.append(replay_one(redis, config, entry_id, dry_run=dry_run))
        if progress is not None:
            progress(done, len(ids))
    return result


def replay_one(redis: Redis, config: Config, entry_id: str, *, dry_run: bool = False) -> dict[str, Any]:
    try:
        plan = deadletters.replay(redis, config, entry_id, dry_run=dry_run)
    except ReplayConflict as exc:
        # replay() says "not found" for a missing entry too; tell the two apart for the operator.
        exists = redis.exists(deadletters.entry_key(config.redis.prefix, entry_id))
        return {"id": entry_id, "status": CONFLICT if exists else NOT_FOUND, "reason": str(exc)}
    return {"id": entry_id, "status": WOULD_REPLAY if dry_run else REPLAYED, "job_id": None if dry_run else
            plan["job_id"], "stage": plan["stage"], "handler": plan["handler"], "event_id": plan["event_id"]}


def purge_many(redis: Redis, config: Config, ids: Iterable[str], *,
               progress: Progress | None = None) -> BulkResult:
    ids = list(ids)
    result = BulkResult("purge")
    for done, entry_id in enumerate(ids, 1):
        removed = deadletters.remove(redis, config, entry_id)
        result.results.append({"id": entry_id, "status": PURGED if removed else NOT_FOUND})
        if progress is not None:
            progress(done, len(ids))
    return result


# --------------------------------------------------------------------------- stats


def collect_stats(redis: Redis, config: Config, *, now: float | None = None,
                  dlq_scan_limit: int = DLQ_SCAN_LIMIT) -> dict[str, Any]:
    """Queue, retries, dead letters, recent throughput and workers; read-only (no RQ cleanup runs)."""
    from hooklane.shared.queue_metrics import read_queue_health  # late: rq, not needed to list or show
    from hooklane.shared.queueing import queue_name

    ref = time.time() if now is None else now
    name = queue_name(config)
    health = read_queue_health(redis, name, config.redis.prefix)
    oldest = health.oldest_enqueued_at

    by_handler: Counter[str] = Counter()
    complete = True
    for scanned, entry in enumerate(deadletters.iter_entries(redis, config)):
        if scanned >= dlq_scan_limit:
            complete = False
            break
        by_handler[entry.get("handler") or f"[{entry.get('stage')}]"] += 1

    prefix = config.redis.prefix
    events = {kind: {f"{m}m": counters.recent(redis, prefix, kind, m, now=ref) for m in STAT_WINDOWS}
              for kind in STAT_KINDS}

    return {
        "at": iso_utc(datetime.fromtimestamp(ref, UTC)),
        "queue": {
            "name": name,
            "waiting": health.waiting,
            "running": health.running,
            "scheduled_retries": health.scheduled,
            "oldest_waiting_enqueued_at": iso_utc(oldest) if oldest else None,
            "oldest_waiting_age_seconds": round(max(0.0, ref - oldest.timestamp()), 3) if oldest else None,
        },
        "dead_letters": {
            "total": health.dead_letters,
            "by_handler": dict(by_handler.most_common()),
            "by_handler_complete": complete,
        },
        "events": events,
        "workers": [{
            "name": w.name,
            "state": w.state,
            "hostname": w.hostname,
            "pid": w.pid,
            "last_heartbeat": iso_utc(w.last_heartbeat) if w.last_heartbeat else None,
            "heartbeat_age_seconds": round(max(0.0, ref - w.last_heartbeat.timestamp()), 3) if w.last_heartbeat
            else None,
        } for w in health.workers],
    }
