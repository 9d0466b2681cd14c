"""``provider = "hmac"``: any HMAC-signed JSON webhook, described by the source's configuration.

For platforms without a module of their own. The source names the signature
scheme (`shared.providers.hmacscheme`: header, hash, encoding, prefix, signed
template, timestamp header, unit and tolerance, id header) and which JSON
fields give the event type and its identity::

    [[sources]]                      # GitHub
    name = "github"
    provider = "hmac"
    secrets = ["env:GITHUB_WEBHOOK_SECRET"]
    signature_header = "X-Hub-Signature-256"
    prefix = "sha256="
    type_field = "action"
    identity_fields = ["repository.id", "issue.id", "action"]

A type that is already canonical (``call.completed``…) is kept; any other flows
on as ``hmac.<type>``. Without ``identity_fields`` (or when one is missing in a
payload) the identity is the SHA-256 of the raw body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import CANONICAL_TYPES, Call, Event
from hooklane.shared.providers.base import (
    Clock,
    Headers,
    NormalizeError,
    OptionError,
    Provider,
    Request,
    as_str,
    build_event,
    identity_of,
    require_object,
    to_iso,
)
from hooklane.shared.providers.hmacscheme import (
    HEADER_RE,
    SCHEME_KEYS,
    HmacScheme,
    parse_scheme,
    sign_scheme,
    verify_scheme,
)

NAME = "hmac"
OPTION_KEYS = (*SCHEME_KEYS, "type_field", "type_header", "identity_fields", "call_id_field", "time_field")
_PATH_RE = re.compile(r"^[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*$")

# Canonical names pass through unchanged (a sender that already speaks them); nothing else is mapped.
EVENT_TYPES: dict[str, str] = {}


@dataclass(frozen=True)
class Options:
    scheme: HmacScheme
    type_field: tuple[str, ...] = ("type",)
    identity_fields: tuple[tuple[str, ...], ...] = ()
    call_id_field: tuple[str, ...] | None = None
    time_field: tuple[str, ...] | None = None
    type_header: str | None = None

    @property
    def delivery_id_header(self) -> str | None:
        return self.scheme.id_header

    @property
    def forward_headers(self) -> tuple[str, ...]:
        return tuple(h for h in (self.type_header, self.scheme.id_header) if h)

    def describe(self) -> str:
        identity = (", ".join(".".join(p) for p in self.identity_fields) or self.scheme.id_header
                    or "SHA-256 of the body")
        kind = self.type_header or ".".join(self.type_field)
        return f"{self.scheme.describe()}; type from {kind}, identity {identity}"


DEFAULT_OPTIONS = Options(scheme=HmacScheme(signature_header="x-signature"))


def options(raw: Mapping[str, Any]) -> Options:
    if "type_header" in raw and "type_field" in raw:
        raise OptionError("type_header", "set type_header or type_field, not both")
    type_header = raw.get("type_header")
    if type_header is not None and (not isinstance(type_header, str) or not HEADER_RE.match(type_header)):
        raise OptionError("type_header", f"{type_header!r} is not an HTTP header name")
    return Options(
        type_header=type_header.lower() if type_header else None,
        scheme=parse_scheme(raw),
        type_field=_path(raw, "type_field") or ("type",),
        identity_fields=tuple(_path_of("identity_fields", p) for p in _str_list(raw, "identity_fields")),
        call_id_field=_path(raw, "call_id_field"),
        time_field=_path(raw, "time_field"),
    )


def _path(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    v = raw.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise OptionError(key, "must be a dotted JSON path such as \"data.call_id\"")
    return _path_of(key, v)


def _path_of(key: str, v: str) -> tuple[str, ...]:
    if not _PATH_RE.match(v):
        raise OptionError(key, f"{v!r} is not a dotted JSON path such as \"data.call_id\"")
    return tuple(v.split("."))


def _str_list(raw: Mapping[str, Any], key: str) -> list[str]:
    v = raw.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise OptionError(key, "must be a list of dotted JSON paths")
    return v


def verify(body: bytes, headers: Headers, secrets: Sequence[bytes], *, tolerance: int = 300,
           now: Clock = time.time, request: Request, options: Options) -> None:
    verify_scheme(options.scheme, body, headers, secrets, tolerance=tolerance, now=now, request=request)


def sign(body: bytes, secret: bytes, *, timestamp: int | None = None, request: Request | None = None,
         options: Options = DEFAULT_OPTIONS, delivery_id: str | None = None) -> dict[str, str]:
    return sign_scheme(options.scheme, body, secret, timestamp=timestamp, request=request, delivery_id=delivery_id)


def at(payload: Any, path: tuple[str, ...] | None) -> Any:
    for key in path or ():
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def normalize(payload: Any, delivery: Delivery, options: Options | None = None) -> Event:
    options = options or DEFAULT_OPTIONS
    payload = require_object(payload, NAME)
    if options.type_header:
        provider_type = delivery.headers.get(options.type_header)
        where = f"{options.type_header} header"
    else:
        provider_type = at(payload, options.type_field)
        where = repr(".".join(options.type_field))
    if not isinstance(provider_type, str) or not provider_type.strip():
        raise NormalizeError(f"hmac delivery has no {where} event name")
    event_type = provider_type if provider_type in CANONICAL_TYPES else f"{NAME}.{provider_type}"
    # The sender's delivery id identifies the event when the payload has no fields configured for it.
    parts = [at(payload, p) for p in options.identity_fields] or (
        [delivery.delivery_id] if options.scheme.id_header else [])
    return build_event(
        delivery=delivery,
        identity=identity_of(delivery.body, provider_type, *parts) if parts else identity_of(delivery.body),
        provider_type=provider_type,
        event_type=event_type,
        occurred_at=to_iso(at(payload, options.time_field)) if options.time_field else None,
        call=Call(id=as_str(at(payload, options.call_id_field))) if options.call_id_field else Call(),
        raw=payload,
    )


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
