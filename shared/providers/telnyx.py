"""Telnyx Call Control (Voice API v2): Ed25519 over "<timestamp>|<raw body>".

Headers: ``telnyx-signature-ed25519`` (base64 of the 64-byte signature) and
``telnyx-timestamp`` (unix seconds), ±``tolerance`` seconds (telnyx-python's
``TIMESTAMP_TOLERANCE_SECONDS = 300``; exactly 300 s passes). The signed
message is the timestamp header text, a literal ``|`` and the raw body bytes.

Secrets: the account's public key as Mission Control shows it — base64 of the
raw 32-byte Ed25519 key; a list for rotation, any one may verify. Telnyx holds
the private key, so `sign()` needs one of its own: a source secret may instead
be an Ed25519 private key in PEM (``openssl genpkey -algorithm ed25519``; its
line breaks may be written as spaces or ``\\n`` for one-line env files); the
verifier derives its public key, and `sign()`, the tests and ``hooklane send``
sign with it. That is for tests and ``hooklane dev`` only: in production the
source holds the public key and hooklane cannot sign for it. The public key of
such a PEM file, in the form a production source takes:
``openssl pkey -in key.pem -pubout -outform DER | tail -c 32 | base64``.

Divergences from telnyx-python: its generated ``webhooks.unwrap()`` checks a
Standard Webhooks HMAC that Telnyx does not send (the hand-written Ed25519 path
replaced it in v4.90.0); here only Ed25519 is accepted. Base64 is strict
(characters Python's decoder would skip are refused), and every malformed
header is a SignatureError, never an exception of the crypto library.

Body: ``{"data": {"record_type": "event", "event_type", "id", "occurred_at",
"payload": {call_control_id, call_leg_id, call_session_id, from, to,
direction, state, start_time, hangup_cause, recording_urls…}}, "meta": {…}}``.
Identity: ``data.id`` (one per event, the same on a redelivery). Only JSON
POSTs are accepted: TeXML applications' form-encoded Twilio-style callbacks
and ``webhook_url_method=GET`` deliveries are not handled by this module.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Call, Event
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
    data_object,
    dict_or_empty,
    direction,
    first,
    identity_of,
    require_header,
    require_name,
    require_object,
    to_iso,
)

NAME = "telnyx"
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
PEM_PRIVATE_KEY = b"-----BEGIN PRIVATE KEY-----"
PEM_END = b"-----END PRIVATE KEY-----"
_NO_WHITESPACE = str.maketrans("", "", " \t\r\n")

EVENT_TYPES = {
    "call.initiated": "call.started",
    "call.answered": "call.answered",
    "call.hangup": "call.completed",  # call.failed when the call was never answered (below)
    "call.recording.saved": "recording.ready",
    "call.recording.transcription.saved": "transcript.ready",
}

# hangup_cause values of a call that never connected; normal_clearing, time_limit and unspecified did.
NOT_CONNECTED_CAUSES = {"user_busy", "call_rejected", "timeout", "no_answer", "not_found", "originator_cancel"}


# --------------------------------------------------------------------------- keys


@functools.lru_cache(maxsize=64)
def _public_key(secret: bytes) -> Ed25519PublicKey:
    """The verifying key of a configured secret (base64 raw public key, or a PEM private key); ValueError."""
    if secret.lstrip().startswith(PEM_PRIVATE_KEY):
        return _private_key(secret).public_key()
    try:
        raw = b64decode_strict(secret.decode("ascii").strip(), padding_optional=True)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("a Telnyx public key is the base64 of 32 bytes (Mission Control, Public Key)") from None
    if len(raw) != 32:
        raise ValueError(f"a Telnyx public key is 32 bytes, this one decodes to {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _private_key(secret: bytes) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM key; its line breaks may be spaces or literal \\n (one-line env files)."""
    body = secret.replace(b"\\n", b"\n").strip().removeprefix(PEM_PRIVATE_KEY).removesuffix(PEM_END)
    try:
        der = b64decode_strict(body.decode("ascii").translate(_NO_WHITESPACE))
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the PEM private key is not an Ed25519 key")
    return key


def check_secret(secret: bytes) -> None:
    _public_key(secret)


# --------------------------------------------------------------------------- signatures


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time) -> None:
    signature_text = require_header(headers, SIGNATURE_HEADER)
    timestamp = require_header(headers, TIMESTAMP_HEADER)
    check_timestamp(timestamp, tolerance, now)
    try:
        signature = b64decode_strict(signature_text)
    except ValueError:
        raise SignatureError("signature is not base64") from None
    if len(signature) != 64:
        raise SignatureError("signature is not a 64-byte Ed25519 signature")
    if not secrets:
        raise SignatureError("no public key configured")
    message = timestamp.encode("ascii") + b"|" + body
    for secret in secrets:
        try:
            key = _public_key(secret)
        except ValueError:
            continue  # refused at config load; a key given programmatically simply never matches
        try:
            # Public keys hold nothing secret: returning at the first match leaks nothing.
            key.verify(signature, message)
            return
        except InvalidSignature:
            continue
    raise SignatureError("signature does not match")


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Sign as Telnyx would; `secret` must be an Ed25519 private key in PEM (a public key cannot sign)."""
    if not secret.lstrip().startswith(PEM_PRIVATE_KEY):
        raise ValueError("telnyx: signing needs an Ed25519 private key in PEM (openssl genpkey -algorithm "
                         "ed25519); a source's Telnyx public key can only verify")
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = _private_key(secret).sign(ts.encode("ascii") + b"|" + body)
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode("ascii"),
        "telnyx-timestamp": ts,
    }


# --------------------------------------------------------------------------- normalizing


def normalize(payload: Any, delivery: Delivery) -> Event:
    payload = require_object(payload, NAME)
    envelope = data_object(payload, NAME)
    provider_type = require_name(envelope, "event_type", NAME)
    data = data_object(envelope, NAME, "payload")
    occurred_at = to_iso(envelope.get("occurred_at"))
    cause = as_str(data.get("hangup_cause"))
    # Only call.initiated says which way the call goes; later events of the leg leave it null.
    call_direction = direction(data.get("direction"))
    phone_field = {"inbound": "from", "outbound": "to"}.get(call_direction or "")

    event_type = canonical_type(NAME, provider_type, EVENT_TYPES)
    started_at = to_iso(data.get("start_time"))
    ended_at = None
    duration = None
    if provider_type == "call.hangup":
        # The hangup has no end_time field: the event's own time is when the call ended.
        ended_at = occurred_at
        if cause in NOT_CONNECTED_CAUSES:
            event_type = "call.failed"  # no duration: nobody was ever on the line, it only rang
        else:
            duration = _seconds_between(started_at, ended_at)
    recordings = dict_or_empty(data.get("recording_urls")) or dict_or_empty(data.get("public_recording_urls"))
    metadata = {k: data[k] for k in ("call_control_id", "call_session_id", "connection_id", "client_state")
                if isinstance(data.get(k), str)}

    call = Call(
        id=as_str(data.get("call_leg_id")) if isinstance(data.get("call_leg_id"), str) else None,
        direction=call_direction,
        phone=as_str(data.get(phone_field)) if phone_field else None,
        status=as_str(data.get("state")),
        outcome=cause,
        duration_seconds=duration,
        started_at=started_at,
        ended_at=ended_at,
        recording_url=as_str(first(recordings, "mp3", "wav")),
        transcript=as_str(first(data, "transcription_text", "transcript")),
        metadata=metadata,
    )
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, envelope.get("id")),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=occurred_at,
        call=call,
        raw=payload,
    )


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return seconds if seconds >= 0 else None


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    verify=verify,
    sign=sign,
    check_secret=check_secret,
)
