"""safe_url: the one way a URL is shown in a message, a log line, a banner or `check-config` output."""

from __future__ import annotations

import pytest

from hooklane.shared.redaction import safe_url


@pytest.mark.parametrize(("url", "shown"), [
    # Credentials are shown to be there, never what they are.
    ("https://user:s3cret-pw@crm.example.com/hook", "https://***@crm.example.com/hook"),
    # A password with an unencoded '@': the last '@' ends the credentials (a first-'@' rule leaked "ss@").
    ("redis://:p@ss@redis.example.com:6379/0", "redis://***@redis.example.com:6379/0"),
    # The query and fragment can carry a token or a signature.
    ("https://crm.example.com/hook?token=tok-123&x=1#frag", "https://crm.example.com/hook"),
    # A token in the path of a hooklane webhook URL.
    ("http://127.0.0.1:8000/webhooks/vb/tok-123", "http://127.0.0.1:8000/webhooks/vb/***"),
    ("http://127.0.0.1:8000/webhooks/vb/tok-123/more?token=t", "http://127.0.0.1:8000/webhooks/vb/***"),
    # Nothing secret: shown as given (host case and IPv6 brackets kept).
    ("http://127.0.0.1:8000/webhooks/vb", "http://127.0.0.1:8000/webhooks/vb"),
    ("http://[::1]:8080/Events", "http://[::1]:8080/Events"),
    ("https://CRM.example.com", "https://CRM.example.com"),
])
def test_a_url_is_shown_without_credentials_tokens_or_query(url: str, shown: str) -> None:
    assert safe_url(url) == shown


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@redis.example.com:6380/2?ssl_cert_reqs=none",
     "redis://***@redis.example.com:6380/2?ssl_cert_reqs=none"),
    ("rediss://default:s3cret@redis.example.com", "rediss://***@redis.example.com"),
    ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
    ("redis://127.0.0.1:6399/0", "redis://127.0.0.1:6399/0"),
])
def test_a_redis_url_keeps_its_options(url: str, shown: str) -> None:
    assert safe_url(url, keep_query=True) == shown
