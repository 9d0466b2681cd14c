"""Typed records for what workers store about failures: attempts, handler tasks, replays, dead letters.

Only these classes build them: workers store them (RQ job args and meta, the dead-letter
queue) and read them back (a handler job's task, a failed job's attempts, a replayed
entry). Each record has one `to_dict` and one `from_dict`, and the dicts are the stored
JSON format and the interface of `hooklane dlq show --json` and the admin API, which
show the stored dict as it is: the keys and their meaning do not change with the classes
(tests/test_records.py holds entries in the stored format). `from_dict` refuses anything
else with a `RecordError` naming the record and the key, rather than a KeyError later.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hooklane.shared.envelope import utc_now_iso

STAGES = ("normalize", "delivery", "handler")
# Stored text is capped: a huge exception message or traceback must not make a dead letter unstorable.
MESSAGE_LIMIT = 2000
TRACEBACK_LIMIT = 20000

_NONE = type(None)
_NUMBER = (int, float)
_JSON = (dict, list, str, int, float, bool, _NONE)


class RecordError(ValueError):
    """A stored record is not in the format hooklane writes; the message names the record and the key."""


def _checked(data: Any, kind: str, types: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """`data` if it is a dict with exactly these keys, each of one of its types (bool only where named)."""
    if not isinstance(data, dict):
        raise RecordError(f"{kind}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in types if k not in data]
    unknown = [k for k in data if k not in types]
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(map(str, unknown))}"] if unknown else [])
        raise RecordError(f"{kind}: {'; '.join(parts)}")
    for key, allowed in types.items():
        value = data[key]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is _NONE else t.__name__ for t in allowed)
            raise RecordError(f"{kind}.{key}: expected {names}, got {type(value).__name__} {value!r:.80}")
    return data


def _list_of(data: list[Any], kind: str, read: Callable[[Any, str], Any]) -> tuple[Any, ...]:
    return tuple(read(item, f"{kind}[{i}]") for i, item in enumerate(data))


@dataclass(frozen=True)
class Attempt:
    """One failed try of a stage or a handler (a success leaves no record)."""

    at: str  # when it failed, ISO 8601 UTC
    error_class: str  # the exception's class name, e.g. "TransientError"
    message: str  # str(exception), secrets redacted, at most MESSAGE_LIMIT characters
    status: int | None  # the downstream HTTP status the handler error carried, if any
    duration_ms: float | None  # how long the try ran, when its start is known

    @classmethod
    def of_failure(cls, exc: BaseException, started: float | datetime | None, redact: Callable[[str], str]) -> Attempt:
        """The attempt `exc` ended; `started` is a time.monotonic() reading or RQ's started_at."""
        if isinstance(started, datetime):
            ref = started if started.tzinfo else started.replace(tzinfo=UTC)
            duration = (datetime.now(UTC) - ref).total_seconds() * 1000
        elif isinstance(started, float):
            duration = (time.monotonic() - started) * 1000
        else:
            duration = None
        status = getattr(exc, "status", None)
        return cls(
            at=utc_now_iso(),
            error_class=type(exc).__name__,
            message=redact(str(exc))[:MESSAGE_LIMIT],
            # A user's exception may carry any `status`; only an int is an HTTP status (and stores as JSON).
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            duration_ms=round(duration, 3) if duration is not None else None,
        )

    @property
    def seconds(self) -> float | None:
        return self.duration_ms / 1000 if self.duration_ms is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "error_class": self.error_class, "message": self.message, "status": self.status,
                "duration_ms": self.duration_ms}

    @classmethod
    def from_dict(cls, data: Any, kind: str = "attempt") -> Attempt:
        d = _checked(data, kind, {"at": (str,), "error_class": (str,), "message": (str,), "status": (int, _NONE),
                                  "duration_ms": (*_NUMBER, _NONE)})
        return cls(**d)


@dataclass(frozen=True)
class Replay:
    """One replay of a dead letter: a new job took the entry's place."""

    at: str  # when, ISO 8601 UTC
    job_id: str  # the RQ job that re-ran the failed stage
    entry_id: str  # the dead letter it replayed

    @classmethod
    def now(cls, job_id: str, entry_id: str) -> Replay:
        return cls(at=utc_now_iso(), job_id=job_id, entry_id=entry_id)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "job_id": self.job_id, "entry_id": self.entry_id}

    @classmethod
    def from_dict(cls, data: Any, kind: str = "replay") -> Replay:
        return cls(**_checked(data, kind, {"at": (str,), "job_id": (str,), "entry_id": (str,)}))


@dataclass(frozen=True)
class HandlerTask:
    """The argument of a `run_handler` job: one handler to run for one event."""

    event: dict[str, Any]  # the canonical event (shared.events.Event.to_dict)
    handler: str  # the handler's name in the config
    delivery: dict[str, Any] | None  # the delivery envelope (shared.envelope) the event came from

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "handler": self.handler, "delivery": self.delivery}

    @classmethod
    def from_dict(cls, data: Any, kind: str = "handler task") -> HandlerTask:
        d = _checked(data, kind, {"event": (dict,), "handler": (str,), "delivery": (dict, _NONE)})
        if not isinstance(d["event"].get("id"), str):
            raise RecordError(f"{kind}.event.id: expected str, got {d['event'].get('id')!r:.80}")
        return cls(**d)


@dataclass(frozen=True)
class ErrorSummary:
    """The last attempt's error, as a dead letter shows it (stored as {"class", "message", "status"})."""

    error_class: str  # stored as "class"
    message: str
    status: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.error_class, "message": self.message, "status": self.status}

    @classmethod
    def from_dict(cls, data: Any, kind: str = "error") -> ErrorSummary:
        d = _checked(data, kind, {"class": (str,), "message": (str,), "status": (int, _NONE)})
        return cls(error_class=d["class"], message=d["message"], status=d["status"])


@dataclass(frozen=True)
class DeadLetter:
    """What could not be delivered, with everything needed to replay it (shared/deadletters.py stores it)."""

    id: str  # entry id: the RQ job id that died, or "<job id>-<handler>" for a first, inline attempt
    # "normalize" (the body could not become an event: replay re-normalizes, so a code fix applies),
    # "delivery" (the delivery job itself kept failing, e.g. Redis errors: replay re-runs it whole), or
    # "handler" (one handler kept failing for one event: replay re-runs only that handler)
    stage: str
    died_at: str  # ISO 8601 UTC; the index's score
    source: str | None  # the configured source (from the event, else the delivery); null where not known
    provider: str | None  # the provider module that parses that source
    event_id: str | None  # canonical event id (handler stage)
    event_type: str | None  # canonical event type (handler stage)
    handler: str | None  # the handler that failed (handler stage)
    error: ErrorSummary  # the last attempt's error
    attempts: tuple[Attempt, ...]  # every attempt, oldest first
    traceback: str  # the final traceback, secrets redacted, its last TRACEBACK_LIMIT characters
    event: dict[str, Any] | None  # the canonical event (handler stage), else null
    delivery: Any  # the delivery envelope, body included; whatever the job carried when it was not one
    replays: tuple[Replay, ...] = field(default=())  # earlier replays of this pair, oldest first

    @classmethod
    def of_failure(cls, *, entry_id: str, stage: str, exc: BaseException, tb: Any, attempts: list[Attempt],
                   event: dict[str, Any] | None, delivery: Any, handler: str | None, replays: list[Replay],
                   redact: Callable[[str], str]) -> DeadLetter:
        """The entry for a stage that failed for the last time with `exc` (`attempts` may lack that one)."""
        last = attempts[-1] if attempts else Attempt.of_failure(exc, None, redact)
        known = delivery if isinstance(delivery, dict) else {}
        return cls(
            id=entry_id,
            stage=stage,
            died_at=utc_now_iso(),
            source=(event or {}).get("source") or known.get("source"),
            provider=(event or {}).get("provider") or known.get("provider"),
            event_id=(event or {}).get("id"),
            event_type=(event or {}).get("type"),
            handler=handler,
            error=ErrorSummary(last.error_class, last.message, last.status),
            attempts=tuple(attempts),
            traceback=redact("".join(traceback.format_exception(type(exc), exc, tb)))[-TRACEBACK_LIMIT:],
            event=event,
            delivery=delivery,
            replays=tuple(replays),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "died_at": self.died_at,
            "source": self.source,
            "provider": self.provider,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "handler": self.handler,
            "error": self.error.to_dict(),
            "attempts": [a.to_dict() for a in self.attempts],
            "traceback": self.traceback,
            "event": self.event,
            "delivery": self.delivery,
            "replays": [r.to_dict() for r in self.replays],
        }

    @classmethod
    def from_dict(cls, data: Any, kind: str = "dead letter") -> DeadLetter:
        text = (str, _NONE)
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            kind = f"{kind} {data['id']}"
        d = _checked(data, kind, {
            "id": (str,), "stage": (str,), "died_at": (str,), "source": text, "provider": text, "event_id": text,
            "event_type": text, "handler": text, "error": (dict,), "attempts": (list,), "traceback": (str,),
            "event": (dict, _NONE), "delivery": _JSON, "replays": (list,),
        })
        if d["stage"] not in STAGES:
            raise RecordError(f"{kind}.stage: expected one of {', '.join(STAGES)}, got {d['stage']!r:.80}")
        return cls(**{
            **d,
            "error": ErrorSummary.from_dict(d["error"], f"{kind}.error"),
            "attempts": _list_of(d["attempts"], f"{kind}.attempts", Attempt.from_dict),
            "replays": _list_of(d["replays"], f"{kind}.replays", Replay.from_dict),
        })
