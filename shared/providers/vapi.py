"""Vapi server messages (../shared/providers/vapi.md): ``{"message": {"type": …, "call": {…}, …}}``.

Authentication is chosen per source with ``auth`` (Vapi's credential types):

- ``"bearer"`` (default, Vapi's most common): ``Authorization: Bearer <token>``;
  ``header`` and ``bearer_prefix = false`` follow a credential's ``headerName`` /
  ``bearerPrefixEnabled``.
- ``"secret"``: the legacy ``X-Vapi-Secret: <token>`` (inline ``server.secret``).
- ``"hmac"``: Vapi's ``HmacAuthenticationPlan`` as the keys of the generic HMAC
  scheme (`hmacscheme`), with Vapi's defaults: ``signature_header = "x-signature"``,
  ``timestamp_header = "x-timestamp"``, ``template = "{timestamp}.{body}"``,
  sha256, hex. ``include_timestamp = false`` drops the timestamp (template
  ``{body}``); ``{svix-id}`` in a template is the ``id_header`` value.

In every mode ``secrets`` holds the token(s) / HMAC key(s), several for rotation.
Token modes authenticate the sender only: no body integrity, no replay window.

Mapping: status-update by ``status``; ``ended`` is the one completion of a call
(``call.completed``, or ``call.failed`` when ``endedReason`` says it never
connected). The end-of-call-report that follows becomes ``transcript.ready``
(transcript, summary, recording, structured data), never a second completion.
Every other message type flows on as ``vapi.<type>``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hooklane.shared.envelope import Delivery
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
    dict_or_empty,
    first,
    identity_of,
    require_header,
    require_object,
    to_iso,
    to_seconds,
)
from hooklane.shared.providers.hmacscheme import SCHEME_KEYS, HmacScheme, parse_scheme, sign_scheme, verify_scheme

NAME = "vapi"
AUTH_MODES = ("bearer", "secret", "hmac")
OPTION_KEYS = ("auth", "header", "bearer_prefix", "include_timestamp", *SCHEME_KEYS)
HMAC_DEFAULTS = {"signature_header": "x-signature", "timestamp_header": "x-timestamp",
                 "template": "{timestamp}.{body}", "algorithm": "sha256", "encoding": "hex"}

EVENT_TYPES = {
    "end-of-call-report": "transcript.ready",
}
STATUS_TYPES = {
    "scheduled": "call.started",
    "queued": "call.started",
    "ringing": "call.ringing",
    "in-progress": "call.answered",
    "forwarding": "call.updated",
    # "ended" is completed or failed by endedReason; not-found / deletion-failed flow on.
}
# endedReason values (and prefixes) meaning the call never connected.
NOT_CONNECTED = {"customer-did-not-answer", "customer-busy", "twilio-failed-to-connect-call",
                 "vonage-failed-to-connect-call", "vonage-rejected", "customer-did-not-give-microphone-permission"}
NOT_CONNECTED_PREFIXES = ("sip-outbound-", "call.start.error-", "assistant-request-", "call.ringing.",
                          "pipeline-error-twilio-", "phone-call-provider-")
# Message types that happen once per call (per status); every other kind repeats within a call,
# so its identity also takes the message timestamp.
ONCE_PER_CALL = {"status-update", "end-of-call-report"}


@dataclass(frozen=True)
class Options:
    auth: str = "bearer"
    header: str = "authorization"
    bearer_prefix: bool = True
    scheme: HmacScheme | None = None

    @property
    def delivery_id_header(self) -> str | None:
        return self.scheme.id_header if self.scheme is not None else None

    @property
    def forward_headers(self) -> tuple[str, ...]:
        return (self.delivery_id_header,) if self.delivery_id_header else ()

    def describe(self) -> str:
        if self.scheme is not None:
            return "vapi HMAC: " + self.scheme.describe()
        return f"vapi {self.auth} token in {self.header}" + (" (Bearer)" if self.bearer_prefix else "")


def options(raw: Mapping[str, Any]) -> Options:
    auth = raw.get("auth", "bearer")
    if auth not in AUTH_MODES:
        raise OptionError("auth", f"must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
    if auth != "hmac":
        stray = [k for k in (*SCHEME_KEYS, "include_timestamp") if k in raw]
        if stray:
            raise OptionError(stray[0], f"only used with auth = \"hmac\" (this source has auth = {auth!r})")
        if "tolerance_seconds" in raw:
            raise OptionError("tolerance_seconds", f"auth = {auth!r} sends no timestamp to check it against")
        default_header = "authorization" if auth == "bearer" else "x-vapi-secret"
        header = raw.get("header", default_header)
        if not isinstance(header, str) or not header.strip():
            raise OptionError("header", "must be an HTTP header name")
        prefix = raw.get("bearer_prefix", auth == "bearer")
        if not isinstance(prefix, bool):
            raise OptionError("bearer_prefix", "must be true or false")
        return Options(auth=auth, header=header.strip().lower(), bearer_prefix=prefix)
    for key in ("header", "bearer_prefix"):
        if key in raw:
            raise OptionError(key, "only used with auth = \"bearer\" or \"secret\"")
    include_timestamp = raw.get("include_timestamp", True)
    if not isinstance(include_timestamp, bool):
        raise OptionError("include_timestamp", "must be true or false")
    defaults = dict(HMAC_DEFAULTS)
    if not include_timestamp:
        if "timestamp_header" in raw:
            raise OptionError("timestamp_header", "set, but include_timestamp = false")
        del defaults["timestamp_header"]
        defaults["template"] = "{body}"
    raw = dict(raw)
    if isinstance(raw.get("template"), str):
        raw["template"] = raw["template"].replace("{svix-id}", "{id}")  # Vapi's name for the message id
    return Options(auth="hmac", scheme=parse_scheme(raw, defaults=defaults))


DEFAULT_OPTIONS = Options()


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time, request: Request, options: Options = DEFAULT_OPTIONS) -> None:
    if options.scheme is not None:
        verify_scheme(options.scheme, body, headers, secrets, tolerance=tolerance, now=now, request=request)
        return
    value = require_header(headers, options.header)
    if options.bearer_prefix:
        scheme, sep, value = value.partition(" ")
        if not sep or scheme.lower() != "bearer":
            raise SignatureError(f"{options.header} must be 'Bearer <token>'")
        value = value.strip()
    if not secrets:
        raise SignatureError("no token configured")
    given = value.encode("utf-8", "surrogateescape")
    matched = False
    for token in secrets:
        matched |= hmac.compare_digest(token, given)
    if not matched:
        raise SignatureError("token does not match")


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None, request: Request | None = None,
         options: Options = DEFAULT_OPTIONS, delivery_id: str | None = None) -> dict[str, str]:
    if options.scheme is not None:
        return sign_scheme(options.scheme, body, secret, timestamp=timestamp, request=request,
                           delivery_id=delivery_id)
    token = secret.decode("utf-8")
    return {options.header: f"Bearer {token}" if options.bearer_prefix else token}


# --------------------------------------------------------------------------- normalizing


def normalize(payload: Any, delivery: Delivery, options: Options | None = None) -> Event:
    payload = require_object(payload, NAME)
    message = payload.get("message")
    if not isinstance(message, dict):
        raise NormalizeError("vapi payload has no 'message' object")
    provider_type = message.get("type")
    if not isinstance(provider_type, str) or not provider_type.strip():
        raise NormalizeError("vapi message has no 'type' name")
    call_obj = dict_or_empty(message.get("call"))
    artifact = dict_or_empty(message.get("artifact"))
    analysis = dict_or_empty(message.get("analysis"))
    recording = dict_or_empty(artifact.get("recording"))
    status = as_str(message.get("status")) if provider_type == "status-update" else as_str(call_obj.get("status"))
    ended_reason = as_str(first(message, "endedReason") or call_obj.get("endedReason"))
    started_at = to_iso(first(message, "startedAt") or call_obj.get("startedAt"))
    ended_at = to_iso(first(message, "endedAt") or call_obj.get("endedAt"))

    if provider_type == "status-update":
        event_type = STATUS_TYPES.get(status or "") or (
            _ended_type(ended_reason, started_at) if status == "ended" else f"{NAME}.{provider_type}")
    else:
        event_type = canonical_type(NAME, provider_type, EVENT_TYPES)
    report = provider_type == "end-of-call-report"
    customer = dict_or_empty(message.get("customer")) or dict_or_empty(call_obj.get("customer"))
    call_id = as_str(call_obj.get("id"))
    call = Call(
        id=call_id,
        direction={"inboundPhoneCall": "inbound", "outboundPhoneCall": "outbound"}.get(call_obj.get("type")),
        phone=as_str(customer.get("number")),
        status=status,
        outcome=ended_reason,
        duration_seconds=to_seconds(first(message, "durationSeconds")) if report else None,
        started_at=started_at,
        ended_at=ended_at,
        recording_url=as_str(first(artifact, "recordingUrl") or dict_or_empty(recording.get("mono")).get("combinedUrl")
                             or message.get("recordingUrl")) if report else None,
        transcript=as_str(artifact.get("transcript") or message.get("transcript")) if report else None,
        summary=as_str(analysis.get("summary") or message.get("summary")) if report else None,
        extraction=dict_or_empty(analysis.get("structuredData")) if report else {},
        metadata=dict_or_empty(call_obj.get("metadata")),
    )
    parts: list[Any] = [provider_type, call_id]
    if provider_type == "status-update":
        parts.append(status)
    elif provider_type not in ONCE_PER_CALL:
        parts.append(message.get("timestamp"))
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, *parts),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=to_iso(message.get("timestamp")),
        call=call,
        raw=payload,
    )


def _ended_type(reason: str | None, started_at: str | None) -> str:
    if reason and (reason in NOT_CONNECTED or reason.startswith(NOT_CONNECTED_PREFIXES)
                   or "failed-to-connect" in reason or (reason == "manually-canceled" and started_at is None)):
        return "call.failed"
    return "call.completed"


PROVIDER = Provider(
    name=NAME,
    event_types=EVENT_TYPES,
    normalize=normalize,
    verify=verify,
    sign=sign,
    option_keys=OPTION_KEYS,
    options=options,
    takes_context=True,
)
