"""The provider registry is complete: every provider has its module, fixtures and vectors, and maps sanely."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FIXTURES

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import CANONICAL_TYPES
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import Provider

NAMES = sorted(PROVIDERS)


def stems(provider: str) -> set[str]:
    """Payload fixture names without .json: "<provider_type>" or "<provider_type>--<variant>"."""
    return {p.name[:-len(".json")] for p in (FIXTURES / provider).glob("*.json")
            if not p.name.endswith(".expected.json") and p.name != "vectors.json"}


def sample_events(provider: str) -> list[tuple[str, Any]]:
    prov = PROVIDERS[provider]
    out = []
    for provider_type, payload in prov.samples().items():
        body = json.dumps(payload).encode()
        d = Delivery(id="0" * 32, source=provider, provider=provider, received_at="2026-01-01T00:00:00.000000Z",
                     body=body)
        out.append((provider_type, prov.normalize(json.loads(body), d)))
    return out


def test_registry_lists_the_five_documented_providers() -> None:
    assert set(PROVIDERS) >= {"volumereach", "voxpria", "volubile", "voipbin", "voicekit"}


@pytest.mark.parametrize("name", NAMES)
def test_provider_is_registered_under_its_own_name(name: str) -> None:
    assert isinstance(PROVIDERS[name], Provider)
    assert PROVIDERS[name].name == name


@pytest.mark.parametrize("name", NAMES)
def test_provider_has_fixture_pairs_and_vectors(name: str) -> None:
    directory = FIXTURES / name
    assert directory.is_dir(), f"tests/fixtures/{name}/ is missing"
    assert stems(name), f"tests/fixtures/{name}/ has no payload fixture"
    assert isinstance(json.loads((directory / "vectors.json").read_text(encoding="utf-8")), list)
    assert json.loads((directory / "vectors.json").read_text(encoding="utf-8")), "vectors.json is empty"


@pytest.mark.parametrize("name", NAMES)
def test_every_payload_fixture_has_an_expected_event_and_vice_versa(name: str) -> None:
    expected = {p.name[:-len(".expected.json")] for p in (FIXTURES / name).glob("*.expected.json")}
    assert stems(name) == expected


@pytest.mark.parametrize("name", NAMES)
def test_every_mapped_event_type_has_a_fixture(name: str) -> None:
    missing = set(PROVIDERS[name].event_types) - stems(name)
    assert not missing, f"{name}: no tests/fixtures/{name}/<type>.json for {sorted(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_has_a_fixture_and_covers_the_mapping(name: str) -> None:
    samples = set(PROVIDERS[name].samples())
    assert set(PROVIDERS[name].event_types) <= samples
    assert samples <= stems(name)


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_normalizes_as_its_own_type(name: str) -> None:
    for provider_type, event in sample_events(name):
        assert event.provider_type == provider_type
        assert event.provider == name
        assert event.id.startswith(f"{name}:")


@pytest.mark.parametrize("name", NAMES)
def test_mapping_table_targets_only_canonical_types(name: str) -> None:
    for provider_type, canonical in PROVIDERS[name].event_types.items():
        assert canonical in CANONICAL_TYPES, f"{name}: {provider_type} -> {canonical}"


@pytest.mark.parametrize("name", NAMES)
def test_every_produced_type_is_canonical_or_provider_prefixed(name: str) -> None:
    types = [e.type for _, e in sample_events(name)]
    for path in (FIXTURES / name).glob("*.expected.json"):
        types.append(json.loads(path.read_text(encoding="utf-8"))["type"])
    for t in types:
        assert t in CANONICAL_TYPES or t.startswith(f"{name}."), f"{name} produced {t!r}"


@pytest.mark.parametrize("name", NAMES)
def test_signing_providers_have_verify_and_sign_together(name: str) -> None:
    p = PROVIDERS[name]
    assert (p.verify is None) == (p.sign is None)


@pytest.mark.parametrize("name", NAMES)
def test_methods_and_headers_are_well_formed(name: str) -> None:
    p = PROVIDERS[name]
    assert p.methods and all(m in ("POST", "PUT", "GET", "DELETE", "PATCH") for m in p.methods)
    assert all(h == h.lower() for h in p.forward_headers)
    if p.delivery_id_header is not None:
        assert p.delivery_id_header == p.delivery_id_header.lower()
        assert p.delivery_id_header in p.forward_headers


def test_voipbin_accepts_every_method_its_customer_profile_allows() -> None:
    assert set(PROVIDERS["voipbin"].methods) == {"POST", "PUT", "GET", "DELETE"}
