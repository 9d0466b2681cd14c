"""`http`: POST the canonical event as JSON to a downstream URL (a CRM, a data pipeline).

- ``Idempotency-Key: <event id>`` on every attempt, so the receiver can drop our retries.
- With ``secret = "env:NAME"``, Standard Webhooks headers (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature: v1,<base64>``) so the receiver can
  verify us with any Standard Webhooks library. A ``whsec_`` secret is base64
  after the prefix, as that spec says; any other secret is used as raw bytes.
- One pooled `requests.Session` per handler per process, its pool sized for the worker's
  concurrency (a job in flight never waits for, or throws away, a connection); (connect, read) timeouts.
- 2xx: done. Timeouts, connection errors, 408, 425, 429 and 5xx: transient
  (``Retry-After`` honoured). Any other status: permanent.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from hooklane.shared.config import HandlerConfig
from hooklane.shared.events import dumps
from hooklane.workers.errors import PermanentError, TransientError

TRANSIENT_STATUSES = {408, 425, 429}
USER_AGENT = "hooklane/0.1 (+webhook relay)"


def standard_webhooks_key(secret: bytes) -> bytes:
    if secret.startswith(b"whsec_"):
        return base64.b64decode(secret[len(b"whsec_"):])
    return secret


def sign_standard_webhook(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
    }


def safe_url(url: str) -> str:
    """The URL without credentials or query (either may hold a secret) for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpHandler:
    def __init__(self, cfg: HandlerConfig, session: requests.Session | None = None, *, pool_size: int = 16) -> None:
        assert cfg.url, "validated by shared.config"
        self.cfg = cfg
        self.url = cfg.url
        self.where = safe_url(cfg.url)
        self.timeout = (cfg.connect_timeout_seconds, cfg.timeout_seconds)
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 16), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __call__(self, event: dict[str, Any]) -> None:
        body = dumps(event).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": event["id"],
            **self.cfg.headers,
        }
        if self.cfg.secret is not None:
            headers.update(sign_standard_webhook(self.cfg.secret.reveal(), event["id"], int(time.time()), body))
        try:
            resp = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout,
                                     allow_redirects=False)
        except requests.Timeout:
            raise TransientError(f"timeout posting to {self.where}") from None
        except requests.ConnectionError:
            raise TransientError(f"connection failed to {self.where}") from None
        except requests.RequestException as exc:
            raise TransientError(f"request to {self.where} failed: {type(exc).__name__}") from None
        status = resp.status_code
        resp.close()
        if 200 <= status < 300:
            return
        message = f"{self.where} answered {status}"
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientError(message, status=status, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        raise PermanentError(message, status=status)
