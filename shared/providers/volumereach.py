"""Volume Reach (seeds/000): HMAC-SHA256 over "<timestamp>.<raw body>".

Headers: ``X-Webhook-Signature: sha256=<hex>``, ``X-Webhook-Timestamp`` (unix
seconds, 300 s tolerance), ``X-Webhook-Delivery-Id`` (logged for support).
Body: ``{"event": "call.completed", "data": {call_id, outcome, transcript,
extraction, contact{name, phone}, metadata, recording_url, ...}}``.
Identity: ``event`` + ``data.call_id``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Call, Event
from hooklane.shared.providers.base import (
    Clock,
    Headers,
    NormalizeError,
    Provider,
    as_str,
    build_event,
    canonical_type,
    check_digest,
    check_timestamp,
    data_object,
    dict_or_empty,
    direction,
    first,
    hmac_sha256_hex,
    identity_of,
    parse_hex_digest,
    require_header,
    require_object,
    to_iso,
    to_seconds,
)

NAME = "volumereach"
SIGNATURE_HEADER = "x-webhook-signature"
TIMESTAMP_HEADER = "x-webhook-timestamp"
DELIVERY_ID_HEADER = "x-webhook-delivery-id"

EVENT_TYPES = {
    "call.completed": "call.completed",
}

# call.completed fires for every finished call; these outcomes mean nobody answered.
NOT_CONNECTED_OUTCOMES = {"NO_ANSWER", "BUSY", "FAILED", "CANCELED", "CANCELLED", "UNREACHABLE"}


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time) -> None:
    signature = parse_hex_digest(require_header(headers, SIGNATURE_HEADER), prefix="sha256=")
    timestamp = require_header(headers, TIMESTAMP_HEADER)
    check_timestamp(timestamp, tolerance, now)
    check_digest(signature, timestamp.encode("ascii") + b"." + body, secrets)


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Webhook-Signature": "sha256=" + hmac_sha256_hex(secret, ts.encode("ascii") + b"." + body),
        "X-Webhook-Timestamp": ts,
    }


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    provider_type = payload.get("event")
    if not isinstance(provider_type, str) or not provider_type:
        raise NormalizeError("volumereach payload has no 'event' name")
    data = data_object(payload, NAME)
    contact = dict_or_empty(data.get("contact"))
    extraction = dict_or_empty(data.get("extraction"))
    call_id = as_str(first(data, "call_id", "callId", "id"))
    outcome = as_str(data.get("outcome"))

    event_type = canonical_type(NAME, provider_type, EVENT_TYPES)
    if event_type == "call.completed" and outcome and outcome.upper() in NOT_CONNECTED_OUTCOMES:
        event_type = "call.failed"

    call = Call(
        id=call_id,
        direction=direction(data.get("direction")),
        phone=as_str(first(contact, "phone", "phoneNumber") or first(data, "phone_number", "phoneNumber", "to")),
        status=as_str(data.get("status")),
        outcome=outcome,
        duration_seconds=to_seconds(first(data, "duration_seconds", "durationSeconds", "duration")),
        started_at=to_iso(first(data, "started_at", "startedAt")),
        ended_at=to_iso(first(data, "ended_at", "endedAt", "completed_at", "completedAt")),
        recording_url=as_str(first(data, "recording_url", "recordingUrl")),
        transcript=as_str(data.get("transcript")),
        summary=as_str(first(data, "summary") or extraction.get("summary")),
        extraction=extraction,
        metadata=dict_or_empty(data.get("metadata")),
    )
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, provider_type, call_id),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=to_iso(first(payload, "timestamp", "occurred_at")) or call.ended_at,
        call=call,
        raw=payload,
    )


def samples() -> dict[str, dict[str, Any]]:
    return {
        "call.completed": {
            "event": "call.completed",
            "data": {
                "call_id": "call_xyz",
                "agent_id": "va_abc",
                "status": "completed",
                "outcome": "INTERESTED",
                "duration_seconds": 184,
                "started_at": "2025-03-14T15:02:11Z",
                "ended_at": "2025-03-14T15:05:15Z",
                "recording_url": "https://cdn.volumereach.com/rec/call_xyz.mp3?exp=900",
                "transcript": "Agent: Hi Jane, this is Ava calling about 123 Oak St...\nJane: Yes, Tuesday works.",
                "contact": {"name": "Jane Smith", "phone": "+15551234567"},
                "extraction": {
                    "summary": "Owner interested; site visit booked for Tuesday 10am.",
                    "interested": True,
                    "appointmentDateTimeISO": "2025-03-18T10:00:00-05:00",
                    "appointmentDurationMinutes": 60,
                    "contactEmail": "jane@example.com",
                },
                "metadata": {"crmLeadId": "lead_8841", "test": True},
            },
        },
    }


PROVIDER = Provider(
    name=NAME,
    forward_headers=(DELIVERY_ID_HEADER, TIMESTAMP_HEADER),
    delivery_id_header=DELIVERY_ID_HEADER,
    event_types=EVENT_TYPES,
    normalize=normalize,
    samples=samples,
    verify=verify,
    sign=sign,
)
