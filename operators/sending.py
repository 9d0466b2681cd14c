"""Build provider webhooks exactly as the provider would put them on the wire.

`hooklane send`, the end-to-end tests and the benchmarks all call
`build_delivery`, so a smoke test, a load test and a newcomer's first webhook
speak one wire format: the body is serialised once and the provider's own
`sign()` signs those exact bytes, the way ingest will verify them.
"""

from __future__ import annotations

import json
import secrets as _secrets
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

from hooklane.shared.config import SourceConfig
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import OptionError, Provider, Request

USER_AGENT = "hooklane-send/0.1"

# Keys that carry an event's identity in the providers' payloads (PRODUCT.md, "natural
# identity"): at the top level (volubile's call object) or under "data" / "call" (the others).
# Changing them per message is what makes two sends two distinct events.
IDENTITY_KEYS = ("id", "call_id", "callId", "campaignId", "CallSid", "RecordingSid")
# Objects below the top level that hold identity keys: "data" (most), vapi's "message" and its "call".
IDENTITY_PATHS = (("data",), ("call",), ("message",), ("message", "call"))  # ("call",): retell

# uuid5 namespace, so a varied UUID stays a well-formed UUID and is reproducible from (run, seq).
_NAMESPACE = uuid.UUID("6f1c1c4e-5d8e-4c33-9d0e-2f6a1f0e7b42")


class WireDelivery(NamedTuple):
    """One webhook request: POST ``<url><url_suffix>`` with `headers` and exactly `body`."""

    headers: dict[str, str]
    body: bytes
    url_suffix: str


class SendError(ValueError):
    """The delivery cannot be built (unknown provider or event, missing secret)."""


def get_provider(provider: str | Provider) -> Provider:
    if isinstance(provider, Provider):
        return provider
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise SendError(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})") from None


def new_run_id() -> str:
    """A short random tag; mixed into every varied id so two runs never collide in the dedupe window."""
    return _secrets.token_hex(3)


def event_types(provider: str | Provider) -> list[str]:
    return get_provider(provider).sample_types()


def pick_event_type(provider: str | Provider, event_type: str | None, seq: int) -> str:
    """`event_type` if given (checked), else the provider's sample types in turn."""
    types = event_types(provider)
    if event_type is None:
        return types[seq % len(types)]
    if event_type not in types:
        name = get_provider(provider).name
        raise SendError(f"{name} has no sample event {event_type!r} (known: {', '.join(types)})")
    return event_type


def sample_payload(provider: str | Provider, event_type: str, *, seq: int, run: str) -> dict[str, Any]:
    """The provider's sample of `event_type` with its identity fields made unique to (run, seq)."""
    p = get_provider(provider)
    payload = p.sample(pick_event_type(p, event_type, seq))
    _vary_ids(payload, seq=seq, run=run)
    for path in IDENTITY_PATHS:
        inner: Any = payload
        for key in path:
            inner = inner.get(key) if isinstance(inner, dict) else None
        if isinstance(inner, dict):
            _vary_ids(inner, seq=seq, run=run)
    return payload


def encode(payload: Any) -> bytes:
    # Compact JSON, as the providers send it; encoded exactly once, then signed and sent as these bytes.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signing_secret(source: SourceConfig | None) -> bytes | None:
    # The first secret of a rotation list is the current one: it is what the provider signs with.
    return source.secrets[0].reveal() if source is not None and source.secrets else None


def url_token(source: SourceConfig | None) -> str | None:
    return source.tokens[0].reveal().decode("utf-8") if source is not None and source.tokens else None


def wire_headers(
    provider: str | Provider,
    body: bytes,
    *,
    secret: bytes | None,
    delivery_id: str | None = None,
    timestamp: int | None = None,
    url: str = "",
    options: Any = None,
) -> dict[str, str]:
    """The request headers for exactly `body`: content type, signature (when there is a secret), delivery id.

    `url` (the full URL the request goes to) and `options` (the source's) matter to providers that
    sign more than the body (twilio signs the URL; a vapi or hmac source has its own scheme).
    """
    p = get_provider(provider)
    headers = {"Content-Type": p.content_type, "User-Agent": f"{USER_AGENT} ({p.name})"}
    id_header = delivery_id_header(p, options)
    if id_header and delivery_id:
        headers[id_header] = delivery_id
    if secret is not None and p.sign is not None:
        try:
            if p.takes_context:
                base, _, query = url.partition("?")
                # A scheme that signs its id header gets the id to sign (or makes one up).
                headers.update(p.sign(body, secret, timestamp=timestamp, request=Request(url=base, query=query),
                                      options=_options(p, options), delivery_id=delivery_id))
            else:
                extra = {"delivery_id": delivery_id} if p.signs_delivery_id else {}
                headers.update(p.sign(body, secret, timestamp=timestamp, **extra))
        except ValueError as exc:  # a secret that cannot sign, e.g. a Telnyx public key
            raise SendError(str(exc)) from None
    return headers


def delivery_id_header(provider: str | Provider, options: Any = None) -> str | None:
    """The header a source of `provider` with these options takes its delivery id from (and `send` signs)."""
    id_headers = get_provider(provider).source_headers(options)[0]
    return id_headers[0] if id_headers else None


def _options(p: Provider, options: Any) -> Any:
    if options is not None:
        return options
    try:
        return p.default_options()
    except OptionError as exc:
        raise SendError(f"{p.name} signs as its source says ({exc}): pick a configured source "
                        "(--source / --config)") from None


def token_suffix(token: str | None, *, in_path: bool = False) -> str:
    """What to append to ``.../webhooks/<source>``: ``?token=…``, ``/<token>`` or nothing."""
    if token is None:
        return ""
    quoted = quote(token, safe="")
    return f"/{quoted}" if in_path else f"?token={quoted}"


def build_delivery(
    provider: str | Provider,
    source_config: SourceConfig | None,
    event_type: str | None = None,
    *,
    seq: int = 0,
    run: str = "",
    payload: Mapping[str, Any] | None = None,
    body: bytes | None = None,
    secret: bytes | None = None,
    token: str | None = None,
    timestamp: int | None = None,
    delivery_id: str | None = None,
    token_in_path: bool = False,
    url: str = "",
    options: Any = None,
) -> WireDelivery:
    """One signed delivery of `provider` for `source_config`.

    The body is, in order of precedence: `body` as given (a redelivery, a fixture
    file), `payload` serialised once, or the provider's sample of `event_type`
    (the sample types in turn when None) with ids unique to (`run`, `seq`).
    Secret and token come from `source_config` unless passed explicitly;
    `timestamp` signs as of another time (stale-delivery tests). `url` is where the
    request goes (before the token suffix): twilio signs it; `options` default to
    `source_config`'s.
    """
    p = get_provider(provider)
    if body is None:
        if payload is None:
            event_type = pick_event_type(p, event_type, seq)
            payload = sample_payload(p, event_type, seq=seq, run=run)
        body = encode(payload) if p.encode is None else p.encode(payload)
    if secret is None:
        secret = signing_secret(source_config)
    if token is None:
        token = url_token(source_config)
    if options is None and source_config is not None:
        options = source_config.options
    if delivery_id is None and delivery_id_header(p, options):
        delivery_id = f"dlv_{run}{'_' if run else ''}{seq}_{uuid.uuid4().hex[:8]}"
    suffix = token_suffix(token, in_path=token_in_path)
    headers = wire_headers(p, body, secret=secret, delivery_id=delivery_id, timestamp=timestamp,
                           url=with_suffix(url, suffix) if url else "", options=options)
    return WireDelivery(headers=headers, body=body, url_suffix=suffix)


def with_suffix(url: str, suffix: str) -> str:
    """`url` plus a token suffix, keeping any query the URL already has."""
    if not suffix:
        return url
    if suffix.startswith("?") and "?" in url:
        return f"{url}&{suffix[1:]}"
    if suffix.startswith("/") and "?" in url:
        base, query = url.split("?", 1)
        return f"{base.rstrip('/')}{suffix}?{query}"
    return url.rstrip("/") + suffix if suffix.startswith("/") else url + suffix


def _vary_ids(obj: dict[str, Any], *, seq: int, run: str) -> None:
    for key in IDENTITY_KEYS:
        if key in obj:
            obj[key] = _vary(obj[key], seq=seq, run=run)


def _vary(value: Any, *, seq: int, run: str) -> Any:
    """A value of the same shape (int stays int, UUID stays UUID) unique to (run, seq)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        # Numeric ids (voicekit's call_id) stay numbers: the run tag picks a block, seq an id in it.
        run_no = int(run, 16) if run and all(c in "0123456789abcdef" for c in run) else 0
        return run_no * 10_000_000 + seq + 1
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            return f"{value}_{run}_{seq}" if run else f"{value}_{seq}"
        return str(uuid.uuid5(_NAMESPACE, f"{value}:{run}:{seq}"))
    return value
