"""Retell AI agent webhooks: HMAC-SHA256 of the raw body followed by the timestamp.

Header: ``x-retell-signature: v=<unix ms>,d=<lower-case hex>``, where
``d = HMAC-SHA256(api_key, raw_body + str(v))`` — body first, then the
timestamp digits, no separator. The secret is the Retell API key that carries
the "webhook" badge (rotating the key rotates the secret: keep a list). The
window is ±``tolerance`` seconds, compared in milliseconds (exactly 300 000 ms
passes), as retell-sdk 6.2.13 does. No delivery-id header.

Divergences from retell-sdk 6.2.13 (``retell.lib.webhook_auth``), both on
input the SDK mishandles, never on a genuine delivery:
- the SDK's ``\\d`` also matches non-ASCII digits (``v=١٢٣``); only 0-9 here;
- the SDK raises ValueError (a 500) on a timestamp of more than 4300 digits
  (Python's int() limit); here the timestamp is at most 16 digits, else 401.
HTTP's optional whitespace around the header value is stripped, as for every
provider.

Body: ``{"event": "<type>", "call": {call_id, call_status, direction,
from_number, to_number, start_timestamp, end_timestamp, duration_ms,
disconnection_reason, transcript, recording_url, metadata, call_analysis…}}``.
Identity: ``event`` + ``call.call_id`` for the once-per-call events; the body
hash for the ones that fire many times per call (``transcript_updated``,
``transfer_*``) and for types this module does not know.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Call, Event
from hooklane.shared.providers.base import (
    Clock,
    Headers,
    Provider,
    SignatureError,
    as_str,
    build_event,
    canonical_type,
    check_digest,
    data_object,
    dict_or_empty,
    direction,
    hmac_sha256_hex,
    identity_of,
    require_header,
    require_name,
    require_object,
    to_iso,
    to_seconds,
)

NAME = "retell"
SIGNATURE_HEADER = "x-retell-signature"
# [0-9], not \d: \d also matches other scripts' digits. 16 digits of ms reach the year 318857.
_SIGNATURE = re.compile(r"v=([0-9]{1,16}),d=([0-9a-f]{64})")

EVENT_TYPES = {
    "call_started": "call.started",
    "call_ended": "call.completed",  # call.failed when the call never connected (below)
    "call_analyzed": "transcript.ready",
    "transcript_updated": "call.updated",
}

# Sent once per call: the call id tells them apart. Anything else may repeat within a call.
ONCE_PER_CALL = {"call_started", "call_ended", "call_analyzed"}

NOT_CONNECTED_STATUSES = {"not_connected", "error"}
# disconnection_reason values that mean nobody was ever on the line (retell-sdk 6.2.13).
NOT_CONNECTED_REASONS = {
    "dial_busy", "dial_failed", "dial_no_answer", "invalid_destination",
    "telephony_provider_permission_denied", "telephony_provider_unavailable", "sip_routing_error",
    "marked_as_spam", "network_blocked", "user_declined", "registered_call_timeout",
    "concurrency_limit_reached", "no_concurrency_fallback", "no_valid_payment", "credit_exhausted",
    "budget_reached",
}


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time) -> None:
    match = _SIGNATURE.fullmatch(require_header(headers, SIGNATURE_HEADER))
    if match is None:
        raise SignatureError("signature is not 'v=<unix ms>,d=<64 lower-case hex>'")
    timestamp, digest = match.groups()
    # Whole milliseconds on both sides, as Retell compares; rounded, so float noise cannot move the edge.
    if abs(round(now() * 1000) - int(timestamp)) > tolerance * 1000:
        raise SignatureError("timestamp outside the tolerance window")
    check_digest(digest, body + timestamp.encode("ascii"), secrets)


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """`timestamp` in unix seconds like every provider's sign(); Retell's header carries milliseconds."""
    ms = str(int(time.time() * 1000) if timestamp is None else timestamp * 1000)
    return {"x-retell-signature": f"v={ms},d={hmac_sha256_hex(secret, body + ms.encode('ascii'))}"}


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    provider_type = require_name(payload, "event", NAME)
    call_obj = data_object(payload, NAME, "call")
    analysis = dict_or_empty(call_obj.get("call_analysis"))
    status = as_str(call_obj.get("call_status"))
    reason = as_str(call_obj.get("disconnection_reason"))
    call_direction = direction(call_obj.get("direction"))
    # Web calls have no phone numbers; a phone call's remote party is the caller when inbound.
    phone_field = "from_number" if call_direction == "inbound" else "to_number"
    call_id = call_obj.get("call_id")

    event_type = canonical_type(NAME, provider_type, EVENT_TYPES)
    if provider_type == "call_ended" and (status in NOT_CONNECTED_STATUSES or reason in NOT_CONNECTED_REASONS):
        event_type = "call.failed"
    duration_ms = to_seconds(call_obj.get("duration_ms"))

    call = Call(
        id=as_str(call_id) if isinstance(call_id, str | int) and not isinstance(call_id, bool) else None,
        direction=call_direction,
        phone=as_str(call_obj.get(phone_field)) if call_direction else None,
        status=status,
        outcome=reason,
        duration_seconds=duration_ms / 1000 if duration_ms is not None else None,
        started_at=to_iso(call_obj.get("start_timestamp")),
        ended_at=to_iso(call_obj.get("end_timestamp")),
        recording_url=as_str(call_obj.get("recording_url")),
        transcript=as_str(call_obj.get("transcript")),
        summary=as_str(analysis.get("call_summary")),
        extraction=dict_or_empty(analysis.get("custom_analysis_data")),
        metadata=dict_or_empty(call_obj.get("metadata")),
    )
    parts = (provider_type, call_id) if provider_type in ONCE_PER_CALL else ()
    # Retell's payload has no event time; the call's own start / end stands in where it is the event.
    occurred_at = {"call_started": call.started_at, "call_ended": call.ended_at}.get(provider_type)
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, *parts),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=occurred_at,
        call=call,
        raw=payload,
    )


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    verify=verify,
    sign=sign,
)
