"""Property: whatever JSON a provider's source sends, normalize gives an event every later step can handle,
or refuses it with NormalizeFailed (one dead letter at stage normalize, never a retried crash later).

"Every later step" is what failed in production after normalize had passed: the event's one JSON form
(UTF-8, no NaN/Infinity), RQ's JSON serializer for a retry job, the python handler's deep copy, the
dedupe claim on a real Redis, and the http handler's headers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hooklane.shared.envelope import Delivery
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.queueing import SERIALIZER
from hooklane.workers.dedupe import Deduper
from hooklane.workers.errors import NormalizeFailed
from hooklane.workers.handlers.http import header_value
from hooklane.workers.jobs import normalize

pytestmark = pytest.mark.redis

SOURCES = {"volumereach": "vr", "voxpria": "vox", "volubile": "vol", "voipbin": "vb", "voicekit": "vk"}


@dataclass(frozen=True)
class Raw:
    """JSON text written into the body as is: what a Python value cannot produce (1e400, 990 brackets)."""

    text: str


ODD_STRINGS = ["日本-1", "📞", "a\r\nb", "%", "%41", "\x00", "\ud800", "\udfff", "\ud83d\ude00", "é", " ", ""]
RAW_TEXT = ["1e400", "-1e400", "1e-400", "-0", "-0.0", "1E308", "2e308", "123456789012345678901234567890",
            "12345678901234567890123456789.5", "9" * 400, "[" * 990 + "]" * 990, "[" * 65 + "1" + "]" * 65,
            "{" + '"a":{' * 70 + "}" * 71]

text = st.one_of(st.text(st.characters(exclude_categories=()), max_size=12), st.sampled_from(ODD_STRINGS))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(), text, st.sampled_from(RAW_TEXT).map(Raw),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)


def write(value: Any, ascii: bool) -> str:
    """JSON text of `value`, Raw parts verbatim; with ascii=False a lone surrogate stays a raw code point."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=ascii) + ":" + write(v, ascii)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(write(v, ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a sample a value could be swapped: each key of each object, each list item."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out.extend(paths(child, (*prefix, key)))
    return out


@st.composite
def provider_bodies(draw: st.DrawFn, provider: str) -> bytes:
    """A real sample of the provider with a few of its fields swapped for anything, or any JSON at all."""
    samples = PROVIDERS[provider].samples()
    payload: Any = copy.deepcopy(samples[draw(st.sampled_from(sorted(samples)))])
    if draw(st.integers(0, 9)) == 0:
        payload = draw(json_values)
    else:
        spots = paths(payload)
        for spot in draw(st.lists(st.sampled_from(spots), max_size=3)) if spots else []:
            parent = payload
            for key in spot[:-1]:
                parent = parent[key] if isinstance(parent, dict | list) and _has(parent, key) else None
            if isinstance(parent, dict | list) and _has(parent, spot[-1]):
                parent[spot[-1]] = draw(json_values)
    body = write(payload, ascii=draw(st.booleans()))
    return body.encode("utf-8", "surrogatepass")  # as a client may: json.loads(bytes) reads these too


def _has(container: dict | list, key: Any) -> bool:
    return key in container if isinstance(container, dict) else isinstance(key, int) and key < len(container)


@pytest.mark.parametrize("provider", sorted(SOURCES))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_normalize_gives_an_event_every_later_step_can_handle_or_refuses_it(provider, data, real_redis):
    body = data.draw(provider_bodies(provider))
    delivery = Delivery(id="f" * 32, source=SOURCES[provider], provider=provider,
                        received_at="2026-01-01T00:00:00.000000Z", body=body)
    try:
        ev = normalize(delivery)
    except NormalizeFailed:
        event("refused")
        return
    event("normalized")
    text = ev.to_json()
    assert json.loads(text.encode("utf-8"), parse_constant=_not_json) == ev.to_dict()
    task = {"event": ev.to_dict(), "handler": "crm", "delivery": delivery.to_dict()}
    assert SERIALIZER.loads(SERIALIZER.dumps([task])) == [json.loads(json.dumps(task))]
    assert copy.deepcopy(ev.to_dict()) == ev.to_dict()
    assert Deduper(real_redis, "fuzz", 60).claim(ev.id, delivery.id).state in ("new", "resume", "duplicate")
    key = header_value(ev.id)
    assert key.isascii() and key.isprintable() and " " not in key


def _not_json(name: str) -> None:
    raise AssertionError(f"{name} in an event's JSON")
