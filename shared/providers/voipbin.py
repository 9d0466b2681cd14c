"""VoIPBIN (seeds/003): no signature; sources authenticate by URL token and/or IP allowlist.

VoIPBIN calls the one ``webhook_uri`` of the customer profile with the
configured ``webhook_method`` (POST, PUT, GET or DELETE) for every resource
event. Body: ``{"type": "call_hungup", "data": {<the resource>}}``, where the
resource is a call, message, recording, transcribe, transcript segment,
queue(call), conference, confbridge or activeflow object.
Timestamps (``tm_*``) are UTC without a zone, ``2022-05-01 15:10:23.414798``;
``9999-01-01 00:00:00.000000`` means "has not happened yet".
Identity: ``type`` + ``data.id``, except ``*_updated`` events, which fire
many times for one resource: the SHA-256 of the body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Call, Event
from hooklane.shared.providers.base import (
    Provider,
    as_str,
    build_event,
    canonical_type,
    data_object,
    dict_or_empty,
    identity_of,
    require_name,
    require_object,
    sha256_hex,
    to_iso,
)

NAME = "voipbin"

EVENT_TYPES = {
    "call_created": "call.started",
    "call_ringing": "call.ringing",
    "call_answered": "call.answered",
    "call_updated": "call.updated",
    "call_hungup": "call.completed",
    "message_created": "message.received",
    "message_updated": "message.updated",
    "recording_updated": "recording.ready",
    "transcript_created": "transcript.ready",
}

# hangup_reason values of a call that never connected (VoIPBIN's call struct):
# failed = never reached the network, busy, cancel = caller gave up before answer,
# noanswer (older API: unanswer) = ring timeout, dialout = VoIPBIN's own dial timeout.
# Not here: normal; timeout (max duration reached *after* answer); amd (answered by a
# machine: the line connected, the outcome says what answered).
NOT_CONNECTED_REASONS = frozenset({"failed", "busy", "cancel", "noanswer", "unanswer", "dialout"})

# Recording status once the file is complete and downloadable (initiating/recording/stopping precede it).
RECORDING_DONE_STATUSES = frozenset({"ended"})

# Events whose canonical meaning depends on the resource's state:
# type -> (data field, values, canonical type when the value is in values, canonical type otherwise).
STATE_RULES: dict[str, tuple[str, frozenset[str], str, str]] = {
    "call_hungup": ("hangup_reason", NOT_CONNECTED_REASONS, "call.failed", "call.completed"),
    "recording_updated": ("status", RECORDING_DONE_STATUSES, "recording.ready", f"{NAME}.recording_updated"),
}

# Calls say incoming/outgoing, messages inbound/outbound. Transcripts say in/out/both,
# which is whose speech a segment is, not the call's direction: deliberately absent.
DIRECTIONS = {"incoming": "inbound", "outgoing": "outbound", "inbound": "inbound", "outbound": "outbound"}

# The tm_* field that says when this event happened; anything else: tm_update, else tm_create.
OCCURRED_AT_FIELD = {
    "call_ringing": "tm_ringing",
    "call_answered": "tm_progressing",
    "call_hungup": "tm_hangup",
}
OCCURRED_AT_BY_SUFFIX = {"_created": "tm_create", "_deleted": "tm_delete"}

NOT_YET = "9999-01-01"


def tm(value: Any) -> str | None:
    """A VoIPBIN timestamp as ISO UTC; None for the "not yet" sentinel and for empty values."""
    if isinstance(value, str) and value.startswith(NOT_YET):
        return None
    return to_iso(value)


def canonical(provider_type: str, data: dict[str, Any]) -> str:
    rule = STATE_RULES.get(provider_type)
    if rule is None:
        return canonical_type(NAME, provider_type, EVENT_TYPES)
    field, values, if_in, otherwise = rule
    value = data.get(field)
    return if_in if isinstance(value, str) and value.lower() in values else otherwise


def occurred_at(provider_type: str, data: dict[str, Any]) -> str | None:
    specific = OCCURRED_AT_FIELD.get(provider_type) or next(
        (f for suffix, f in OCCURRED_AT_BY_SUFFIX.items() if provider_type.endswith(suffix)), None)
    for field in (specific, "tm_update", "tm_create"):
        when = tm(data.get(field)) if field else None
        if when:
            return when
    return None


def remote_party(data: dict[str, Any], call_direction: str | None) -> str | None:
    """The other end: who called / wrote us when inbound, whom we called / wrote when outbound."""
    if call_direction == "inbound":
        return as_str(dict_or_empty(data.get("source")).get("target"))
    if call_direction == "outbound":
        destination = data.get("destination")
        if destination is None:
            # Messages list their destinations under targets[]; the first is the conversation partner.
            targets = data.get("targets")
            first_target = targets[0] if isinstance(targets, list) and targets else None
            destination = dict_or_empty(first_target).get("destination")
        return as_str(dict_or_empty(destination).get("target"))
    return None


def seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
    return delta.total_seconds()


def call_of(provider_type: str, data: dict[str, Any]) -> Call:
    family = provider_type.split("_", 1)[0]
    raw_direction = data.get("direction")
    call_direction = DIRECTIONS.get(raw_direction) if isinstance(raw_direction, str) else None
    phone = remote_party(data, call_direction) if family in ("call", "message") else None
    if family == "call":
        answered, hungup = tm(data.get("tm_progressing")), tm(data.get("tm_hangup"))
        # Talk time, answer to hangup: what the other providers call duration. A call that
        # hung up without ever being answered talked for 0 s; one still up has no duration yet.
        duration = seconds_between(answered, hungup) if answered else (0.0 if hungup else None)
        return Call(
            id=as_str(data.get("id")),
            direction=call_direction,
            phone=phone,
            status=as_str(data.get("status")),
            outcome=as_str(data.get("hangup_reason")),
            duration_seconds=duration,
            started_at=tm(data.get("tm_create")),
            ended_at=hungup,
        )
    # Other resources name the call they belong to, if any, by reference.
    call_id = as_str(data.get("reference_id")) if data.get("reference_type") == "call" else None
    return Call(
        id=call_id,
        direction=call_direction if family == "message" else None,
        phone=phone,
        transcript=as_str(data.get("message")) if family == "transcript" else None,
    )


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    provider_type = require_name(payload, "type", NAME)
    data = data_object(payload, NAME)
    if provider_type.endswith("_updated"):
        identity = sha256_hex(delivery.body)
    else:
        identity = identity_of(delivery.body, provider_type, data.get("id"))
    return build_event(
        delivery=delivery,
        identity=identity,
        provider_type=provider_type,
        event_type=canonical(provider_type, data),
        occurred_at=occurred_at(provider_type, data),
        call=call_of(provider_type, data),
        raw=payload,
    )


PROVIDER = Provider(
    name=NAME,
    methods=("POST", "PUT", "GET", "DELETE"),
    event_types=EVENT_TYPES,
    normalize=normalize,
)
