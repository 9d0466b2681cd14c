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


# --------------------------------------------------------------------------- samples

_NIL = "00000000-0000-0000-0000-000000000000"
_NEVER = "9999-01-01 00:00:00.000000"
_CUSTOMER = "5e4a0680-804e-11ec-8477-2fea5968d85b"
_WELCOME = "hello. welcome to voipbin. This is test message. Please enjoy the voipbin's service. thank you."


def _address(target: str) -> dict[str, str]:
    return {"type": "tel", "target": target, "target_name": "", "name": "", "detail": ""}


def _call(**overrides: Any) -> dict[str, Any]:
    # VoIPBIN's documented call_hungup example; each sample changes what differs in its state.
    call: dict[str, Any] = {
        "id": "593555d2-787e-4b06-862f-407bb2e43be1",
        "flow_id": "d157ce07-0360-4cad-9007-c8ab89fccf9c",
        "type": "flow",
        "master_call_id": _NIL,
        "chained_call_ids": [],
        "recording_id": _NIL,
        "recording_ids": [],
        "source": _address("+821100000002"),
        "destination": _address("+821100000001"),
        "status": "hangup",
        "action": {
            "id": "2e7ec294-fc66-4039-8446-6590b82ed54f",
            "next_id": _NIL,
            "type": "talk",
            "option": {
                "text": _WELCOME,
                "gender": "female",
                "language": "en-US",
            },
            "tm_execute": "2022-04-11 06:10:55.918010931",
        },
        "direction": "incoming",
        "hangup_by": "remote",
        "hangup_reason": "normal",
        "tm_create": "2022-04-11 06:10:54.788000",
        "tm_update": "2022-04-11 06:10:58.431000",
        "tm_progressing": "2022-04-11 06:10:55.765000",
        "tm_ringing": _NEVER,
        "tm_hangup": "2022-04-11 06:10:58.431000",
    }
    call.update(overrides)
    return call


def _message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": "a5c1f3d2-0b1e-4c55-9d43-7f5a3e9b2c10",
        "type": "sms",
        "source": _address("+15551234567"),
        "targets": [{"destination": _address("+15559876543"), "status": "received", "parts": 1,
                     "tm_update": "2022-03-13 15:11:05.235717"}],
        "text": "Hi, can I move my appointment to Thursday?",
        "direction": "inbound",
        "tm_create": "2022-03-13 15:11:05.235717",
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    message.update(overrides)
    return message


def _recording(**overrides: Any) -> dict[str, Any]:
    recording: dict[str, Any] = {
        "id": "348d988b-2ac9-4702-85b0-a6d6a2e4e6e4",
        "customer_id": _CUSTOMER,
        "owner_type": "",
        "owner_id": _NIL,
        "activeflow_id": "74ac5405-7c70-4184-9388-1c9f8f8ce25f",
        "reference_type": "call",
        "reference_id": "593555d2-787e-4b06-862f-407bb2e43be1",
        "status": "initiating",
        "format": "wav",
        "on_end_flow_id": _NIL,
        "tm_start": _NEVER,
        "tm_end": _NEVER,
        "tm_create": "2022-04-11 06:10:56.012000",
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    recording.update(overrides)
    return recording


def _transcribe(**overrides: Any) -> dict[str, Any]:
    transcribe: dict[str, Any] = {
        "id": "bbf08426-3979-41bc-a544-5fc92c237848",
        "customer_id": _CUSTOMER,
        "activeflow_id": _NIL,
        "on_end_flow_id": _NIL,
        "reference_type": "call",
        "reference_id": "12f8f1c9-a6c3-4f81-93db-ae445dcf188f",
        "status": "progressing",
        "language": "en-US",
        "direction": "both",
        "provider": "gcp",
        "tm_create": "2024-04-01 07:17:04.091019",
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    transcribe.update(overrides)
    return transcribe


def _queue(**overrides: Any) -> dict[str, Any]:
    queue: dict[str, Any] = {
        "id": "99bf739a-932f-433c-b1bf-103d33d7e9bb",
        "customer_id": _CUSTOMER,
        "name": "support",
        "detail": "first-line support queue",
        "routing_method": "random",
        "tag_ids": ["d7450dda-21e0-4611-b09a-8d771c50a5e6"],
        "wait_actions": [],
        "wait_timeout": 600000,
        "service_timeout": 3600000,
        "wait_queuecall_ids": [],
        "service_queuecall_ids": [],
        "total_incoming_count": 0,
        "total_serviced_count": 0,
        "total_abandoned_count": 0,
        "tm_create": "2022-03-29 14:55:21.419200",
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    queue.update(overrides)
    return queue


def _queuecall(**overrides: Any) -> dict[str, Any]:
    queuecall: dict[str, Any] = {
        "id": "c7c1e226-8c86-4b43-9606-2d5bb2059a09",
        "reference_type": "call",
        "reference_id": "1fe1356f-3f7f-4ff9-9d33-08136b38f506",
        "status": "wait",
        "service_agent_id": _NIL,
        "tm_create": "2022-03-29 15:07:46.111715",
        "tm_service": _NEVER,
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    queuecall.update(overrides)
    return queuecall


def _conference(**overrides: Any) -> dict[str, Any]:
    conference: dict[str, Any] = {
        "id": "99accfb7-c0dd-4a54-997d-dd18af7bc280",
        "customer_id": _CUSTOMER,
        "type": "conference",
        "status": "starting",
        "name": "test conference",
        "detail": "test conference for example.",
        "data": {},
        "timeout": 0,
        "pre_actions": [],
        "post_actions": [],
        "conferencecall_ids": [],
        "recording_id": _NIL,
        "recording_ids": [],
        "tm_create": "2022-02-03 06:08:56.672025",
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    conference.update(overrides)
    return conference


def _confbridge(**overrides: Any) -> dict[str, Any]:
    confbridge: dict[str, Any] = {
        "id": "821fc304-0ed8-4e93-8a0a-c23312c062be",
        "customer_id": _CUSTOMER,
        "type": "connect",
        "bridge_id": "f5d6a0a8-0c8e-4a6c-9f1b-8c2a3b4d5e6f",
        "flags": [],
        "channel_call_ids": {},
        "recording_id": _NIL,
        "recording_ids": [],
        "tm_create": "2022-03-29 14:10:06.409155",
        "tm_update": _NEVER,
        "tm_delete": _NEVER,
    }
    confbridge.update(overrides)
    return confbridge


def _activeflow(**overrides: Any) -> dict[str, Any]:
    # VoIPBIN's documented activeflow_created example.
    talk = {
        "id": "2e7ec294-fc66-4039-8446-6590b82ed54f",
        "next_id": _NIL,
        "type": "talk",
        "option": {
            "text": _WELCOME,
            "gender": "female",
            "language": "en-US",
        },
    }
    activeflow: dict[str, Any] = {
        "id": "74ac5405-7c70-4184-9388-1c9f8f8ce25f",
        "flow_id": "d157ce07-0360-4cad-9007-c8ab89fccf9c",
        "customer_id": _NIL,
        "reference_type": "call",
        "reference_id": "5371e9db-d035-4db6-a8d6-0994d33e744e",
        "current_action": {"id": "00000000-0000-0000-0000-000000000001", "next_id": _NIL, "type": ""},
        "forward_action_id": _NIL,
        "actions": [{"id": "df25724f-e308-4c89-9325-cf56cd09249e", "next_id": _NIL, "type": "answer"}, talk],
        "tm_create": "2022-04-11 00:23:54.724620",
        "tm_update": "2022-04-11 00:23:54.724620",
        "tm_delete": _NEVER,
    }
    activeflow.update(overrides)
    return activeflow


def samples() -> dict[str, dict[str, Any]]:
    inbound = {"source": _address("+821100000002"), "destination": _address("+821100000001")}
    outbound = {"source": _address("+821100000001"), "destination": _address("+821021656521"),
                "direction": "outgoing"}
    data: dict[str, dict[str, Any]] = {
        "call_created": _call(
            id="5371e9db-d035-4db6-a8d6-0994d33e744e", **inbound, status="ringing",
            action={"id": "00000000-0000-0000-0000-000000000001", "next_id": _NIL, "type": ""},
            hangup_by="", hangup_reason="", tm_create="2022-04-11 00:23:53.636000", tm_update=_NEVER,
            tm_progressing=_NEVER, tm_hangup=_NEVER,
        ),
        "call_ringing": _call(
            id="ad132775-1ab2-485e-856f-72c2e383cdc6", flow_id="6da52ef9-7d7d-48e4-8bca-921e7b78e47c",
            master_call_id="1fe1356f-3f7f-4ff9-9d33-08136b38f506", **outbound, status="ringing",
            action={"id": "00000000-0000-0000-0000-000000000001", "next_id": _NIL, "type": ""},
            hangup_by="", hangup_reason="", tm_create="2022-03-29 15:08:01.815004",
            tm_update="2022-03-29 15:08:03.421646", tm_progressing=_NEVER, tm_ringing="2022-03-29 15:08:03.314000",
            tm_hangup=_NEVER,
        ),
        "call_answered": _call(
            id="5371e9db-d035-4db6-a8d6-0994d33e744e", **inbound, status="progressing",
            action={"id": "df25724f-e308-4c89-9325-cf56cd09249e", "next_id": _NIL, "type": "answer",
                    "tm_execute": "2022-04-11 00:23:55.012416032"},
            hangup_by="", hangup_reason="", tm_create="2022-04-11 00:23:53.636000",
            tm_update="2022-04-11 00:23:55.130190", tm_progressing="2022-04-11 00:23:55.026000", tm_hangup=_NEVER,
        ),
        "call_updated": _call(
            id="bf682a17-6b3f-412c-bbac-faa81fb9ada3", flow_id="70875796-0497-4ff9-acd0-e226a14495a9",
            chained_call_ids=["a876f057-bb20-4b87-824c-d7afa3e71af5"], source=_address("test11"),
            destination=_address("+821100000004"),
            action={"id": "4aae4342-d702-4e23-9c14-64dc20d2075d", "next_id": _NIL, "type": "confbridge_join",
                    "option": {"confbridge_id": "821fc304-0ed8-4e93-8a0a-c23312c062be"},
                    "tm_execute": "2022-03-29 14:10:06.409155828"},
            tm_create="2022-03-29 14:09:52.886000", tm_update="2022-03-29 14:10:33.709605",
            tm_progressing="2022-03-29 14:09:54.629000", tm_hangup="2022-03-29 14:10:33.105000",
        ),
        "call_hungup": _call(),
        "message_created": _message(),
        "message_updated": _message(
            id="f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f", source=_address("+15559876543"),
            targets=[{"destination": _address("+15551234567"), "status": "sent", "parts": 1,
                      "tm_update": "2022-03-13 15:12:06.497184184"}],
            text="Thursday 10am works. See you then!", direction="outbound",
            tm_create="2022-03-13 15:12:05.235717", tm_update="2022-03-13 15:12:06.497278",
        ),
        "message_deleted": _message(tm_update="2022-03-14 09:00:00.000000", tm_delete="2022-03-14 09:00:00.000000"),
        "recording_created": _recording(),
        "recording_updated": _recording(
            status="ended", tm_start="2022-04-11 06:10:56.020000", tm_end="2022-04-11 06:10:58.431000",
            tm_update="2022-04-11 06:10:58.902000",
        ),
        "recording_deleted": _recording(
            status="ended", tm_start="2022-04-11 06:10:56.020000", tm_end="2022-04-11 06:10:58.431000",
            tm_update="2022-05-11 06:11:00.000000", tm_delete="2022-05-11 06:11:00.000000",
        ),
        "transcribe_created": _transcribe(),
        "transcribe_updated": _transcribe(status="done", tm_update="2024-04-01 13:25:32.428602"),
        "transcribe_deleted": _transcribe(
            status="done", tm_update="2024-04-02 08:00:00.000000", tm_delete="2024-04-02 08:00:00.000000"),
        "transcript_created": {
            "id": "06af78f0-b063-48c0-b22d-d31a5af0aa88",
            "transcribe_id": "bbf08426-3979-41bc-a544-5fc92c237848",
            "direction": "in",
            "message": "Hi, good to see you. How are you today.",
            "offset_ms": 304441,
            "tm_create": "2024-04-01T07:22:07.229309Z",
        },
        "queue_created": _queue(),
        "queue_updated": _queue(
            wait_queuecall_ids=["c7c1e226-8c86-4b43-9606-2d5bb2059a09"], total_incoming_count=1,
            tm_update="2022-03-29 15:07:46.120000",
        ),
        "queuecall_created": _queuecall(),
        "queuecall_kicking": _queuecall(
            status="entering", service_agent_id="eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b",
            tm_service="2022-03-29 15:08:02.233858", tm_update="2022-03-29 15:08:02.233858",
        ),
        "queuecall_serviced": _queuecall(
            status="service", service_agent_id="eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b",
            tm_service="2022-03-29 15:08:04.811442", tm_update="2022-03-29 15:08:04.811442",
        ),
        "conference_created": _conference(),
        "conference_updated": _conference(
            status="progressing", conferencecall_ids=["0b6b5b8e-3c1f-4f7e-9a51-2f0c8d7e6a54"],
            tm_update="2022-08-06 19:11:13.040418",
        ),
        "confbridge_created": _confbridge(),
        "confbridge_updated": _confbridge(
            channel_call_ids={"b7a8e5a6-1f6d-4b9c-8a3e-6c5d4e3f2a1b": "bf682a17-6b3f-412c-bbac-faa81fb9ada3"},
            tm_update="2022-03-29 14:10:06.512000",
        ),
        "activeflow_created": _activeflow(),
        "activeflow_updated": _activeflow(
            current_action={"id": "df25724f-e308-4c89-9325-cf56cd09249e", "next_id": _NIL, "type": "answer"},
            tm_update="2022-04-11 00:23:54.840938",
        ),
        "activeflow_deleted": _activeflow(
            current_action={"id": "2e7ec294-fc66-4039-8446-6590b82ed54f", "next_id": _NIL, "type": "talk"},
            tm_update="2022-04-11 00:23:55.134500",
        ),
    }
    return {t: {"type": t, "data": d} for t, d in data.items()}


PROVIDER = Provider(
    name=NAME,
    methods=("POST", "PUT", "GET", "DELETE"),
    event_types=EVENT_TYPES,
    normalize=normalize,
    samples=samples,
)
