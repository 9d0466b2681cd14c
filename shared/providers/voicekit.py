"""VoiceKit (seeds/004): no signature; sources authenticate by URL token and/or IP allowlist.

VoiceKit POSTs ``{"event", "timestamp", "data"}`` and does not retry a failed
delivery, so a refused or lost one is gone for good.
Events: ``call_started``, ``call_ended`` (``duration_seconds``,
``duration_minutes``), ``call_finalized`` (``recording_url`` once the recording
is processed). ``call_id`` is a number; canonical ids are strings.
Identity: ``event`` + ``data.call_id``.
"""

from __future__ import annotations

from typing import Any

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Call, Event
from hooklane.shared.providers.base import (
    Provider,
    as_str,
    build_event,
    canonical_type,
    data_object,
    identity_of,
    require_name,
    require_object,
    to_iso,
    to_seconds,
)

NAME = "voicekit"

EVENT_TYPES = {
    "call_started": "call.started",
    "call_ended": "call.completed",
    "call_finalized": "recording.ready",
}

# call_ended fires for every call "when all participants disconnect", connected or not.
# A call that lasted exactly 0 s never connected anyone: call.failed. A missing duration
# proves nothing either way, so it stays call.completed (duration_minutes is no help: it
# is at least 1 by definition).
NOT_CONNECTED_DURATION = 0.0

# The payload timestamp is when the event happened: for these it is also the call's start / end.
TIMESTAMP_IS = {"call_started": "started_at", "call_ended": "ended_at"}


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    provider_type = require_name(payload, "event", NAME)
    data = data_object(payload, NAME)
    occurred_at = to_iso(payload.get("timestamp"))
    duration = to_seconds(data.get("duration_seconds"))

    event_type = canonical_type(NAME, provider_type, EVENT_TYPES)
    if event_type == "call.completed" and duration == NOT_CONNECTED_DURATION:
        event_type = "call.failed"

    slot = TIMESTAMP_IS.get(provider_type)
    call = Call(
        id=as_str(data.get("call_id")),
        phone=as_str(data.get("phone_number")),
        duration_seconds=duration,
        started_at=occurred_at if slot == "started_at" else None,
        ended_at=occurred_at if slot == "ended_at" else None,
        recording_url=as_str(data.get("recording_url")),
    )
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, provider_type, data.get("call_id")),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=occurred_at,
        call=call,
        raw=payload,
    )


def samples() -> dict[str, dict[str, Any]]:
    # The document's own examples, verbatim.
    return {
        "call_started": {
            "event": "call_started",
            "timestamp": "2024-01-15T10:30:00.000Z",
            "data": {"call_id": 123, "workflow_slug": "customer-support", "phone_number": "+1234567890"},
        },
        "call_ended": {
            "event": "call_ended",
            "timestamp": "2024-01-15T10:32:30.000Z",
            "data": {
                "call_id": 123,
                "workflow_slug": "customer-support",
                "phone_number": "+1234567890",
                "duration_seconds": 150,
                "duration_minutes": 3,
            },
        },
        "call_finalized": {
            "event": "call_finalized",
            "timestamp": "2024-01-15T10:33:00.000Z",
            "data": {
                "call_id": 123,
                "call_slug": "abc12345",
                "recording_url": "https://recordings.voicekit.com/path/to/audio.ogg",
                "workflow_id": 456,
                "organization_id": 789,
                "egress_info": {
                    "egress_id": "EG_dmi8xHQYNX6r",
                    "room_id": "RM_kfWfYGzHvVYy",
                    "room_name": "VOICEKIT_workflow_abc12345_8453",
                    "status": "EGRESS_COMPLETE",
                    "started_at": "1749599674369480049",
                    "ended_at": "1749599765791839485",
                    "duration": "88756989820",
                    "file_size": "1442477",
                    "file_type": "ogg",
                },
            },
        },
    }


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    samples=samples,
)
