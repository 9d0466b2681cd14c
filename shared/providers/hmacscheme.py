"""An HMAC signature scheme described by configuration, shared by the ``hmac`` source and vapi's HMAC mode.

A scheme names where the signature is (a header, optionally one ``key=value``
entry of a comma-separated header, as Stripe's ``t=…,v1=…``), how it is
written (hex or base64, optional prefix), which hash, and what was signed: a
template over ``{body}``, ``{timestamp}``, ``{id}``, ``{url}`` and
``{method}``. The template is split into literal bytes and placeholders once,
at config load, so a delivery is verified over the raw body bytes without
decoding or formatting them. Anything that cannot work (an unknown
placeholder, a ``{timestamp}`` with no timestamp header, a timestamp that is
not signed, a tolerance with nothing to check it against) is an OptionError
naming the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hooklane.shared.providers.base import (
    Clock,
    Headers,
    OptionError,
    Request,
    SignatureError,
    decode_base64,
    require_header,
)

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
ENCODINGS = ("hex", "base64")
UNITS = {"s": 1.0, "ms": 1000.0}
PLACEHOLDERS = ("body", "timestamp", "id", "url", "method")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_HEX = frozenset("0123456789abcdefABCDEF")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Longest timestamp accepted: 13 digits is milliseconds until the year 2286; longer is not a timestamp.
_MAX_TS_DIGITS = 13

# The keys a scheme reads from a [[sources]] table, with the generic source's defaults.
SCHEME_KEYS = ("signature_header", "signature_key", "algorithm", "encoding", "prefix", "template",
               "timestamp_header", "timestamp_key", "timestamp_unit", "id_header", "secret_is_base64", "public_url")


@dataclass(frozen=True)
class HmacScheme:
    signature_header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    # Literal bytes and placeholder names, in order; placeholders are str, literals bytes.
    template: tuple[bytes | str, ...] = ("body",)
    signature_key: str | None = None
    timestamp_header: str | None = None
    timestamp_key: str | None = None
    timestamp_unit: str = "s"
    id_header: str | None = None
    secret_is_base64: bool = False
    public_url: str | None = None
    template_text: str = field(default="{body}", compare=False)

    @property
    def digest_size(self) -> int:
        return ALGORITHMS[self.algorithm]().digest_size

    def describe(self) -> str:
        where = f"{self.signature_header}" + (f" {self.signature_key}=" if self.signature_key else "")
        text = f"HMAC-{self.algorithm.upper()} {self.encoding} in {where}{self.prefix} over {self.template_text!r}"
        if self.timestamp_header:
            ts_where = self.timestamp_header + (f" {self.timestamp_key}=" if self.timestamp_key else "")
            text += f", timestamp ({self.timestamp_unit}) in {ts_where}"
        if self.id_header:
            text += f", id in {self.id_header}"
        if self.public_url:
            text += f", url {self.public_url}"
        return text

    def keys(self, secrets: Sequence[bytes]) -> list[bytes]:
        if not self.secret_is_base64:
            return list(secrets)
        # The option parser never sees the resolved secrets: a secret that is not base64 is skipped, never matching.
        out = []
        for s in secrets:
            try:
                out.append(base64.b64decode(s, validate=True))
            except (binascii.Error, ValueError):
                continue
        return out


# --------------------------------------------------------------------------- config


def parse_scheme(raw: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None,
                 require_signature_header: bool = True) -> HmacScheme:
    """The scheme a source's keys describe (``defaults`` fill what the source leaves out)."""
    values = {**(defaults or {}), **{k: raw[k] for k in SCHEME_KEYS if k in raw}}

    def text(key: str, *, allow_empty: bool = False) -> str | None:
        v = values.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or (not v and not allow_empty):
            raise OptionError(key, "must be a non-empty string")
        return v

    def header(key: str) -> str | None:
        v = text(key)
        if v is not None and not HEADER_RE.match(v):
            raise OptionError(key, f"{v!r} is not an HTTP header name")
        return v.lower() if v else None

    def choice(key: str, allowed: Sequence[str], default: str) -> str:
        v = values.get(key, default)
        if v not in allowed:
            raise OptionError(key, f"must be one of {', '.join(allowed)}, got {v!r}")
        return v

    signature_header = header("signature_header")
    if signature_header is None:
        if require_signature_header:
            raise OptionError("signature_header", "required: the header that carries the signature")
        signature_header = ""
    signature_key = text("signature_key")
    timestamp_header = header("timestamp_header")
    timestamp_key = text("timestamp_key")
    id_header = header("id_header")
    for key, v in (("signature_key", signature_key), ("timestamp_key", timestamp_key)):
        if v is not None and not _KEY_RE.match(v):
            raise OptionError(key, f"{v!r} is not a key of a key=value list")
    if timestamp_key is not None and timestamp_header is None:
        raise OptionError("timestamp_key", "needs timestamp_header (it may name the signature header)")
    template_text = text("template") or "{body}"
    template = _compile_template(template_text)
    used = {p for p in template if isinstance(p, str)}
    if "body" not in used:
        raise OptionError("template", "must include {body}: a signature that does not cover the body proves nothing")
    if "timestamp" in used and timestamp_header is None:
        raise OptionError("template", "uses {timestamp} but no timestamp_header says where the timestamp is")
    if timestamp_header is not None and "timestamp" not in used:
        raise OptionError("timestamp_header", "the timestamp must be signed: add {timestamp} to template")
    if "id" in used and id_header is None:
        raise OptionError("template", "uses {id} but no id_header says where the delivery id is")
    if "tolerance_seconds" in raw and timestamp_header is None:
        raise OptionError("tolerance_seconds", "needs timestamp_header: there is no timestamp to check it against")
    public_url = text("public_url")
    if public_url is not None:
        check_public_url(public_url)
    secret_is_base64 = values.get("secret_is_base64", False)
    if not isinstance(secret_is_base64, bool):
        raise OptionError("secret_is_base64", "must be true or false")
    return HmacScheme(
        signature_header=signature_header,
        algorithm=choice("algorithm", tuple(ALGORITHMS), "sha256"),
        encoding=choice("encoding", ENCODINGS, "hex"),
        prefix=text("prefix", allow_empty=True) or "",
        template=template,
        signature_key=signature_key,
        timestamp_header=timestamp_header,
        timestamp_key=timestamp_key,
        timestamp_unit=choice("timestamp_unit", tuple(UNITS), "s"),
        id_header=id_header,
        secret_is_base64=secret_is_base64,
        public_url=public_url,
        template_text=template_text,
    )


def _compile_template(text: str) -> tuple[bytes | str, ...]:
    parts: list[bytes | str] = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(text):
        literal = text[pos:m.start()]
        name = m.group(1)
        if name not in PLACEHOLDERS:
            raise OptionError("template", f"unknown placeholder {{{name}}} (known: "
                              f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
        if literal:
            parts.append(_literal(literal))
        parts.append(name)
        pos = m.end()
    if text[pos:]:
        parts.append(_literal(text[pos:]))
    return tuple(parts)


def _literal(text: str) -> bytes:
    if "{" in text or "}" in text:
        raise OptionError("template", f"stray brace in {text!r}; placeholders look like {{body}}")
    return text.encode("utf-8")


def check_public_url(url: str, key: str = "public_url") -> None:
    if not url.startswith(("https://", "http://")) or "://" not in url or len(url.split("/", 3)[2]) == 0:
        raise OptionError(key, f"must be an absolute http(s) URL, got {url!r}")
    if "?" in url or "#" in url:
        raise OptionError(key, "give the URL without a query string: the query is taken from each request as sent")


# --------------------------------------------------------------------------- verify / sign


def verify_scheme(scheme: HmacScheme, body: bytes, headers: Headers, secrets: Sequence[bytes], *,
                  tolerance: int, now: Clock, request: Request) -> None:
    provided = [_decode_signature(scheme, v) for v in _signature_values(scheme, headers)]
    timestamp = _timestamp(scheme, headers, tolerance, now) if scheme.timestamp_header else None
    # The id header is only required when it is signed; otherwise it is the delivery id, when sent.
    delivery_id = require_header(headers, scheme.id_header) if "id" in scheme.template else None
    message = render(scheme, body, timestamp=timestamp, delivery_id=delivery_id, request=request)
    keys = scheme.keys(secrets)
    if not keys:
        raise SignatureError("no signing secret configured")
    digest = ALGORITHMS[scheme.algorithm]
    matched = False
    for key in keys:
        expected = hmac.new(key, message, digest).digest()
        for sig in provided:
            # No early exit: the time taken does not tell which secret or which signature matched.
            matched |= hmac.compare_digest(expected, sig)
    if not matched:
        raise SignatureError("signature does not match")


def sign_scheme(scheme: HmacScheme, body: bytes, secret: bytes, *, timestamp: int | None = None,
                delivery_id: str | None = None, request: Request | None = None) -> dict[str, str]:
    """The headers a sender using `scheme` would put on `body` (tests, `hooklane send`)."""
    headers: dict[str, str] = {}
    ts = None
    if scheme.timestamp_header:
        seconds = time.time() if timestamp is None else timestamp
        ts = str(int(seconds * UNITS[scheme.timestamp_unit]))
    if scheme.id_header:
        delivery_id = delivery_id or f"msg_{uuid.uuid4().hex}"
        headers[scheme.id_header] = delivery_id
    message = render(scheme, body, timestamp=ts, delivery_id=delivery_id, request=request or Request())
    key = scheme.keys([secret])[0]
    raw = hmac.new(key, message, ALGORITHMS[scheme.algorithm]).digest()
    sig = scheme.prefix + (raw.hex() if scheme.encoding == "hex" else base64.b64encode(raw).decode("ascii"))
    if scheme.signature_key:
        sig = f"{scheme.signature_key}={sig}"
    if scheme.timestamp_header and scheme.timestamp_key:
        entry = f"{scheme.timestamp_key}={ts}"
        if scheme.timestamp_header == scheme.signature_header:
            sig = f"{entry},{sig}"
        else:
            headers[scheme.timestamp_header] = entry
    elif scheme.timestamp_header and ts is not None:
        headers[scheme.timestamp_header] = ts
    headers[scheme.signature_header] = sig
    return headers


def render(scheme: HmacScheme, body: bytes, *, timestamp: str | None, delivery_id: str | None,
           request: Request) -> bytes:
    values = {
        "body": body,
        "timestamp": (timestamp or "").encode("ascii"),
        "id": (delivery_id or "").encode("utf-8", "surrogateescape"),
        "url": request.signed_url(scheme.public_url).encode("utf-8", "surrogateescape"),
        "method": request.method.encode("ascii", "replace"),
    }
    return b"".join(p if isinstance(p, bytes) else values[p] for p in scheme.template)


def _signature_values(scheme: HmacScheme, headers: Headers) -> list[str]:
    value = require_header(headers, scheme.signature_header)
    if scheme.signature_key is None:
        return [value]
    found = [v for k, v in key_values(value, scheme.signature_header) if k == scheme.signature_key]
    if not found:
        raise SignatureError(f"{scheme.signature_header} has no {scheme.signature_key}= entry")
    return found


def key_values(value: str, header: str) -> list[tuple[str, str]]:
    """``k=v,k=v`` entries; an entry without ``=`` makes the whole header malformed."""
    out = []
    for entry in value.split(","):
        k, sep, v = entry.strip().partition("=")
        if not sep or not k:
            raise SignatureError(f"{header} is not a list of key=value entries")
        out.append((k, v.strip()))
    return out


def _decode_signature(scheme: HmacScheme, value: str) -> bytes:
    if scheme.prefix:
        if not value.startswith(scheme.prefix):
            raise SignatureError(f"signature must start with {scheme.prefix!r}")
        value = value[len(scheme.prefix):]
    size = scheme.digest_size
    if scheme.encoding == "hex":
        if len(value) != 2 * size:
            raise SignatureError(f"signature is not a {2 * size}-character hex digest")
        if not all(c in _HEX for c in value):  # bytes.fromhex would skip whitespace
            raise SignatureError("signature is not hex")
        return bytes.fromhex(value)
    raw = decode_base64(value)
    if len(raw) != size:
        raise SignatureError(f"signature is not a {size}-byte {scheme.algorithm} digest")
    return raw


def _timestamp(scheme: HmacScheme, headers: Headers, tolerance: int, now: Clock) -> str:
    assert scheme.timestamp_header is not None
    value = require_header(headers, scheme.timestamp_header)
    if scheme.timestamp_key is not None:
        found = [v for k, v in key_values(value, scheme.timestamp_header) if k == scheme.timestamp_key]
        if len(found) != 1:
            raise SignatureError(f"{scheme.timestamp_header} needs exactly one {scheme.timestamp_key}= entry")
        value = found[0]
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_TS_DIGITS:
        raise SignatureError(f"timestamp is not unix {'milliseconds' if scheme.timestamp_unit == 'ms' else 'seconds'}")
    if abs(now() - int(value) / UNITS[scheme.timestamp_unit]) > tolerance:
        raise SignatureError("timestamp outside the tolerance window")
    return value
