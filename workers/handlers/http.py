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
- One urllib3 pool per handler per process, sized for the worker's concurrency (a job in
  flight never waits for, or throws away, a connection); (connect, read) timeouts. urllib3
  rather than requests: a POST through requests' Session cost 3x the CPU of the same POST
  through urllib3 (1.6 ms vs 0.5 ms here), a third of a worker's CPU per event at
  concurrency 32 (docs/benchmarks.md). What requests added is kept: credentials in the URL
  become Basic auth, and ``HTTP(S)_PROXY`` / ``NO_PROXY`` from the environment apply.
- The answer's body is read and dropped, never kept: a downstream's huge reply costs no memory.
- 2xx: done. Timeouts, connection errors, 408, 425, 429 and 5xx: transient
  (``Retry-After`` honoured). Any other status: permanent.
"""

from __future__ import annotations

import email.utils
import http.client
import time
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, ProxySchemeUnknown
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from hooklane.shared.config import ConfigError, HandlerConfig
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


def split_credentials(url: str) -> tuple[str, str | None]:
    """`url` without its userinfo, and that userinfo (percent-decoded) as ``user:password``, or None."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return urlunsplit(parts._replace(netloc=netloc)), userinfo


def pool_for(url: str, maxsize: int, *, name: str = "") -> urllib3.PoolManager:
    """A pool for `url`, through the proxy the environment names for it (as requests did), if any.

    Decided once: a handler's URL does not change, and neither does the worker's environment.
    """
    parts = urlsplit(url)
    kw: dict[str, Any] = {"num_pools": 4, "maxsize": maxsize}
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")  # ALL_PROXY as the fallback, as requests reads it
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.PoolManager(**kw)
    proxy_url, proxy_auth = split_credentials(proxy if "://" in proxy else f"http://{proxy}")
    headers = urllib3.make_headers(proxy_basic_auth=proxy_auth) if proxy_auth else None
    try:
        return urllib3.ProxyManager(proxy_url, proxy_headers=headers, **kw)
    except ProxySchemeUnknown:
        raise ConfigError(f"handlers.{name}.url: the {parts.scheme}_proxy environment variable names a "
                          f"{urlsplit(proxy_url).scheme} proxy; only http and https proxies are supported") from None


# Read past this much of an answer's body and the connection is closed instead: reusing it is not worth
# downloading whatever a downstream chose to send back.
DRAIN_LIMIT = 1 << 20


def discard_body(resp: urllib3.BaseHTTPResponse) -> None:
    """Read and drop the answer's body in chunks (never held whole), so the connection carries the next
    POST; a body over DRAIN_LIMIT, or one that breaks off, closes the connection instead."""
    left = DRAIN_LIMIT
    try:
        while left > 0:
            chunk = resp.read(min(left, 64 * 1024), decode_content=False)
            if not chunk:
                resp.release_conn()
                return
            left -= len(chunk)
    except (HTTPError, OSError, http.client.HTTPException):
        pass  # the connection is unusable: closed below, and the status already says how the POST went
    resp.close()
    resp.release_conn()


class HttpHandler:
    def __init__(self, cfg: HandlerConfig, *, pool_size: int = 16) -> None:
        assert cfg.url, "validated by shared.config"
        self.cfg = cfg
        self.url, userinfo = split_credentials(cfg.url)
        self.where = safe_url(cfg.url)
        self.timeout = urllib3.Timeout(connect=cfg.connect_timeout_seconds, read=cfg.timeout_seconds)
        self.auth = urllib3.make_headers(basic_auth=userinfo) if userinfo is not None else {}
        self.pool = pool_for(self.url, max(pool_size, 16), name=cfg.name)

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
            **self.auth,
            **self.cfg.headers,
        }
        if self.cfg.secret is not None:
            headers.update(sign_standard_webhook(self.cfg.secret.reveal(), key, int(time.time()), body))
        try:
            resp = self.pool.request("POST", self.url, body=body, headers=headers, timeout=self.timeout,
                                     retries=False, redirect=False, preload_content=False)
        except NewConnectionError:  # a subclass of urllib3's TimeoutError, but refused is not slow
            raise TransientError(f"connection failed to {self.where}") from None
        except Urllib3Timeout:
            raise TransientError(f"timeout posting to {self.where}") from None
        except ProtocolError:
            raise TransientError(f"connection failed to {self.where}") from None
        except HTTPError as exc:
            raise TransientError(f"request to {self.where} failed: {type(exc).__name__}") from None
        status = resp.status
        retry_after = resp.headers.get("Retry-After")
        discard_body(resp)
        if 200 <= status < 300:
            return
        message = f"{self.where} answered {status}"
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientError(message, status=status, retry_after=parse_retry_after(retry_after))
        raise PermanentError(message, status=status)
