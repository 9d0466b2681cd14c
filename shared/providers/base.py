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
- ``samples()`` — realistic payloads of the documented shape, one per event type.

and registers them as one `Provider` in ``shared/providers/__init__.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


@dataclass(frozen=True)
class Provider:
    name: str
    event_types: Mapping[str, str]
    normalize: Callable[[Any, Delivery], Event]
    samples: Callable[[], dict[str, dict[str, Any]]]
    # None for providers that do not sign: their sources authenticate by URL token and/or IP.
    verify: Callable[..., None] | None = None
    sign: Callable[..., dict[str, str]] | None = None
    # HTTP methods the provider may be configured to call with.
    methods: tuple[str, ...] = ("POST",)
    # Lower-case request headers the workers need (kept in the envelope).
    forward_headers: tuple[str, ...] = ()
    delivery_id_header: str | None = None

    @property
    def signs(self) -> bool:
        return self.verify is not None


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
        except ValueError:
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
