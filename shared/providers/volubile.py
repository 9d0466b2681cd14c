"""Volubile (seeds/002): optional HMAC-SHA256 over the raw body, bare hex.

Header (only when a secret is enabled in Volubile's settings):
``X-Webhook-Signature: <hex>``. Ingest calls `verify` only for sources that
configure secrets, and then a missing header is refused like a bad one.
Body: the call object itself, identical to "Get a call" — no event field; the
event is the call's ``status`` (``COMPLETED`` / ``FAILED``).
Identity: ``id`` + ``status``.
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
    dict_or_empty,
    direction,
    hmac_sha256_hex,
    identity_of,
    parse_hex_digest,
    require_header,
    require_name,
    require_object,
    to_iso,
    to_seconds,
)

NAME = "volubile"
SIGNATURE_HEADER = "x-webhook-signature"

# Keyed by the call's `status`, exactly as Volubile spells it.
EVENT_TYPES = {
    "COMPLETED": "call.completed",
    "FAILED": "call.failed",
}


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time) -> None:
    # tolerance/now are part of the verifier contract; Volubile sends no timestamp to check them against.
    signature = parse_hex_digest(require_header(headers, SIGNATURE_HEADER))
    check_digest(signature, body, secrets)


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    return {"X-Webhook-Signature": hmac_sha256_hex(secret, body)}


def extraction_of(call: dict[str, Any]) -> dict[str, Any]:
    """`extractorData` (already flattened by Volubile) plus the classifiers under "classifiers".

    The flattened ``extractorData`` / ``classifierData`` forms are used rather than
    the ``extractors`` / ``classifiers`` lists because they are what a handler
    reads (``extraction["customer"]["firstname"]``); the lists stay in ``raw``.
    Classifiers go under their own key so a classifier can never overwrite an
    extractor of the same name; should an extractor itself be called
    "classifiers", the classifier results win, being the documented key.
    """
    extraction = dict_or_empty(call.get("extractorData"))
    classifiers = call.get("classifierData")
    if isinstance(classifiers, dict):
        extraction["classifiers"] = dict(classifiers)
    return extraction


def primary_classification(call: dict[str, Any]) -> str | None:
    """The value of the PRIMARY classifier: Volubile's one headline verdict on the call.

    It is what the `outcomes` filters of handlers (e.g. suppression on "DNC")
    can match; SECONDARY classifiers stay in ``extraction["classifiers"]``.
    """
    classifiers = call.get("classifiers")
    for c in classifiers if isinstance(classifiers, list) else ():
        if isinstance(c, dict) and c.get("type") == "PRIMARY" and isinstance(c.get("value"), str):
            return as_str(c["value"])
    return None


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    provider_type = require_name(payload, "status", NAME)
    ended_at = to_iso(payload.get("endTime"))
    call = Call(
        id=as_str(payload.get("id")),
        direction=direction(payload.get("type")),
        phone=as_str(payload.get("phone")),
        status=provider_type,
        outcome=primary_classification(payload),
        duration_seconds=to_seconds(payload.get("duration")),
        started_at=to_iso(payload.get("startTime")),
        ended_at=ended_at,
        recording_url=as_str(payload.get("recordingUrl")),
        transcript=as_str(payload.get("transcript")),
        summary=as_str(payload.get("summary")),
        extraction=extraction_of(payload),
        metadata=dict_or_empty(payload.get("context")),
    )
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, payload.get("id"), provider_type),
        provider_type=provider_type,
        event_type=canonical_type(NAME, provider_type, EVENT_TYPES),
        # The webhook fires once the call is over; `created` is when the record was written, later still.
        occurred_at=ended_at or to_iso(payload.get("created")),
        call=call,
        raw=payload,
    )


def samples() -> dict[str, dict[str, Any]]:
    # The document's example, verbatim.
    completed: dict[str, Any] = {
        "id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "phone": "+33612345678",
        "type": "INBOUND",
        "duration": 360,
        "startTime": "2024-07-30T14:35:00Z",
        "endTime": "2024-07-30T14:41:00Z",
        "anonymous": False,
        "status": "COMPLETED",
        "extractors": [
            {
                "name": "customer",
                "value": [
                    {"name": "firstname", "value": ["John"]},
                    {"name": "lastname", "value": ["Doe"]},
                    {"name": "address", "value": ["123 Main St"]},
                ],
            },
            {"name": "example", "value": ["example1", "example2"]},
        ],
        "extractorData": {
            "customer": {"firstname": "John", "lastname": "Doe", "address": "123 Main St"},
            "example": "example1",
        },
        "classifiers": [
            {"name": "Customer's request", "value": "Refund", "type": "PRIMARY"},
            {"name": "Sentiment", "value": "Positive", "type": "SECONDARY"},
        ],
        "classifierData": {"Customer's request": "Refund", "Sentiment": "Positive"},
        "context": {
            "firstName": "firstname",
            "lastName": "lastname",
            "commandNumber": "5HZ99FRT",
            "system.phone": "+33612345678",
        },
        "recorded": True,
        "summary": "Discussed project requirements and next steps.",
        "created": "2024-07-30T14:45:00Z",
    }
    failed: dict[str, Any] = {
        "id": "7f1d2a9e-5b3c-4e8a-9c41-2b6e0d8f3a17",
        "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "phone": "+33698765432",
        "type": "OUTBOUND",
        "duration": 0,
        "startTime": "2024-07-30T15:02:00Z",
        "endTime": "2024-07-30T15:02:30Z",
        "anonymous": False,
        "status": "FAILED",
        "extractors": [],
        "extractorData": {},
        "classifiers": [],
        "classifierData": {},
        "context": {"firstName": "Marie", "lastName": "Curie", "commandNumber": "7KQ12LMN",
                    "system.phone": "+33698765432"},
        "recorded": False,
        "summary": None,
        "created": "2024-07-30T15:02:31Z",
    }
    return {"COMPLETED": completed, "FAILED": failed}


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    samples=samples,
    verify=verify,
    sign=sign,
)
