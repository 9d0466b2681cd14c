"""Worker pieces without Redis: backoff, normalize failures, error typing, redaction."""

from __future__ import annotations

import dataclasses
import random

import pytest

from hooklane.shared.backoff import delays
from hooklane.shared.config import WorkerConfig
from hooklane.shared.envelope import Delivery
from hooklane.shared.providers.base import to_iso, to_seconds
from hooklane.shared.redaction import Redactor
from hooklane.workers.errors import NormalizeFailed, PermanentError, TransientError, is_permanent
from hooklane.workers.jobs import normalize


def delivery(body: bytes, provider: str = "volumereach") -> Delivery:
    return Delivery(id="0" * 32, source="vr", provider=provider, received_at="2026-01-01T00:00:00.000000Z", body=body)


def test_default_backoff_spans_roughly_a_day_over_eight_attempts():
    waits = delays(WorkerConfig(backoff_jitter=0), 7)
    assert waits[:4] == [60, 240, 960, 3840]
    assert waits[-1] == 8 * 3600, "capped"
    assert 18 * 3600 < sum(waits) < 26 * 3600


def test_backoff_jitter_stays_within_its_fraction_and_varies():
    cfg = WorkerConfig(backoff_jitter=0.2)
    runs = [delays(cfg, 3, random.Random(seed)) for seed in range(50)]
    for waits in runs:
        for wait, base in zip(waits, (60, 240, 960), strict=True):
            assert base * 0.8 <= wait <= base * 1.2
    assert len({tuple(w) for w in runs}) > 40, "jitter spreads retries apart"


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe{}", b'{"event": "call.completed", "x": Infinity}',
                                  b'{"event": "call.completed", "x": NaN}', b"[1, 2]", b'{"data": {}}'])
def test_unreadable_bodies_fail_normalize_permanently(body):
    with pytest.raises(NormalizeFailed) as info:
        normalize(delivery(body))
    assert is_permanent(info.value)


def test_a_normalizer_bug_is_a_permanent_normalize_failure_not_a_crash(monkeypatch):
    from hooklane.shared.providers import PROVIDERS

    def broken(payload, d):
        raise KeyError("call_id")

    provider = PROVIDERS["volumereach"]
    monkeypatch.setitem(PROVIDERS, "volumereach", dataclasses.replace(provider, normalize=broken))
    with pytest.raises(NormalizeFailed, match="KeyError"):
        normalize(delivery(b'{"event": "call.completed", "data": {}}'))


def test_timestamps_and_durations_that_are_not_finite_become_null():
    assert to_iso(float("inf")) is None
    assert to_iso(float("nan")) is None
    assert to_iso(-5) is None
    assert to_seconds("inf") is None and to_seconds("nan") is None
    assert to_iso(1_700_000_000_000) == "2023-11-14T22:13:20.000000Z", "milliseconds are recognised"


def test_error_types_say_whether_to_retry():
    assert is_permanent(PermanentError("x"))
    assert not is_permanent(TransientError("x"))
    assert not is_permanent(KeyError("bug")), "an unknown exception is retried, not dropped"


def test_redactor_masks_every_configured_secret_in_text(make_config):
    cfg = make_config()
    text = "failed with vr-secret-current and vb-url-token-123 and whsec_xyz789 inside"
    out = Redactor.from_config(cfg)(text)
    for secret in ("vr-secret-current", "vb-url-token-123", "whsec_xyz789"):
        assert secret not in out
    assert out.count("[redacted]") == 3


def test_a_sentinel_redis_url_is_accepted_by_the_config(make_config):
    cfg = make_config(env={"REDIS_URL": "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"},
                      redis_url="redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0")
    assert cfg.redis.url.startswith("redis+sentinel://")


def test_dead_letter_type_filter_star_matches_everything():
    from hooklane.shared.deadletters import Filters

    assert Filters(type="*").match({"event_type": "call.completed"})
    assert Filters(type="call.*").match({"event_type": "call.failed"})
    assert not Filters(type="call.*").match({"event_type": "campaign.started"})


def test_the_canonical_event_dict_round_trips_and_matches_its_json():
    import json

    from hooklane.shared.events import Call, Event

    event = Event(id="s:1", source="s", provider="p", type="call.completed", provider_type="x",
                  occurred_at="t", received_at="t", delivery_id=None,
                  call=Call(id="c", extraction={"a": [1]}, metadata={"m": 1}), raw={"deep": {"x": [1, 2]}})
    d = event.to_dict()
    assert json.loads(event.to_json()) == d
    assert Event.from_dict(json.loads(event.to_json())) == event
    assert set(d["call"]) == {"id", "direction", "phone", "status", "outcome", "duration_seconds", "started_at",
                              "ended_at", "recording_url", "transcript", "summary", "extraction", "metadata"}


def test_a_python_handler_that_mutates_its_event_does_not_change_what_the_next_handler_sees():
    from hooklane.shared.config import HandlerConfig
    from hooklane.workers.handlers.python import PythonHandler

    def vandal(event):
        event["call"]["phone"] = "changed"
        event["raw"]["data"] = None

    event = {"id": "x", "call": {"phone": "+1555"}, "raw": {"data": {"k": 1}}}
    PythonHandler(HandlerConfig(name="v", type="python", target="m:f", callable=vandal))(event)
    assert event == {"id": "x", "call": {"phone": "+1555"}, "raw": {"data": {"k": 1}}}
