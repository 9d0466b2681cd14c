"""The contract every provider module fulfils, and the helpers they share.

A provider module (``shared/providers/<name>.py``) defines:

- ``verify(body, headers, secrets, *, tolerance=300, now=time.time)`` — a pure
  function over the raw request bytes that returns None or raises
  `SignatureError` for every failure, malformed headers included. Providers
  that do not sign have no verifier: ingest authenticates their sources by URL
  token and/or IP allowlist (`shared.auth`), the same checks any source may add.
- ``sign(body, secret, *, timestamp=None)`` — the headers the provider would
  send; used by the tests and by ``hooklane send``.
- ``EVENT_TYPES`` — the mapping table: provider event name -> canonical type.
  Names missing from it flow on as ``<provider>.<name>``; nothing is dropped.
- ``normalize(payload, delivery, source)`` — payload (parsed JSON) -> `Event`.
- optionally ``check_secret(secret)`` — raises ValueError for a configured
  secret that can never verify (not a key of the provider's kind), so the
  config load fails naming it instead of every delivery failing with a 401.

and registers them as one `Provider` in ``shared/providers/__init__.py``. Its sample
payloads (`Provider.samples`, what ``hooklane send`` sends) are the real payload files
``tests/fixtures/<name>/<type>.json`` (``.form`` for a form-encoded provider): one source
for the tests and the package, which ships them as ``hooklane.shared.providers.samples``.

Providers whose signature covers more than body and headers (twilio signs the
URL and the form parameters), or that need per-source settings (vapi's auth
mode, the generic ``hmac`` scheme), set ``takes_context=True``: their
``verify`` then also receives ``request=`` (a frozen `Request`) and
``options=`` (what their ``options`` parser made of the source's own keys,
``option_keys``), and ``normalize`` receives ``options=``. Options may name headers
of their own (``delivery_id_header``, ``forward_headers``: a generic source's id and
type headers); ingest keeps them in the envelope as it does the provider's. Every
other provider keeps the plain signatures above. A provider whose wire format
is not a JSON object names its own ``check_body`` (ingest, 400 reason) and
``parse`` (worker, raw delivery -> payload).
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from hooklane.shared.envelope import Delivery, iso_utc
from hooklane.shared.events import Call, Event

Clock = Callable[[], float]
Headers = Mapping[str, str]  # lower-case names


class VerificationError(Exception):
    """The request is not authentic; `status` is the HTTP answer, `reason` a short safe text."""

    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignatureError(VerificationError):
    """Bad, missing, malformed or stale signature, or a bad / missing URL token (401)."""


class IPNotAllowed(VerificationError):
    status = 403


class NormalizeError(ValueError):
    """The payload cannot be read as this provider's event (permanent: dead-lettered, replayable)."""


class OptionError(ValueError):
    """A provider-specific source setting cannot work; `key` is the [[sources]] key to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Request:
    """The parts of the HTTP request a contextual verifier may sign over, besides body and headers.

    `url` is scheme://host[:port]/path as ingest saw it (no query); `query` the raw query
    string, byte-exact as received (percent-escapes and order kept: signatures cover it).
    """

    method: str = "POST"
    url: str = ""
    query: str = ""

    def signed_url(self, public_url: str | None) -> str:
        """The URL the sender was given: `public_url` (behind a proxy) or the one seen, plus the query as sent."""
        base = public_url or self.url
        return f"{base}?{self.query}" if self.query else base


_WS = b" \t\r\n"


def json_object_body(body: bytes, method: str) -> str | None:
    """Ingest's body check for JSON providers: None when acceptable, else the 400 reason."""
    stripped = body.lstrip(_WS)
    if not stripped:
        return "empty body"
    if stripped[:1] != b"{":
        return "body must be a JSON object"
    return None


@dataclass(frozen=True)
class Provider:
    name: str
    event_types: Mapping[str, str]
    normalize: Callable[..., Event]
    # None for providers that do not sign: their sources authenticate by URL token and/or IP.
    verify: Callable[..., None] | None = None
    sign: Callable[..., dict[str, str]] | None = None
    # HTTP methods the provider may be configured to call with.
    methods: tuple[str, ...] = ("POST",)
    # Lower-case request headers the workers need (kept in the envelope).
    forward_headers: tuple[str, ...] = ()
    delivery_id_header: str | None = None
    # Other spellings of delivery_id_header, read in this order when it is absent (Svix's svix-id).
    delivery_id_other_headers: tuple[str, ...] = ()
    # sign() takes `delivery_id=` and signs it: the id header is part of the signed content.
    signs_delivery_id: bool = False
    # Raises ValueError (a reason, never the value) for a configured secret that can never verify.
    check_secret: Callable[[bytes], None] | None = None
    # Extra [[sources]] keys this provider reads, and the parser that turns a source's table into
    # its typed, frozen options (raising OptionError naming the key); see the module docstring.
    option_keys: tuple[str, ...] = ()
    options: Callable[[Mapping[str, Any]], Any] | None = None
    takes_context: bool = False
    # Ingest's body check (None = acceptable, else the 400 reason) and the worker's body reader
    # (None = the worker's JSON parse).
    check_body: Callable[[bytes, str], str | None] = json_object_body
    parse: Callable[[Delivery], Any] | None = None
    # How `hooklane send` puts a sample payload on the wire (None: compact JSON).
    encode: Callable[[Mapping[str, Any]], bytes] | None = None
    content_type: str = "application/json"

    @property
    def signs(self) -> bool:
        return self.verify is not None

    def samples(self) -> dict[str, dict[str, Any]]:
        """A real payload per event type, from the shipped fixture files (fresh copies: callers may change them)."""
        return copy.deepcopy(load_samples(self.name))

    def sample_types(self) -> list[str]:
        return list(load_samples(self.name))

    def sample(self, provider_type: str) -> dict[str, Any]:
        """One sample, copied alone: a load run takes one per request, copying them all costs 8x (voipbin)."""
        return copy.deepcopy(load_samples(self.name)[provider_type])

    def verify_request(self, body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int,
                       now: Clock, request: Request, options: Any) -> None:
        """Call `verify` with the context it takes (the plain contract for providers that take none)."""
        if self.verify is None:
            return
        if self.takes_context:
            self.verify(body, headers, secrets, tolerance=tolerance, now=now, request=request,
                        options=self.default_options() if options is None else options)
        else:
            self.verify(body, headers, secrets, tolerance=tolerance, now=now)

    def normalize_payload(self, payload: Any, delivery: Delivery, options: Any = None) -> Event:
        if self.takes_context:
            return self.normalize(payload, delivery, options=options)  # None: the provider's defaults
        return self.normalize(payload, delivery)

    def source_headers(self, options: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(headers carrying the delivery id, the first present wins; headers kept for the workers) of a source
        with these options."""
        id_header = getattr(options, "delivery_id_header", None) or self.delivery_id_header
        id_headers = (id_header, *self.delivery_id_other_headers) if id_header else ()
        forward = (*self.forward_headers, *getattr(options, "forward_headers", ()))
        return id_headers, tuple(dict.fromkeys(forward))

    def default_options(self) -> Any:
        """The options of a source that sets none of this provider's keys (OptionError if some are required)."""
        return self.options({}) if self.options is not None else None


# The package the payload fixtures ship as: pyproject.toml maps it onto tests/fixtures/, so the tests and
# `hooklane send` read the same files in a checkout, an editable install and a wheel.
SAMPLES_PACKAGE = "hooklane.shared.providers.samples"


@functools.cache
def load_samples(provider: str) -> dict[str, dict[str, Any]]:
    """``<type>.json`` / ``<type>.form`` of the provider's fixture folder, by type; not the expected
    events, the signature vectors or the ``<type>--<variant>`` files (edge cases, not samples).

    Cached (a load run sends thousands): `Provider.samples` hands out copies.
    """
    folder = resources.files(SAMPLES_PACKAGE).joinpath(provider)
    samples: dict[str, dict[str, Any]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        stem, _, kind = entry.name.rpartition(".")
        if "--" in stem or stem.endswith(".expected") or stem == "vectors":
            continue
        if kind == "json":
            samples[stem] = json.loads(entry.read_text(encoding="utf-8"))
        elif kind == "form":
            samples[stem] = dict(parse_qsl(entry.read_text(encoding="utf-8").strip(), keep_blank_values=True,
                                           strict_parsing=True))
    if not samples:
        raise LookupError(f"no sample payloads for provider {provider!r} in {SAMPLES_PACKAGE}")
    return samples


# --------------------------------------------------------------------------- signatures


def hmac_sha256_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def require_header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError(f"missing {name} header")
    return value.strip()


def parse_hex_digest(value: str, prefix: str = "") -> str:
    """The lower-case hex of a SHA-256 digest header, or SignatureError if it is not one."""
    if prefix:
        if not value.startswith(prefix):
            raise SignatureError(f"signature must start with {prefix!r}")
        value = value[len(prefix):]
    if len(value) != 64:
        raise SignatureError("signature is not a 64-character hex SHA-256 digest")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise SignatureError("signature is not hex") from None
    return value.lower()


def decode_base64(value: str) -> bytes:
    """A base64 signature header's bytes, or SignatureError: strict, a stray character is an error, never dropped."""
    if not value.isascii():
        raise SignatureError("signature is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None


def check_digest(provided_hex: str, message: bytes, secrets: Sequence[bytes]) -> None:
    """Constant-time compare against every secret of a rotation list; any one may match."""
    if not secrets:
        raise SignatureError("no signing secret configured")
    provided = provided_hex.encode("ascii")
    matched = False
    for secret in secrets:
        # No early exit: the time taken does not tell which secret of the list matched.
        matched |= hmac.compare_digest(hmac_sha256_hex(secret, message).encode("ascii"), provided)
    if not matched:
        raise SignatureError("signature does not match")


def check_timestamp(value: str, tolerance: int, now: Clock) -> int:
    """Unix-seconds timestamp within ±tolerance of the clock (edges inclusive)."""
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise SignatureError("timestamp is not unix seconds")
    ts = int(value)
    if abs(now() - ts) > tolerance:
        raise SignatureError("timestamp outside the tolerance window")
    return ts


def b64decode_strict(value: str, *, padding_optional: bool = False) -> bytes:
    """Base64 that refuses what `base64.b64decode` silently drops (spaces, other characters), ValueError else."""
    if padding_optional:
        value += "=" * (-len(value) % 4)
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("not base64") from None


# --------------------------------------------------------------------------- normalizing


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def to_iso(value: Any) -> str | None:
    """Any timestamp a provider sends (ISO 8601 string, unix s/ms/ns number or digits) -> ISO UTC."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
            n = float(value)
            if not math.isfinite(n) or n < 0:
                return None
            # Magnitude tells the unit: s (1e9), ms (1e12), µs (1e15), ns (1e18).
            while n > 1e11:
                n /= 1000.0
            return iso_utc(datetime.fromtimestamp(n, UTC))
        if isinstance(value, str):
            text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
            if " " in text and "T" not in text:
                text = text.replace(" ", "T", 1)
            dt = datetime.fromisoformat(text)
            return iso_utc(dt)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def to_seconds(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            n = float(value)
        except (ValueError, OverflowError):  # OverflowError: an integer past a double's range
            return None
        # "nan"/"inf" parse as floats but are not JSON: an event must always serialise.
        return n if math.isfinite(n) else None
    return None


def as_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def direction(value: Any) -> str | None:
    """Provider direction words -> "inbound" / "outbound" / None."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    if v in ("inbound", "incoming", "in"):
        return "inbound"
    if v in ("outbound", "outgoing", "out"):
        return "outbound"
    return None


def canonical_type(provider: str, provider_type: str, table: Mapping[str, str]) -> str:
    return table.get(provider_type) or f"{provider}.{provider_type}"


def require_object(payload: Any, provider: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise NormalizeError(f"{provider} payload must be a JSON object, got {type(payload).__name__}")
    return payload


def data_object(payload: dict[str, Any], provider: str, key: str = "data") -> dict[str, Any]:
    data = payload.get(key)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NormalizeError(f"{provider} payload field {key!r} must be an object")
    return data


def build_event(
    *,
    delivery: Delivery,
    identity: str,
    provider_type: str,
    event_type: str,
    occurred_at: str | None,
    call: Call,
    raw: Any,
) -> Event:
    return Event(
        id=f"{delivery.source}:{identity}",
        source=delivery.source,
        provider=delivery.provider,
        type=event_type,
        provider_type=provider_type,
        occurred_at=occurred_at or delivery.received_at,
        received_at=delivery.received_at,
        delivery_id=delivery.delivery_id,
        call=call,
        raw=raw,
    )


def first(mapping: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` present with a non-empty value."""
    for k in keys:
        v = mapping.get(k)
        if v not in (None, ""):
            return v
    return None


def dict_or_empty(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def lowercase_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def require_name(payload: Mapping[str, Any], key: str, provider: str) -> str:
    """The provider's event name from `key`: a non-empty string, or NormalizeError (never KeyError)."""
    name = payload.get(key)
    if not isinstance(name, str) or not name.strip():
        raise NormalizeError(f"{provider} payload has no {key!r} name")
    return name


def identity_of(body: bytes, *parts: Any) -> str:
    """``part:part:…`` when every part is present, else the SHA-256 of the raw body.

    A missing part would make unrelated events collide on the same key, and the
    body hash is the PRODUCT.md fallback: a redelivery still maps to itself.
    """
    texts = [_id_text(p) for p in parts]
    if not texts or any(t is None for t in texts):
        return sha256_hex(body)
    return ":".join(t for t in texts if t is not None)


def _id_text(value: Any) -> str | None:
    # Only scalars identify anything; an object or list where an id belongs is not one.
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return as_str(value)
