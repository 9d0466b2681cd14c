"""Who may deliver: X-Forwarded-For hops, IP allowlists (403), URL tokens (401), signatures (401)."""

from __future__ import annotations

import ipaddress

import pytest

from hooklane.ingest.auth import authenticate, check_ip, check_token, client_ip
from hooklane.shared.config import Secret, SourceConfig
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import IPNotAllowed, SignatureError, VerificationError

NOW = 1_700_000_000.0
BODY = b'{"event":"call.completed","data":{"call_id":"c1"}}'


def _source(
    *,
    provider: str = "voicekit",
    tokens: tuple[str, ...] = (),
    allow_ips: tuple[str, ...] = (),
    secrets: tuple[str, ...] = (),
    insecure: bool = False,
) -> SourceConfig:
    return SourceConfig(
        name="src",
        provider=provider,
        secrets=tuple(Secret(s.encode(), f"env:S{i}") for i, s in enumerate(secrets)),
        tokens=tuple(Secret(t.encode(), f"env:T{i}") for i, t in enumerate(tokens)),
        allow_ips=tuple(ipaddress.ip_network(c, strict=False) for c in allow_ips),
        insecure=insecure,
    )


# --------------------------------------------------------------------------- client_ip


def test_client_ip_without_trusted_proxies_is_the_peer_even_with_forwarded_for() -> None:
    assert client_ip("198.51.100.7", "203.0.113.9", 0) == "198.51.100.7"


def test_client_ip_with_one_trusted_proxy_is_the_last_hop() -> None:
    assert client_ip("10.0.0.2", "203.0.113.9", 1) == "203.0.113.9"


def test_client_ip_ignores_hops_a_client_spoofed_in_front_of_the_trusted_proxy() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the single trusted proxy appended the real peer.
    assert client_ip("10.0.0.2", "1.2.3.4, 203.0.113.9", 1) == "203.0.113.9"


def test_client_ip_with_two_trusted_proxies_is_the_second_hop_from_the_right() -> None:
    assert client_ip("10.0.0.3", "6.6.6.6, 7.7.7.7, 203.0.113.9, 10.0.0.2", 2) == "203.0.113.9"


def test_client_ip_falls_back_to_the_peer_when_fewer_hops_than_trusted_proxies() -> None:
    # Not every trusted proxy appended: the request bypassed one, so nothing in the header is trusted.
    assert client_ip("198.51.100.7", "203.0.113.9", 2) == "198.51.100.7"


def test_client_ip_falls_back_to_the_peer_without_forwarded_for_header() -> None:
    assert client_ip("198.51.100.7", None, 1) == "198.51.100.7"
    assert client_ip("198.51.100.7", " , ,", 1) == "198.51.100.7"


def test_client_ip_strips_whitespace_and_empty_hops() -> None:
    assert client_ip("10.0.0.2", "1.2.3.4 ,, 203.0.113.9 ", 1) == "203.0.113.9"


def test_client_ip_keeps_ipv6_hops_whole() -> None:
    assert client_ip("::1", "2001:db8::1, 2001:db8::2", 1) == "2001:db8::2"
    assert client_ip("2001:db8::9", None, 0) == "2001:db8::9"


# --------------------------------------------------------------------------- IP allowlist


def test_allowlist_hit_passes() -> None:
    check_ip(_source(allow_ips=("203.0.113.0/24",)), "203.0.113.50")


def test_allowlist_miss_is_ip_not_allowed_with_status_403() -> None:
    with pytest.raises(IPNotAllowed) as err:
        check_ip(_source(allow_ips=("203.0.113.0/24",)), "198.51.100.1")
    assert err.value.status == 403


def test_allowlist_any_of_several_networks_matches() -> None:
    src = _source(allow_ips=("10.0.0.0/8", "203.0.113.5/32"))
    check_ip(src, "10.200.1.1")
    check_ip(src, "203.0.113.5")
    with pytest.raises(IPNotAllowed):
        check_ip(src, "203.0.113.6")


def test_allowlist_matches_ipv6_networks() -> None:
    src = _source(allow_ips=("2001:db8::/32",))
    check_ip(src, "2001:db8:1::7")
    with pytest.raises(IPNotAllowed):
        check_ip(src, "2001:db9::7")


def test_allowlist_ignores_ipv6_zone_id() -> None:
    check_ip(_source(allow_ips=("fe80::/10",)), "fe80::1%eth0")


def test_allowlist_matches_ipv4_mapped_ipv6_client_against_ipv4_network() -> None:
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    src = _source(allow_ips=("10.0.0.0/8",))
    check_ip(src, "::ffff:10.1.2.3")
    with pytest.raises(IPNotAllowed):
        check_ip(src, "::ffff:11.1.2.3")


def test_allowlist_matches_ipv4_mapped_client_against_mapped_ipv6_network() -> None:
    check_ip(_source(allow_ips=("::ffff:10.0.0.0/104",)), "::ffff:10.1.2.3")


def test_allowlist_refuses_an_ipv4_client_for_an_ipv6_only_list() -> None:
    with pytest.raises(IPNotAllowed):
        check_ip(_source(allow_ips=("2001:db8::/32",)), "10.1.2.3")


@pytest.mark.parametrize("garbage", ["", "not-an-ip", "1.2.3.4.5", "300.1.1.1", "1.2.3.4:8080", "[::1]", "%"])
def test_allowlist_refuses_a_client_address_that_is_not_an_ip(garbage: str) -> None:
    with pytest.raises(IPNotAllowed):
        check_ip(_source(allow_ips=("0.0.0.0/0", "::/0")), garbage)


def test_no_allowlist_accepts_any_address_even_garbage() -> None:
    check_ip(_source(tokens=("t",)), "not-an-ip")


def test_allowlist_uses_the_client_behind_trusted_proxies_not_the_spoofed_hop() -> None:
    src = _source(allow_ips=("203.0.113.0/24",))
    # Spoofed allowed address in front, real client (not allowed) appended by the proxy.
    ip = client_ip("10.0.0.2", "203.0.113.9, 198.51.100.1", 1)
    with pytest.raises(IPNotAllowed):
        check_ip(src, ip)


# --------------------------------------------------------------------------- URL token


def test_token_match_passes() -> None:
    check_token(_source(tokens=("tok-1",)), "tok-1")


def test_token_rotation_accepts_any_of_several_tokens() -> None:
    src = _source(tokens=("tok-new", "tok-old"))
    check_token(src, "tok-new")
    check_token(src, "tok-old")
    with pytest.raises(SignatureError):
        check_token(src, "tok-older")


@pytest.mark.parametrize("wrong", ["tok-2", "tok-1 ", "TOK-1", "tok-", "tok-1tok-1", "t\u00f6k-1"])
def test_wrong_token_is_refused_with_401(wrong: str) -> None:
    with pytest.raises(SignatureError) as err:
        check_token(_source(tokens=("tok-1",)), wrong)
    assert err.value.status == 401
    assert err.value.reason == "token does not match"


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_token_is_refused_with_401(missing: str | None) -> None:
    with pytest.raises(SignatureError) as err:
        check_token(_source(tokens=("tok-1",)), missing)
    assert err.value.reason == "missing token"


def test_token_presented_to_a_source_without_tokens_is_refused() -> None:
    # /webhooks/<source>/<something> on a source that has no token is not a URL we gave anyone.
    with pytest.raises(SignatureError) as err:
        check_token(_source(allow_ips=("10.0.0.0/8",)), "anything")
    assert err.value.reason == "this source takes no URL token"


def test_no_token_configured_and_none_presented_passes() -> None:
    check_token(_source(allow_ips=("10.0.0.0/8",)), None)


def test_token_reason_never_contains_the_token() -> None:
    with pytest.raises(SignatureError) as err:
        check_token(_source(tokens=("super-secret-token",)), "super-secret-tokeX")
    assert "super-secret" not in str(err.value)


# --------------------------------------------------------------------------- authenticate


def test_authenticate_unsigned_provider_with_token_and_allowlist_needs_both() -> None:
    src = _source(tokens=("tok",), allow_ips=("10.0.0.0/8",))
    vk = PROVIDERS["voicekit"]
    authenticate(src, vk, body=BODY, headers={}, token="tok", ip="10.0.0.1", now=lambda: NOW)
    with pytest.raises(IPNotAllowed):
        authenticate(src, vk, body=BODY, headers={}, token="tok", ip="192.0.2.1", now=lambda: NOW)
    with pytest.raises(SignatureError):
        authenticate(src, vk, body=BODY, headers={}, token="nope", ip="10.0.0.1", now=lambda: NOW)


def test_authenticate_checks_ip_before_token() -> None:
    # A scanner outside the allowlist learns nothing about whether its token guess was right.
    src = _source(tokens=("tok",), allow_ips=("10.0.0.0/8",))
    with pytest.raises(IPNotAllowed):
        authenticate(src, PROVIDERS["voipbin"], body=BODY, headers={}, token="wrong", ip="192.0.2.1")


def test_authenticate_insecure_source_accepts_anything() -> None:
    authenticate(_source(insecure=True), PROVIDERS["voipbin"], body=b"", headers={}, token=None, ip="x")


def test_authenticate_signed_provider_verifies_the_raw_body_with_the_clock_passed_in() -> None:
    vr = PROVIDERS["volumereach"]
    assert vr.sign is not None
    src = _source(provider="volumereach", secrets=("s-new", "s-old"))
    for secret in (b"s-new", b"s-old"):
        headers = {k.lower(): v for k, v in vr.sign(BODY, secret, timestamp=int(NOW)).items()}
        authenticate(src, vr, body=BODY, headers=headers, token=None, ip="192.0.2.1", now=lambda: NOW)
    headers = {k.lower(): v for k, v in vr.sign(BODY, b"s-new", timestamp=int(NOW)).items()}
    with pytest.raises(SignatureError):
        authenticate(src, vr, body=BODY + b" ", headers=headers, token=None, ip="192.0.2.1", now=lambda: NOW)
    with pytest.raises(SignatureError):
        authenticate(src, vr, body=BODY, headers=headers, token=None, ip="192.0.2.1", now=lambda: NOW + 301)


def test_authenticate_signed_source_with_token_needs_token_and_signature() -> None:
    vr = PROVIDERS["volumereach"]
    assert vr.sign is not None
    src = _source(provider="volumereach", secrets=("s",), tokens=("tok",))
    headers = {k.lower(): v for k, v in vr.sign(BODY, b"s", timestamp=int(NOW)).items()}
    authenticate(src, vr, body=BODY, headers=headers, token="tok", ip="192.0.2.1", now=lambda: NOW)
    with pytest.raises(SignatureError):
        authenticate(src, vr, body=BODY, headers=headers, token=None, ip="192.0.2.1", now=lambda: NOW)
    with pytest.raises(SignatureError):
        authenticate(src, vr, body=BODY, headers={}, token="tok", ip="192.0.2.1", now=lambda: NOW)


def test_every_refusal_is_a_verification_error_with_a_safe_reason() -> None:
    src = _source(tokens=("s3cr3t-vk",), allow_ips=("10.0.0.0/8",))
    for ip, token in (("192.0.2.1", "s3cr3t-vk"), ("10.0.0.1", None), ("10.0.0.1", "s3cr3t-vX")):
        with pytest.raises(VerificationError) as err:
            authenticate(src, PROVIDERS["voicekit"], body=BODY, headers={}, token=token, ip=ip)
        assert err.value.status in (401, 403)
        assert "s3cr3t" not in err.value.reason
