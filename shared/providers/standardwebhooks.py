"""Standard Webhooks (and Svix): HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<raw body>".

Headers: ``webhook-id`` (the message id, the same on every retry: hooklane's
delivery id), ``webhook-timestamp`` (unix seconds, ±``tolerance``; exactly 300 s
passes), ``webhook-signature`` (space-separated ``<version>,<base64>``
entries; any ``v1`` entry that matches passes, which is how a sender rotates
without downtime; other versions such as ``v1a`` are skipped). Svix's
``svix-id``/``svix-timestamp``/``svix-signature`` spelling is accepted when no
``webhook-id`` is present.

Secrets: ``whsec_`` + base64 of the key (the prefix may be left out; missing
padding is restored); a list for rotation.

Divergences from standardwebhooks 1.1.0 / svix 2.9.1, each on input a sender
following the spec never produces:
- base64 is strict, in signatures and secrets: the SDK's decoder silently drops
  characters outside the alphabet, so ``v1,<sig>!!`` verified there;
- a signature entry without exactly one comma, or with broken base64, is a 401
  with a reason (the SDK raises ValueError / binascii.Error: a 500);
- ``webhook-timestamp`` must be integer seconds as the spec says (the SDK
  parses it with float() and accepts ``1794999998.9``);
- the HMAC covers the raw body bytes (the SDK decodes them as UTF-8 first and
  raises UnicodeDecodeError on anything else); ``webhook-id`` must be ASCII;
- when a request carries both spellings, ``webhook-*`` wins (svix prefers
  ``svix-*``): it is the spec's name and the delivery id hooklane records. The
  spelling is chosen by the id header, so the id a request was verified with is
  the one its event is identified by: a ``webhook-id`` next to ``svix-*``
  signatures is refused, not an unsigned id that would dodge the dedupe.

Payload: passed through as a generic event. ``type`` (when a string) is the
provider type; the canonical types pass as themselves, anything else flows on
as ``standardwebhooks.<type>``, a payload without one as
``standardwebhooks.message``. ``timestamp`` is the event time; call fields are
read from ``data`` under their canonical names (``call_id`` or ``callId``, ``direction``,
``phone``, ``status``, ``outcome``, ``duration_seconds``, …) when present.
Identity: the message id (``webhook-id``, else ``svix-id``), which the spec
makes the idempotency key: the same on every retry of a message, different for
every message, so two messages with the same bytes are two events. A delivery
without one (an unsigned source) falls back to the SHA-256 of the raw body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence
from typing import Any

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import CANONICAL_TYPES, Call, Event
from hooklane.shared.providers.base import (
    Clock,
    Headers,
    Provider,
    SignatureError,
    as_str,
    b64decode_strict,
    build_event,
    canonical_type,
    check_timestamp,
    dict_or_empty,
    direction,
    first,
    identity_of,
    require_header,
    require_object,
    to_iso,
    to_seconds,
)

NAME = "standardwebhooks"
ID_HEADER = "webhook-id"
SECRET_PREFIX = b"whsec_"
UNTYPED = "message"

# A sender that already speaks hooklane's canonical types needs no mapping.
EVENT_TYPES = {t: t for t in CANONICAL_TYPES}


def signing_key(secret: bytes) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError (without the value) if it is not one.

    Also the key of the http handler's outgoing signatures (its secret is checked with it at config load).
    """
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX):]
    try:
        key = b64decode_strict(text.decode("ascii"), padding_optional=True)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("a Standard Webhooks secret is base64, optionally prefixed whsec_") from None
    if not key:
        raise ValueError("a Standard Webhooks secret may not be empty")
    return key


def check_secret(secret: bytes) -> None:
    signing_key(secret)


def _signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("ascii") + body


def _spelling(headers: Headers) -> str:
    return "svix-" if headers.get("webhook-id") is None and headers.get("svix-id") is not None else "webhook-"


def message_id(headers: Headers) -> str | None:
    """The id a request is verified with: ``webhook-id``, else ``svix-id``; None without either."""
    return headers.get(_spelling(headers) + "id")


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time) -> None:
    prefix = _spelling(headers)
    signatures = _v1_signatures(require_header(headers, prefix + "signature"))
    msg_id = require_header(headers, prefix + "id")
    if not msg_id.isascii() or not msg_id.isprintable():
        raise SignatureError(f"{prefix}id must be printable ASCII")
    timestamp = require_header(headers, prefix + "timestamp")
    check_timestamp(timestamp, tolerance, now)
    keys = []
    for secret in secrets:
        try:
            keys.append(signing_key(secret))
        except ValueError:
            continue  # refused at config load; a key given programmatically simply never matches
    if not keys:
        raise SignatureError("no signing secret configured")
    content = _signed_content(msg_id, timestamp, body)
    matched = False
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        for signature in signatures:
            # No early exit: the time taken does not tell which secret or entry matched.
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureError("signature does not match")


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded v1 entries of a signature header; SignatureError if an entry is malformed or none is v1."""
    found = []
    for entry in header.split():
        version, comma, value = entry.partition(",")
        if not comma or not version or "," in value:
            raise SignatureError("signature entry is not '<version>,<base64>'")
        if version != "v1":
            continue  # v1a (Ed25519) and later versions: not HMAC, not ours to check
        try:
            digest = b64decode_strict(value)
        except ValueError:
            raise SignatureError("v1 signature is not base64") from None
        if len(digest) != hashlib.sha256().digest_size:
            raise SignatureError("v1 signature is not a 32-byte HMAC-SHA256")
        found.append(digest)
    if not found:
        raise SignatureError("no v1 signature")
    return found


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None,
         delivery_id: str | None = None) -> dict[str, str]:
    msg_id = delivery_id or f"msg_{uuid.uuid4().hex}"
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_key(secret), _signed_content(msg_id, ts, body), hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
    }


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    name = payload.get("type")
    provider_type = name if isinstance(name, str) and name.strip() else UNTYPED
    data = dict_or_empty(payload.get("data"))
    call_id = first(data, "call_id", "callId")
    call = Call(
        id=as_str(call_id) if isinstance(call_id, str | int) and not isinstance(call_id, bool) else None,
        direction=direction(data.get("direction")),
        phone=_text(first(data, "phone", "phone_number", "phoneNumber")),
        status=_text(data.get("status")),
        outcome=_text(data.get("outcome")),
        duration_seconds=to_seconds(first(data, "duration_seconds", "durationSeconds")),
        started_at=to_iso(first(data, "started_at", "startedAt")),
        ended_at=to_iso(first(data, "ended_at", "endedAt")),
        recording_url=_text(first(data, "recording_url", "recordingUrl")),
        transcript=_text(data.get("transcript")),
        summary=_text(data.get("summary")),
        extraction=dict_or_empty(data.get("extraction")),
        metadata=dict_or_empty(data.get("metadata")),
    )
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, message_id(delivery.headers)),
        provider_type=provider_type,
        event_type=canonical_type(NAME, provider_type, EVENT_TYPES),
        occurred_at=to_iso(payload.get("timestamp")),
        call=call,
        raw=payload,
    )


def _text(value: Any) -> str | None:
    # A generic sender's field may hold anything; only a scalar is text worth carrying.
    return as_str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None


PROVIDER = Provider(
    name=NAME,
    forward_headers=(ID_HEADER, "svix-id"),
    delivery_id_header=ID_HEADER,
    delivery_id_other_headers=("svix-id",),
    signs_delivery_id=True,
    event_types=EVENT_TYPES,
    normalize=normalize,
    verify=verify,
    sign=sign,
    check_secret=check_secret,
)
