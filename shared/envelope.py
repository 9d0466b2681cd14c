"""The delivery envelope: what ingest hands the workers for one accepted request.

Format (version 1), stored as the single argument of the RQ job that ingest
writes, serialised by `Delivery.to_json` (one JSON object):

    v            1
    id           hooklane's id for this delivery: 32 hex chars, also the RQ job id
    source       configured source name (``/webhooks/<source>``)
    provider     provider module name
    received_at  ISO 8601 UTC with microseconds, when ingest accepted it
    method       HTTP method as received
    path         request path with any URL token replaced by "***"
    query        query parameters (first value of each), the "token" parameter removed
    headers      lower-case header names -> values; only the provider's
                 ``forward_headers`` plus content-type and user-agent. Signature
                 headers are never kept: workers do not need them and they are
                 credentials for a replay window.
    remote_addr  the TCP peer
    client_ip    the client after ``[ingest] trusted_proxies`` X-Forwarded-For hops
    delivery_id  the provider's delivery id header, or null
    body_b64     the request body exactly as received, base64 (JSON cannot hold bytes)

Workers read it with `Delivery.from_dict` (RQ's JSON serializer has parsed the job's
arguments); a dead letter stores the same dict, so a replay sees exactly what ingest saw.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ENVELOPE_VERSION = 1
# One encoder, built once: json.dumps builds a new JSONEncoder on every call that passes separators.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


class EnvelopeError(ValueError):
    """The stored envelope cannot be read (wrong version, missing field)."""


@dataclass(frozen=True)
class Delivery:
    id: str
    source: str
    provider: str
    received_at: str
    body: bytes
    method: str = "POST"
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    remote_addr: str = ""
    client_ip: str = ""
    delivery_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "id": self.id,
            "source": self.source,
            "provider": self.provider,
            "received_at": self.received_at,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "remote_addr": self.remote_addr,
            "client_ip": self.client_ip,
            "delivery_id": self.delivery_id,
            "body_b64": base64.b64encode(self.body).decode("ascii"),
        }

    def to_json(self) -> str:
        return _compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Delivery:
        if not isinstance(d, dict) or d.get("v") != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported delivery envelope version: {d.get('v') if isinstance(d, dict) else d!r}")
        try:
            return cls(
                id=d["id"],
                source=d["source"],
                provider=d["provider"],
                received_at=d["received_at"],
                body=base64.b64decode(d["body_b64"], validate=True),
                method=d.get("method", "POST"),
                path=d.get("path", ""),
                query=dict(d.get("query") or {}),
                headers=dict(d.get("headers") or {}),
                remote_addr=d.get("remote_addr", ""),
                client_ip=d.get("client_ip", ""),
                delivery_id=d.get("delivery_id"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise EnvelopeError(f"malformed delivery envelope: {exc!r}") from None


def log_delivery_id(provider_delivery_id: str | None, body: bytes) -> str:
    """The delivery id bound on every log line, ingest and worker alike: the provider's, else a body hash."""
    return provider_delivery_id or "sha256:" + hashlib.sha256(body).hexdigest()[:16]


def utc_now_iso() -> str:
    return iso_utc(datetime.now(UTC))


def iso_utc(dt: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix, the form used in every hooklane timestamp."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_utc(value: str | bytes | None) -> datetime | None:
    """An ISO 8601 time as hooklane and RQ write it (``Z`` or an offset; naive means UTC, as older RQ wrote it)
    -> an aware datetime; None when empty or unreadable (a Redis field read back may be missing or foreign)."""
    if not value:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
