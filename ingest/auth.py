"""Who may deliver to a source: IP allowlist (403), URL token (401), provider signature (401).

`authenticate` is pure: everything it needs is passed in, including the clock,
so the tests drive it without a server or a Redis.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Mapping

from hooklane.shared.config import SourceConfig
from hooklane.shared.providers.base import Clock, IPNotAllowed, Provider, SignatureError


def client_ip(remote_addr: str, forwarded_for: str | None, trusted_proxies: int) -> str:
    """The client address after `trusted_proxies` hops of X-Forwarded-For.

    Same rule as werkzeug's ProxyFix: with N trusted proxies the client is the
    N-th address from the right; a shorter header means the request did not
    come through all of them, so the peer address stands.
    """
    if trusted_proxies <= 0 or not forwarded_for:
        return remote_addr
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    if len(hops) < trusted_proxies:
        return remote_addr
    return hops[-trusted_proxies]


def check_ip(source: SourceConfig, ip: str) -> None:
    if not source.allow_ips:
        return
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        raise IPNotAllowed("client address not allowed") from None
    candidates: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (addr,)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the list may name either form.
        candidates = (addr.ipv4_mapped, addr)
    if not any(a in net for net in source.allow_ips for a in candidates):
        raise IPNotAllowed("client address not allowed")


def check_token(source: SourceConfig, presented: str | None) -> None:
    if not source.tokens:
        if presented is not None:
            raise SignatureError("this source takes no URL token")
        return
    if not presented:
        raise SignatureError("missing token")
    given = presented.encode("utf-8", "surrogateescape")
    matched = False
    for token in source.tokens:
        matched |= hmac.compare_digest(token.reveal(), given)
    if not matched:
        raise SignatureError("token does not match")


def authenticate(
    source: SourceConfig,
    provider: Provider,
    *,
    body: bytes,
    headers: Mapping[str, str],
    token: str | None,
    ip: str,
    now: Clock = time.time,
) -> None:
    """Raise VerificationError (401/403) unless the request may deliver to `source`."""
    check_ip(source, ip)
    check_token(source, token)
    if source.secrets and provider.verify is not None:
        provider.verify(
            body,
            headers,
            [s.reveal() for s in source.secrets],
            tolerance=source.tolerance_seconds,
            now=now,
        )
