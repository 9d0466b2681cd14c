"""Property: whatever an authenticated client sends the admin API, the answer is never a 5xx while Redis is up.

A client mistake is a 400 with a reason (or 404/409 for an entry that is not there or cannot be replayed);
nothing a request body or query holds may surface as a 500 (an exception) or a 503 (a value Redis refuses).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import fakeredis
import pytest
from conftest import add_dead_letter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hooklane.ingest.app import create_app
from hooklane.operators.actions import FILTER_FIELDS
from hooklane.shared.config import Config

TOKEN = "adm-fuzz-5b8e2c7d1a9f3e60"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATUSES = {200, 400, 404, 409}
KEYS = (*FILTER_FIELDS, "all", "dry_run", "limit")

# JSON as a client may write it: huge integers, floats that overflow, NaN and Infinity (json.dumps writes them).
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**400, max_value=10**400),
    st.floats(), st.sampled_from([1e308, -1e308, 5e-324, 2**63, -2**63]),
    st.text(max_size=20),
    st.sampled_from(["15m", "2h", "0s", "1.5d", "9" * 40 + "w", "2025-03-14T15:00:00Z", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-12:00", "handler", "crm", "normalize", "", " ", "\x00", "\ud800"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
# Keys too: an unknown field is named in the refusal, so a lone surrogate ("\ud800", valid JSON) is echoed back.
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.sampled_from(["\ud800", "a\udfff", "\x00"]))
objects = st.dictionaries(keys, json_values, max_size=5)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bodies json.dumps cannot write: deep nesting, numbers past any limit, bad encodings."""
    depth = draw(st.integers(min_value=1, max_value=6000))
    digits = "1" + "0" * draw(st.integers(min_value=300, max_value=6000))
    return draw(st.sampled_from([
        ("[" * depth + "]" * depth).encode(),
        ('{"since":' * depth + "1" + "}" * depth).encode(),
        ('{"all":true,"since":[' + "[" * depth + "]" * depth + "]}").encode(),
        f'{{"since":{digits}}}'.encode(),
        f'{{"all":true,"limit":{digits}}}'.encode(),
        f'{{"until":{digits}e{depth}}}'.encode(),
        f'{{"since":"{digits}w"}}'.encode(),
        b'{"since":NaN}', b'{"until":-Infinity}', b'{"since":1e400}',
        draw(st.binary(max_size=40)),
    ]))


# Mostly well-formed, so the paths past validation (matching, dry runs, replays) are reached too.
plausible = st.fixed_dictionaries({"all": st.booleans()}, optional={
    "dry_run": st.booleans(), "limit": st.integers(min_value=-1, max_value=3),
    "stage": st.sampled_from(["handler", "normalize", "delivery", "x"]), "handler": st.sampled_from(["log", "crm"]),
    "since": st.sampled_from(["2h", "1m", 0, 1.5e9, "2025-03-14T15:00:00Z"]), "until": st.sampled_from(["1m", 2e9]),
})
bodies = st.one_of(objects, plausible).map(lambda d: json.dumps(d).encode()) | raw_bodies()
queries = st.dictionaries(st.one_of(st.sampled_from((*FILTER_FIELDS, "limit", "offset")), st.text(max_size=6)),
                          st.one_of(scalars.map(str), st.text(max_size=30)), max_size=4)


@pytest.fixture
def admin(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    monkeypatch.setenv("HOOKLANE_ADMIN_TOKEN", TOKEN)
    conn = fakeredis.FakeRedis()
    config = make_config()
    ids = [add_dead_letter(conn, config, minutes_ago=m, handler=None, stage="normalize") for m in (1, 90)]
    return create_app(config, conn).test_client(), ids


def check(resp: Any) -> None:
    event(f"status {resp.status_code}")
    assert resp.status_code in STATUSES, resp.get_data(as_text=True)
    doc = resp.get_json()
    if resp.status_code != 200:
        assert doc["status"] == "refused" and doc["reason"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, which=st.sampled_from(["bulk", "one", "unknown"]))
def test_random_replay_bodies_are_never_a_5xx(body: bytes, which: str, admin: tuple[Any, list[str]]) -> None:
    client, ids = admin
    path = {"bulk": "/admin/dead-letters/replay", "one": f"/admin/dead-letters/{ids[0]}/replay",
            "unknown": "/admin/dead-letters/nope/replay"}[which]
    check(client.post(path, data=body, headers=AUTH, content_type="application/json"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries)
def test_random_list_queries_are_never_a_5xx(query: dict[str, str], admin: tuple[Any, list[str]]) -> None:
    client, _ = admin
    check(client.get("/admin/dead-letters?" + urlencode(query, errors="surrogatepass"), headers=AUTH))


@pytest.mark.parametrize("body", [
    b'{"since":1' + b"0" * 400 + b"}",  # OverflowError converting to a float
    b"[" * 4000 + b"]" * 4000,  # RecursionError in the JSON parser
    b'{"since":NaN}',  # Redis refuses NaN as a score: was a 503
    b'{"since":1' + b"0" * 5000 + b"}",  # past Python's 4300-digit integer limit
    b'{"until":1e400}',  # parses to inf
    b'{"since":"' + b"9" * 400 + b'w"}',  # a relative age that overflows
    b'{"\\ud800":1}',  # an unknown field UTF-8 cannot encode, named in the refusal
])
def test_hostile_numbers_and_nesting_in_a_bulk_replay_are_400_with_a_reason(body: bytes,
                                                                             admin: tuple[Any, list[str]]) -> None:
    client, _ = admin
    resp = client.post("/admin/dead-letters/replay", data=body, headers=AUTH, content_type="application/json")
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["reason"]
