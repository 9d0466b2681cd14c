"""VoxPria (seeds/001): HMAC-SHA256 over the raw body, ``sha256=`` prefix.

Header: ``X-Voxpria-Signature: sha256=<hex>``; no timestamp, no delivery id.
The document's sample code hashes ``JSON.stringify(req.body)`` / ``json.dumps``
of the parsed payload: that only matches when the receiver happens to
re-serialize byte-for-byte like VoxPria, so we sign and verify the raw bytes.
Body: ``{"event", "timestamp", "data": {callId, status, duration, toNumber,
recording, transcript, ...}}``.
Identity: ``event`` + ``data.callId`` (campaign events: ``data.campaignId``).
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
    Provider,
    as_str,
    build_event,
    canonical_type,
    check_digest,
    data_object,
    dict_or_empty,
    direction,
    first,
    hmac_sha256_hex,
    identity_of,
    parse_hex_digest,
    require_header,
    require_name,
    require_object,
    to_iso,
    to_seconds,
)

NAME = "voxpria"
SIGNATURE_HEADER = "x-voxpria-signature"

EVENT_TYPES = {
    "call.started": "call.started",
    "call.completed": "call.completed",
    "call.failed": "call.failed",
    "campaign.started": "campaign.started",
    "campaign.finished": "campaign.finished",
    "campaign.paused": "campaign.paused",
}

# Which data field names the subject of an event; anything not listed is about a call.
IDENTITY_FIELD = {
    "campaign.started": "campaignId",
    "campaign.finished": "campaignId",
    "campaign.paused": "campaignId",
}

# A campaign can be paused and resumed many times, so campaign + event alone would
# dedupe the second pause away; the event timestamp tells the pauses apart.
REPEATABLE_EVENTS = {"campaign.paused"}

# The payload timestamp is when the event happened: for these it is also the call's start / end.
TIMESTAMP_IS = {
    "call.started": "started_at",
    "call.completed": "ended_at",
    "call.failed": "ended_at",
}


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time) -> None:
    # tolerance/now are part of the verifier contract; VoxPria sends no timestamp to check them against.
    signature = parse_hex_digest(require_header(headers, SIGNATURE_HEADER), prefix="sha256=")
    check_digest(signature, body, secrets)


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    return {"X-Voxpria-Signature": "sha256=" + hmac_sha256_hex(secret, body)}


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    provider_type = require_name(payload, "event", NAME)
    data = data_object(payload, NAME)
    occurred_at = to_iso(payload.get("timestamp"))
    is_campaign = provider_type in IDENTITY_FIELD

    # VoxPria dials out: `toNumber` is the callee. An explicit direction, if ever sent, wins.
    call_direction = direction(data.get("direction")) or ("outbound" if data.get("toNumber") else None)
    phone_field = "fromNumber" if call_direction == "inbound" else "toNumber"
    times = {"started_at": to_iso(first(data, "startedAt", "startTime")),
             "ended_at": to_iso(first(data, "endedAt", "endTime"))}
    slot = TIMESTAMP_IS.get(provider_type)
    if slot and times[slot] is None:
        times[slot] = occurred_at

    call = Call() if is_campaign else Call(
        id=as_str(data.get("callId")),
        direction=call_direction,
        phone=as_str(data.get(phone_field)),
        status=as_str(data.get("status")),
        outcome=as_str(data.get("outcome")),
        duration_seconds=to_seconds(data.get("duration")),
        started_at=times["started_at"],
        ended_at=times["ended_at"],
        recording_url=as_str(first(data, "recording", "recordingUrl")),
        transcript=as_str(data.get("transcript")),
        summary=as_str(data.get("summary")),
        extraction=dict_or_empty(data.get("extraction")),
        metadata=dict_or_empty(data.get("metadata")),
    )
    parts: list[Any] = [provider_type, data.get(IDENTITY_FIELD.get(provider_type, "callId"))]
    if provider_type in REPEATABLE_EVENTS:
        parts.append(payload.get("timestamp"))
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, *parts),
        provider_type=provider_type,
        event_type=canonical_type(NAME, provider_type, EVENT_TYPES),
        occurred_at=occurred_at,
        call=call,
        raw=payload,
    )


def samples() -> dict[str, dict[str, Any]]:
    return {
        "call.started": {
            "event": "call.started",
            "timestamp": "2025-02-09T11:57:53Z",
            "data": {
                "callId": "call_xyz789",
                "campaignId": "camp_abc123",
                "status": "in_progress",
                "toNumber": "+14155551234",
            },
        },
        # The document's own example, with its elided values filled in.
        "call.completed": {
            "event": "call.completed",
            "timestamp": "2025-02-09T12:00:00Z",
            "data": {
                "callId": "call_xyz789",
                "status": "completed",
                "duration": 127,
                "toNumber": "+14155551234",
                "recording": "https://recordings.voxpria.com/call_xyz789.mp3",
                "transcript": "Agent: Hi, this is Ava from Acme Solar.\nCustomer: Hi, yes, I have a minute.",
            },
        },
        "call.failed": {
            "event": "call.failed",
            "timestamp": "2025-02-09T12:03:10Z",
            "data": {
                "callId": "call_xyz790",
                "campaignId": "camp_abc123",
                "status": "failed",
                "duration": 0,
                "toNumber": "+14155550199",
                "error": "no-answer",
            },
        },
        "campaign.started": {
            "event": "campaign.started",
            "timestamp": "2025-02-09T09:00:00Z",
            "data": {
                "campaignId": "camp_abc123",
                "name": "February renewals",
                "status": "running",
                "totalContacts": 250,
            },
        },
        "campaign.finished": {
            "event": "campaign.finished",
            "timestamp": "2025-02-09T17:30:00Z",
            "data": {
                "campaignId": "camp_abc123",
                "name": "February renewals",
                "status": "finished",
                "totalContacts": 250,
                "completedCalls": 212,
                "failedCalls": 38,
            },
        },
        "campaign.paused": {
            "event": "campaign.paused",
            "timestamp": "2025-02-09T12:30:00Z",
            "data": {
                "campaignId": "camp_abc123",
                "name": "February renewals",
                "status": "paused",
                "completedCalls": 97,
            },
        },
    }


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    samples=samples,
    verify=verify,
    sign=sign,
)
