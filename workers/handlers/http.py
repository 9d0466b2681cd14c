"""`http`: POST the canonical event as JSON to a downstream URL (a CRM, a data pipeline).

- ``Idempotency-Key: <event id>`` on every attempt, so the receiver can drop our retries.
  Header values are bytes on the wire and an event id is whatever the provider sent
  (``日本-1``, an emoji, even CR/LF), so ids go out percent-encoded (`header_value`):
  the UTF-8 bytes of every character outside printable ASCII, and of ``%`` itself,
  as ``%XX``. Ids of printable ASCII without ``%`` or spaces (nearly all) go unchanged;
  the encoding is the same on every attempt and replay, distinct ids never share a
  key, and ``urllib.parse.unquote(key)`` gives the event id back.
- With ``secret = "env:NAME"``, Standard Webhooks headers (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature: v1,<base64>``) so the receiver can
  verify us with any Standard Webhooks library. ``webhook-id`` is the same encoded
  id, and that is what is signed: receivers check the header's value as it came.
  The secret is base64, with or without the ``whsec_`` prefix, as that spec says
  (checked at config load).
- One pooled `requests.Session` per handler per process, its pool sized for the worker's
  concurrency (a job in flight never waits for, or throws away, a connection); (connect, read) timeouts.
- 2xx: done. Timeouts, connection errors, 408, 425, 429 and 5xx: transient
  (``Retry-After`` honoured). Any other status: permanent.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from hooklane.shared.config import HandlerConfig
from hooklane.shared.events import dumps
from hooklane.shared.providers import standardwebhooks
from hooklane.shared.redaction import safe_url
from hooklane.workers.errors import PermanentError, TransientError

TRANSIENT_STATUSES = {408, 425, 429}
USER_AGENT = "hooklane/0.1 (+webhook relay)"
# Sent as is: printable ASCII but "%", which must be escaped too or "%41" and "A" would share a key.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def header_value(text: str) -> str:
    """`text` as an HTTP header value: UTF-8 percent-encoded outside printable ASCII, and "%" too.

    Stable and injective, so it can stand for the event id as an idempotency key. Never raises:
    a string that is not valid Unicode (a lone surrogate) is encoded as the bytes it holds.
    """
    return quote(text.encode("utf-8", "surrogatepass"), safe=_HEADER_SAFE)


def sign_standard_webhook(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    # The standardwebhooks provider's signer: what hooklane verifies on the way in, it signs on the way out.
    return standardwebhooks.sign(body, secret, timestamp=timestamp, delivery_id=msg_id)


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
        try:
            body = dumps(event).encode("utf-8")
        except ValueError as exc:
            # Normalize lets no such event through; one from an older dead letter fails alike every time.
            raise PermanentError(f"the event cannot be sent as UTF-8 JSON: {exc}") from None
        key = header_value(event["id"])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": key,
            **self.cfg.headers,
        }
        if self.cfg.secret is not None:
            headers.update(sign_standard_webhook(self.cfg.secret.reveal(), key, int(time.time()), body))
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
