"""The canonical call event every handler receives, whatever provider sent it.

Plain data with exactly one serialisation (`to_json`), so an event stored in a
dead letter replays byte-for-byte as it was first delivered. Fields may be
added; none may be renamed (PRODUCT.md, "Canonical event").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

CANONICAL_TYPES = (
    "call.started",
    "call.ringing",
    "call.answered",
    "call.completed",  # ended after connecting
    "call.failed",  # ended without connecting, or the provider says failed
    "call.updated",
    "recording.ready",
    "transcript.ready",
    "message.received",
    "message.updated",
    "campaign.started",
    "campaign.finished",
    "campaign.paused",
)


@dataclass
class Call:
    """What the event says about the call; None wherever the provider does not say."""

    id: str | None = None  # the provider's call id, as a string
    direction: str | None = None  # "inbound" | "outbound" | None
    phone: str | None = None  # the remote party's number, exactly as the provider sent it
    status: str | None = None  # the provider's own call status, unchanged
    outcome: str | None = None  # business outcome the provider reports (e.g. "DNC", "INTERESTED")
    duration_seconds: float | None = None
    started_at: str | None = None  # ISO 8601 UTC
    ended_at: str | None = None  # ISO 8601 UTC
    recording_url: str | None = None
    transcript: str | None = None
    summary: str | None = None
    extraction: dict[str, Any] = field(default_factory=dict)  # structured data the AI extracted
    metadata: dict[str, Any] = field(default_factory=dict)  # caller-supplied metadata echoed back


@dataclass
class Event:
    id: str  # "<source>:<identity>", the dedupe key and the downstream idempotency key
    source: str  # configured source name
    provider: str  # provider module name, e.g. "volumereach"
    type: str  # canonical type, or "<provider>.<provider_type>" when there is no canonical meaning
    provider_type: str  # the provider's own event name, unchanged
    occurred_at: str  # ISO 8601 UTC from the payload, else received_at
    received_at: str  # ISO 8601 UTC, when ingest accepted the delivery
    delivery_id: str | None  # the provider's delivery id, or None
    call: Call
    raw: Any  # the provider's payload as parsed JSON

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: that deep-copies `raw` (the whole payload) on every event, the
        # costliest step of a worker's happy path when profiled. Handlers receive this dict and
        # must treat it as read-only; the python handler gets its own copy.
        out = {name: getattr(self, name) for name in _EVENT_FIELDS}
        out["call"] = {name: getattr(self.call, name) for name in _CALL_FIELDS}
        return out

    def to_json(self) -> str:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        call_fields = {f.name for f in fields(Call)}
        call = Call(**{k: v for k, v in (d.get("call") or {}).items() if k in call_fields})
        own = {f.name for f in fields(cls)} - {"call"}
        return cls(call=call, **{k: d.get(k) for k in own})


_CALL_FIELDS = tuple(f.name for f in fields(Call))
_EVENT_FIELDS = tuple(f.name for f in fields(Event))


def dumps(obj: Any) -> str:
    """The one JSON form hooklane stores and sends (stable key order, UTF-8, compact).

    Raises ValueError for NaN or ±Infinity rather than write them: they are not JSON,
    and a receiver's parser would refuse the whole event (normalize refuses them first).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
