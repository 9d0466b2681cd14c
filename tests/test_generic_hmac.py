"""``provider = "hmac"``: real-world schemes expressed as configuration, refused when they cannot work.

tests/fixtures/hmac/vectors.json holds GitHub (X-Hub-Signature-256, including
GitHub's documented test vector), Stripe (``Stripe-Signature: t=…,v1=…``) and
Shopify (base64 ``X-Shopify-Hmac-Sha256``) deliveries signed with stdlib hmac
as each vendor documents, each with the source keys that describe its scheme.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FIXTURES, request_of
from hypothesis import given, settings
from hypothesis import strategies as st

from hooklane.shared.config import ConfigError, describe
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import generic_hmac
from hooklane.shared.providers.base import OptionError, SignatureError

VECTORS = json.loads((FIXTURES / "hmac" / "vectors.json").read_text(encoding="utf-8"))
SCHEMES = sorted({v["scheme"] for v in VECTORS})
SOURCE = '[[sources]]\nname = "h"\nprovider = "hmac"\nsecrets = ["env:H_SECRET"]\n'


def toml(options: dict[str, Any]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())


def options_of(make_config: Any, options: dict[str, Any]) -> generic_hmac.Options:
    """The options exactly as a hooklane.toml source with these keys is loaded."""
    return make_config(SOURCE + toml(options), env={"H_SECRET": "s"}).sources["h"].options


def verify(vector: dict[str, Any], headers: dict[str, str] | None = None, secrets: list[bytes] | None = None) -> None:
    sent = vector["headers"] if headers is None else headers
    generic_hmac.verify(vector["body"].encode(), {k.lower(): v for k, v in sent.items()},
                        [vector["secret"].encode()] if secrets is None else secrets, tolerance=300,
                        now=lambda: float(vector.get("now", 0)), request=request_of("https://h/webhooks/h"),
                        options=generic_hmac.options(vector["options"]))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_keys_load_from_hooklane_toml(make_config: Any, scheme: str) -> None:
    vector = next(v for v in VECTORS if v["scheme"] == scheme)
    assert options_of(make_config, vector["options"]) == generic_hmac.options(vector["options"])


@pytest.mark.parametrize("vector", VECTORS, ids=[f"{v['scheme']}-{v['why'][:50]}" for v in VECTORS])
def test_real_world_scheme_vector(vector: dict[str, Any]) -> None:
    if vector["valid"]:
        verify(vector)
    else:
        with pytest.raises(SignatureError):
            verify(vector)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_refuses_tampered_body_wrong_secret_and_missing_headers(scheme: str) -> None:
    vector = next(v for v in VECTORS if v["scheme"] == scheme and v["valid"])
    with pytest.raises(SignatureError):
        verify({**vector, "body": vector["body"] + " "})
    with pytest.raises(SignatureError):
        verify(vector, secrets=[b"wrong"])
    with pytest.raises(SignatureError):
        verify(vector, headers={})
    verify(vector, secrets=[b"next", vector["secret"].encode()])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sign_round_trips_for_every_scheme(make_config: Any, scheme: str) -> None:
    vector = next(v for v in VECTORS if v["scheme"] == scheme and v["valid"])
    options = options_of(make_config, vector["options"])
    headers = generic_hmac.sign(b'{"type":"x"}', b"k", timestamp=1_700_000_000, options=options)
    generic_hmac.verify(b'{"type":"x"}', {k.lower(): v for k, v in headers.items()}, [b"k"], tolerance=300,
                        now=lambda: 1_700_000_000.0, request=request_of("https://h/x"), options=options)


@pytest.mark.parametrize(("unit", "skew", "ok"), [("s", 300, True), ("s", 301, False), ("ms", 300, True),
                                                  ("ms", 300.002, False)])
def test_timestamp_unit_and_tolerance_edges(make_config: Any, unit: str, skew: float, ok: bool) -> None:
    options = options_of(make_config, {"signature_header": "x-sig", "timestamp_header": "x-ts",
                                       "timestamp_unit": unit, "template": "{timestamp}.{body}"})
    headers = {k.lower(): v for k, v in generic_hmac.sign(b"{}", b"k", timestamp=1_700_000_000,
                                                          options=options).items()}
    call = dict(tolerance=300, now=lambda: 1_700_000_000 + skew, request=request_of("https://h/x"), options=options)
    if ok:
        generic_hmac.verify(b"{}", headers, [b"k"], **call)
    else:
        with pytest.raises(SignatureError):
            generic_hmac.verify(b"{}", headers, [b"k"], **call)


def test_url_method_and_id_placeholders_are_signed(make_config: Any) -> None:
    options = options_of(make_config, {"signature_header": "x-sig", "id_header": "x-id",
                                       "template": "{method} {url}\n{id}\n{body}",
                                       "public_url": "https://public.example.com/in"})
    request = request_of("http://10.0.0.1:8000/webhooks/h?a=1")
    headers = {k.lower(): v for k, v in generic_hmac.sign(b"{}", b"k", request=request, options=options).items()}
    generic_hmac.verify(b"{}", headers, [b"k"], tolerance=300, now=lambda: 0.0, request=request, options=options)
    with pytest.raises(SignatureError):
        generic_hmac.verify(b"{}", headers, [b"k"], tolerance=300, now=lambda: 0.0,
                            request=request_of("http://10.0.0.1:8000/webhooks/h?a=2"), options=options)
    with pytest.raises(SignatureError):
        generic_hmac.verify(b"{}", {**headers, "x-id": "other"}, [b"k"], tolerance=300, now=lambda: 0.0,
                            request=request, options=options)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), value=st.text(max_size=160))
def test_any_header_text_is_accepted_or_a_signature_error(scheme: str, value: str) -> None:
    vector = next(v for v in VECTORS if v["scheme"] == scheme and v["valid"])
    header = next(iter(vector["headers"]))
    try:
        verify(vector, headers={header: value})
    except SignatureError:
        pass


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("keys", "message"), [
    ("", r"signature_header: required"),
    ('signature_header = "x-sig"\ntemplate = "{body}.{nonce}"', r"template: unknown placeholder \{nonce\}"),
    ('signature_header = "x-sig"\ntolerance_seconds = 60', r"tolerance_seconds: needs timestamp_header"),
    ('signature_header = "x-sig"\ntemplate = "{timestamp}.{body}"', r"template: uses \{timestamp\}"),
    ('signature_header = "x-sig"\ntimestamp_header = "x-ts"', r"timestamp_header: the timestamp must be signed"),
    ('signature_header = "x-sig"\ntemplate = "{id}.{body}"', r"template: uses \{id\}"),
    ('signature_header = "x-sig"\ntemplate = "{timestamp}"\ntimestamp_header = "x-ts"', r"template: must include"),
    ('signature_header = "x-sig"\ntemplate = "{body}}"', r"template: stray brace"),
    ('signature_header = "x-sig"\nalgorithm = "md5"', r"algorithm: must be one of sha1, sha256, sha512"),
    ('signature_header = "x-sig"\nencoding = "base32"', r"encoding: must be one of hex, base64"),
    ('signature_header = "x sig"', r"signature_header: 'x sig' is not an HTTP header name"),
    ('signature_header = "x-sig"\ntimestamp_key = "t"', r"timestamp_key: needs timestamp_header"),
    ('signature_header = "x-sig"\ntimestamp_unit = "us"', r"timestamp_unit: must be one of s, ms"),
    ('signature_header = "x-sig"\ntype_field = "a..b"', r"type_field: 'a..b' is not a dotted JSON path"),
    ('signature_header = "x-sig"\npublic_url = "https://h/x?y=1"', r"public_url: give the URL without a query"),
    ('signature_header = "x-sig"\nheader = "x"', r"header: unknown key"),
    ('signature_header = "x-sig"\ntype_header = "x-e"\ntype_field = "t"', r"type_header: set type_header or"),
    ('signature_header = "x-sig"\ntype_header = "x e"', r"type_header: 'x e' is not an HTTP header name"),
])
def test_unworkable_scheme_fails_config_naming_the_key(make_config: Any, keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"sources\[0\]\.{message}"):
        make_config(SOURCE + keys + "\n", env={"H_SECRET": "s"})


# --------------------------------------------------------------------------- normalizing with the source's fields


def normalize(options: generic_hmac.Options | None, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    d = Delivery(id="0" * 32, source="h", provider="hmac", received_at="2026-01-01T00:00:00.000000Z", body=body)
    return generic_hmac.normalize(json.loads(body), d, options)


# Schemes whose type is a payload field; those naming a type header are tested through ingest (test_ingest_contextual).
TYPED_BY_FIELD = sorted({v["scheme"] for v in VECTORS if "type_field" in v["options"]})


@pytest.mark.parametrize("scheme", TYPED_BY_FIELD)
def test_configured_type_and_identity_fields_name_the_event(make_config: Any, scheme: str) -> None:
    vector = next(v for v in VECTORS if v["scheme"] == scheme and v["valid"] and v["body"].startswith("{"))
    options = options_of(make_config, vector["options"])
    payload = json.loads(vector["body"])
    event = normalize(options, payload)
    provider_type = payload[vector["options"]["type_field"]]
    parts = [generic_hmac.at(payload, tuple(p.split("."))) for p in vector["options"]["identity_fields"]]
    assert event.type == f"hmac.{provider_type}"
    assert event.id == "h:" + ":".join(str(p) for p in [provider_type, *parts])


def test_canonical_type_passes_through_and_missing_identity_is_the_body_hash(make_config: Any) -> None:
    import hashlib

    options = options_of(make_config, {"signature_header": "x-sig", "identity_fields": ["data.call_id"],
                                       "call_id_field": "data.call_id", "time_field": "at"})
    event = normalize(options, {"type": "call.completed", "at": "2025-01-01T00:00:00Z", "data": {"call_id": "c1"}})
    assert (event.type, event.id, event.call.id, event.occurred_at) == (
        "call.completed", "h:call.completed:c1", "c1", "2025-01-01T00:00:00.000000Z")
    payload = {"type": "call.completed", "data": {}}
    assert normalize(options, payload).id == "h:" + hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def test_check_config_describes_the_scheme_and_fields(make_config: Any) -> None:
    stripe = next(v for v in VECTORS if v["scheme"] == "stripe")
    text = describe(make_config(SOURCE + toml(stripe["options"]), env={"H_SECRET": "s"}))
    assert ("HMAC-SHA256 hex in stripe-signature v1= over '{timestamp}.{body}', timestamp (s) in stripe-signature t=;"
            " type from type, identity id") in text


def test_hex_signature_with_whitespace_inside_is_not_hex(make_config: Any) -> None:
    vector = next(v for v in VECTORS if v["scheme"] == "github" and v["valid"])
    digest = vector["headers"]["X-Hub-Signature-256"][len("sha256="):]
    spaced = "sha256=" + digest[:30] + " " + digest[31:]  # still 64 characters; bytes.fromhex would skip the space
    with pytest.raises(SignatureError, match="signature is not hex"):
        verify(vector, headers={"X-Hub-Signature-256": spaced})


scheme_values = st.one_of(st.text(max_size=30), st.integers(), st.booleans(), st.lists(st.text(max_size=5), max_size=2))


@settings(max_examples=300, deadline=None)
@given(raw=st.dictionaries(st.sampled_from([*generic_hmac.OPTION_KEYS, "tolerance_seconds"]), scheme_values,
                           max_size=8),
       template=st.text(alphabet="{}bodytimesamp.idurlmethx ", max_size=30))
def test_any_source_keys_load_or_fail_naming_a_key(raw: dict[str, Any], template: str) -> None:
    raw = {"signature_header": "x-sig", **raw, "template": template} if template else raw
    try:
        generic_hmac.options(raw)
    except OptionError as exc:
        assert exc.key in (*generic_hmac.OPTION_KEYS, "tolerance_seconds")
