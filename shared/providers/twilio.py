"""Twilio Voice status and recording status callbacks (../shared/providers/twilio.md).

Signature: ``X-Twilio-Signature = base64(HMAC-SHA1(auth token, URL + sorted form
params))``, where URL is the full URL Twilio requested, query string included:
behind a proxy that is not the URL ingest sees, so a source sets ``public_url``
(the URL given to Twilio, without its query; the query is taken from each
request as sent). Form POSTs append ``name + value`` for every parameter in
sorted order (each distinct value of a repeated name, sorted; blanks count);
GET callbacks and JSON bodies append nothing, and a JSON body must hash to the
URL's ``bodySHA256``. The signature over the URL with or without the default
port (``:443`` / ``:80``) is accepted, as Twilio's RequestValidator does. A
SharedKey delivery (``X-Twilio-Webhooks-Signature-Settings: …,algorithm=
HMAC_SHA256``) is HMAC-SHA256 with the SharedKey secret. No timestamp: replay
protection is the dedupe stage.

Body: ``application/x-www-form-urlencoded`` (or the query string of a GET).
Event name: ``RecordingStatus`` for recording callbacks, else ``CallStatus``.
Identity: ``CallSid`` + ``CallStatus`` (+ ``SequenceNumber``); recordings
``RecordingSid`` + ``RecordingStatus``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hooklane.shared.envelope import Delivery, iso_utc
from hooklane.shared.events import Call, Event
from hooklane.shared.providers.base import (
    Clock,
    Headers,
    NormalizeError,
    OptionError,
    Provider,
    Request,
    SignatureError,
    as_str,
    build_event,
    canonical_type,
    decode_base64,
    identity_of,
    require_header,
    require_object,
    to_seconds,
)
from hooklane.shared.providers.hmacscheme import check_public_url

NAME = "twilio"
SIGNATURE_HEADER = "x-twilio-signature"
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
DEFAULT_PORTS = {"https": 443, "http": 80}
# A status callback has ~30 parameters; far more is not Twilio and not worth parsing.
MAX_PARAMS = 1000

EVENT_TYPES = {
    "queued": "call.started",
    "initiated": "call.started",
    "ringing": "call.ringing",
    "in-progress": "call.answered",
    "completed": "call.completed",
    "busy": "call.failed",
    "failed": "call.failed",
    "no-answer": "call.failed",
    "canceled": "call.failed",
}
# RecordingStatus values; in-progress and absent flow on as twilio.recording.<status>.
RECORDING_TYPES = {"completed": "recording.ready"}
RECORDING_PREFIX = "recording."
# Kept in call.metadata: what a consumer needs to join or diagnose (the full form stays in `raw`).
METADATA_FIELDS = ("AccountSid", "RecordingSid", "ParentCallSid", "SipResponseCode", "ErrorCode", "RecordingSource",
                   "RecordingStartTime")


@dataclass(frozen=True)
class Options:
    public_url: str | None = None

    def describe(self) -> str:
        url = self.public_url or "the URL ingest sees (set public_url behind a proxy)"
        return f"X-Twilio-Signature over {url} + query + form; no timestamp"


def options(raw: Mapping[str, Any]) -> Options:
    url = raw.get("public_url")
    if url is None:
        return Options()
    if not isinstance(url, str):
        raise OptionError("public_url", "must be the URL given to Twilio, as a string")
    check_public_url(url)
    return Options(public_url=url)


# --------------------------------------------------------------------------- signature


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time, request: Request, options: Options = Options()) -> None:
    # tolerance/now are part of the verifier contract; Twilio signs no timestamp to check them against.
    provided = _signature(require_header(headers, SIGNATURE_HEADER))
    digest = _algorithm(headers.get(SETTINGS_HEADER))
    url = request.signed_url(options.public_url)
    query = dict(_pairs(request.query, "query string"))
    if "bodySHA256" in query:
        expected_hash = hashlib.sha256(body).hexdigest().encode("ascii")
        if not hmac.compare_digest(expected_hash, query["bodySHA256"].lower().encode("ascii", "replace")):
            raise SignatureError("body does not match the URL's bodySHA256")
        params = b""
    elif request.method == "GET" or not body:
        params = b""
    elif body.lstrip()[:1] == b"{":
        raise SignatureError("a JSON body is only signed with bodySHA256 in the URL")
    else:
        params = signed_params(body)
    if not secrets:
        raise SignatureError("no signing secret configured")
    matched = False
    for variant in url_variants(url):
        message = variant.encode("utf-8", "surrogateescape") + params
        for secret in secrets:
            # No early exit: the time taken does not tell which secret or URL form matched.
            matched |= hmac.compare_digest(hmac.new(secret, message, digest).digest(), provided)
    if not matched:
        raise SignatureError("signature does not match")


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None, request: Request | None = None,
         options: Options = Options(), delivery_id: str | None = None, algorithm: str = "HMAC_SHA1",
         ) -> dict[str, str]:
    """What Twilio sends for `body` at `request`'s URL (a GET or JSON body: the URL alone).

    `timestamp` and `delivery_id` are part of the signer contract; Twilio signs neither.
    """
    request = request or Request(url="https://example.com/webhooks/twilio")
    url = request.signed_url(options.public_url)
    query = dict(_pairs(request.query, "query string"))
    params = b"" if request.method == "GET" or not body or "bodySHA256" in query else signed_params(body)
    mac = hmac.new(secret, url.encode("utf-8") + params, ALGORITHMS[algorithm]).digest()
    headers = {"X-Twilio-Signature": base64.b64encode(mac).decode("ascii")}
    if algorithm != "HMAC_SHA1":
        headers["X-Twilio-Webhooks-Signature-Settings"] = f"key=hooklane-send,algorithm={algorithm}"
    return headers


def signed_params(body: bytes) -> bytes:
    """``name + value`` of every form parameter, names sorted, each distinct value sorted (Twilio's order)."""
    values: dict[str, set[str]] = {}
    for k, v in _pairs(_form_text(body), "form body"):
        values.setdefault(k, set()).add(v)
    return "".join(k + v for k in sorted(values) for v in sorted(values[k])).encode("utf-8")


def url_variants(url: str) -> list[str]:
    """`url` as given, plus the same URL with the default port added or removed (Twilio signs either)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a Host header like "[" or "h:x": nothing Twilio could have signed
        raise SignatureError("request URL is not a valid URL") from None
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.netloc.rsplit("@", 1)[-1]
    if default is None:
        return [url]
    if port is None:
        other = host + f":{default}"
    elif port == default:
        other = host.rsplit(":", 1)[0]
    else:
        return [url]
    return [url, urlunsplit(parts._replace(netloc=other))]


def _signature(value: str) -> bytes:
    raw = decode_base64(value)
    if len(raw) not in (20, 32):
        raise SignatureError("signature is not an HMAC-SHA1 or HMAC-SHA256 digest")
    return raw


def _algorithm(settings: str | None) -> Any:
    name = "HMAC_SHA1"
    for part in (settings or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "algorithm" and value.strip():
            name = value.strip().upper()
    if name not in ALGORITHMS:
        raise SignatureError("unsupported signature algorithm in X-Twilio-Webhooks-Signature-Settings")
    return ALGORITHMS[name]


def _form_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("form body is not UTF-8") from None


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMS)
    except (UnicodeDecodeError, ValueError):
        raise SignatureError(f"{what} is not valid URL encoding") from None


# --------------------------------------------------------------------------- wire format


def check_body(body: bytes, method: str) -> str | None:
    """Ingest's check: a form (or JSON object) POST, or a GET whose parameters are in the URL."""
    if method == "GET":
        return None
    stripped = body.strip()
    if not stripped:
        return "empty body"
    if stripped[:1] == b"{" or (body.isascii() and b"=" in body):
        return None
    return "body must be application/x-www-form-urlencoded or a JSON object"


def parse(delivery: Delivery) -> dict[str, Any]:
    """Form body, JSON body or (GET) query parameters -> one dict; repeated names keep their first value."""
    body = delivery.body
    if body.lstrip()[:1] == b"{":
        payload = json.loads(body, parse_constant=_refuse_constant)
        if not isinstance(payload, dict):
            raise ValueError("JSON body is not an object")
        return payload
    if not body.strip():
        return dict(delivery.query)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMS)
    except UnicodeDecodeError as exc:
        raise ValueError(f"form body is not UTF-8: {exc}") from None
    out: dict[str, Any] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def _refuse_constant(name: str) -> float:
    # NaN/Infinity are not JSON (RFC 8259), as in the worker's own JSON parse.
    raise ValueError(f"{name} is not valid JSON")


def encode(payload: Mapping[str, Any]) -> bytes:
    """A payload as Twilio puts it on the wire (`hooklane send`)."""
    return urlencode({k: "" if v is None else str(v) for k, v in payload.items()}).encode("ascii")


# --------------------------------------------------------------------------- normalizing


def normalize(payload: Any, delivery: Delivery, options: Options | None = None) -> Event:
    # `options` (public_url) only matter to the verifier; normalize takes them as every contextual provider does.
    payload = require_object(payload, NAME)
    recording = "RecordingStatus" in payload
    status = payload.get("RecordingStatus" if recording else "CallStatus")
    if not isinstance(status, str) or not status.strip():
        raise NormalizeError("twilio payload has neither a CallStatus nor a RecordingStatus")
    if recording:
        provider_type = RECORDING_PREFIX + status
        event_type = RECORDING_TYPES.get(status) or f"{NAME}.{provider_type}"
        parts: list[Any] = [payload.get("RecordingSid"), status]
    else:
        provider_type = status
        event_type = canonical_type(NAME, status, EVENT_TYPES)
        parts = [payload.get("CallSid"), status]
        if payload.get("SequenceNumber") not in (None, ""):
            parts.append(payload.get("SequenceNumber"))
    raw_direction = as_str(payload.get("Direction")) or ""
    call_direction = "inbound" if raw_direction == "inbound" else (
        "outbound" if raw_direction.startswith("outbound") else None)
    phone = payload.get("From") if call_direction == "inbound" else payload.get("To")
    # Recording callbacks carry no event time (RecordingStartTime is when recording began): received_at stands.
    occurred_at = _rfc2822(payload.get("Timestamp"))
    call_status = as_str(payload.get("CallStatus"))
    call = Call(
        id=as_str(payload.get("CallSid")),
        direction=call_direction,
        phone=as_str(phone) if call_direction else None,
        status=call_status,
        outcome=call_status if event_type == "call.failed" else as_str(payload.get("AnsweredBy")),
        duration_seconds=to_seconds(payload.get("RecordingDuration" if recording else "CallDuration")),
        ended_at=occurred_at if event_type in ("call.completed", "call.failed") else None,
        recording_url=as_str(payload.get("RecordingUrl")),
        metadata={k: payload[k] for k in METADATA_FIELDS if payload.get(k) not in (None, "")},
    )
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, *parts),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=occurred_at,
        call=call,
        raw=payload,
    )


def _rfc2822(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return iso_utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    verify=verify,
    sign=sign,
    methods=("POST", "GET"),
    option_keys=("public_url",),
    options=options,
    takes_context=True,
    check_body=check_body,
    parse=parse,
    encode=encode,
    content_type="application/x-www-form-urlencoded",
)
