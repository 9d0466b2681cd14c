"""Provider normalizers: every fixture payload gives exactly its .expected.json, identities are stable.

Fixtures: tests/fixtures/<provider>/<provider_type>[--<variant>].json, the
payload bytes as a provider sends them, next to <same stem>.expected.json, the
canonical event for a delivery from source "<provider>" received at RECEIVED_AT.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

from hooklane.shared.envelope import Delivery
from hooklane.shared.events import Event
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import NormalizeError

RECEIVED_AT = "2026-01-01T00:00:00.000000Z"
# Where each provider names its event.
NAME_KEY = {"volumereach": "event", "voxpria": "event", "volubile": "status", "voipbin": "type", "voicekit": "event"}
WRAPPED = sorted(p for p in PROVIDERS if p != "volubile")  # {"<name>": …, "data": {…}} payloads


def payload_files() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*/*.json")
                  if not p.name.endswith(".expected.json") and p.name != "vectors.json")


def fixture_params() -> list[Any]:
    return [pytest.param(p, id=f"{p.parent.name}/{p.stem}") for p in payload_files()]


def delivery(provider: str, body: bytes, *, id: str = "0" * 32, received_at: str = RECEIVED_AT,
             delivery_id: str | None = None) -> Delivery:
    return Delivery(id=id, source=provider, provider=provider, received_at=received_at, body=body,
                    delivery_id=delivery_id)


def normalize(provider: str, body: bytes, **kw: Any) -> Event:
    return PROVIDERS[provider].normalize(json.loads(body), delivery(provider, body, **kw))


def body_of(payload: Any) -> bytes:
    return json.dumps(payload, indent=2).encode()


def sample(provider: str, provider_type: str) -> dict[str, Any]:
    return copy.deepcopy(PROVIDERS[provider].samples()[provider_type])


# --------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("path", fixture_params())
def test_fixture_normalizes_to_its_expected_event(path: Path) -> None:
    expected = json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))
    event = normalize(path.parent.name, path.read_bytes())
    assert event.to_dict() == expected


@pytest.mark.parametrize("path", fixture_params())
def test_redelivery_of_a_fixture_keeps_its_event_id(path: Path) -> None:
    body = path.read_bytes()
    first = normalize(path.parent.name, body)
    # A redelivery is a new request: new hooklane delivery id, later receipt, possibly a new provider delivery id.
    again = normalize(path.parent.name, body, id="f" * 32, received_at="2026-01-01T00:05:00.000000Z",
                      delivery_id="dlv_retry_2")
    assert again.id == first.id
    assert again.type == first.type


def test_distinct_fixtures_never_share_an_event_id() -> None:
    seen: dict[str, str] = {}
    for path in payload_files():
        event_id = normalize(path.parent.name, path.read_bytes()).id
        assert event_id not in seen, f"{path.parent.name}/{path.name} and {seen[event_id]} share {event_id}"
        seen[event_id] = f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", fixture_params())
def test_event_json_round_trips_through_from_dict(path: Path) -> None:
    event = normalize(path.parent.name, path.read_bytes())
    text = event.to_json()
    assert Event.from_dict(json.loads(text)) == event
    assert Event.from_dict(json.loads(text)).to_json() == text


def test_event_id_is_prefixed_with_the_configured_source_not_the_provider() -> None:
    body = (FIXTURES / "voicekit" / "call_ended.json").read_bytes()
    d = Delivery(id="0" * 32, source="vk-eu", provider="voicekit", received_at=RECEIVED_AT, body=body)
    event = PROVIDERS["voicekit"].normalize(json.loads(body), d)
    assert event.id == "vk-eu:call_ended:123"
    assert (event.source, event.provider) == ("vk-eu", "voicekit")


# --------------------------------------------------------------------------- unknown and malformed


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_unknown_event_type_flows_on_as_provider_dot_type(provider: str) -> None:
    payload = next(iter(PROVIDERS[provider].samples().values()))
    payload = copy.deepcopy(payload)
    payload[NAME_KEY[provider]] = "something_new.v2"
    event = normalize(provider, body_of(payload))
    assert event.type == f"{provider}.something_new.v2"
    assert event.provider_type == "something_new.v2"


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("payload", [[], [{"event": "call.completed"}], "call.completed", 42, 1.5, True, None],
                         ids=["list", "list-of-object", "string", "int", "float", "bool", "null"])
def test_non_object_payload_is_a_normalize_error(provider: str, payload: Any) -> None:
    with pytest.raises(NormalizeError):
        PROVIDERS[provider].normalize(payload, delivery(provider, json.dumps(payload).encode()))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("name", ["<missing>", "", None, 7, ["call.completed"], {"name": "x"}])
def test_missing_or_non_string_event_name_is_a_normalize_error(provider: str, name: Any) -> None:
    payload = sample(provider, next(iter(PROVIDERS[provider].samples())))
    if name == "<missing>":
        del payload[NAME_KEY[provider]]
    else:
        payload[NAME_KEY[provider]] = name
    with pytest.raises(NormalizeError):
        normalize(provider, body_of(payload))


@pytest.mark.parametrize("provider", WRAPPED)
@pytest.mark.parametrize("data", [[], ["x"], "text", 3])
def test_data_that_is_not_an_object_is_a_normalize_error(provider: str, data: Any) -> None:
    payload = sample(provider, next(iter(PROVIDERS[provider].samples())))
    payload["data"] = data
    with pytest.raises(NormalizeError):
        normalize(provider, body_of(payload))


ODD_VALUES = [None, "", [], {}, ["a", 1], {"k": "v"}, 0, -1, 1.5e300, True, "not a time", "9999-01-01"]


def field_swaps() -> list[Any]:
    cases = []
    for provider, prov in sorted(PROVIDERS.items()):
        for provider_type, payload in prov.samples().items():
            inner = payload if provider == "volubile" else payload.get("data", {})
            for key in inner:
                if provider == "volubile" and key == "status":
                    continue
                cases.append(pytest.param(provider, provider_type, key, id=f"{provider}-{provider_type}-{key}"))
    return cases


@pytest.mark.parametrize(("provider", "provider_type", "key"), field_swaps())
def test_odd_field_values_never_crash_the_normalizer(provider: str, provider_type: str, key: str) -> None:
    # Providers change shapes without notice: a wrong-typed field degrades to None, never a TypeError.
    for value in ODD_VALUES:
        payload = sample(provider, provider_type)
        (payload if provider == "volubile" else payload["data"])[key] = value
        event = normalize(provider, body_of(payload))
        json.loads(event.to_json())


# --------------------------------------------------------------------------- identity rules


def test_voipbin_updated_identity_is_the_body_hash() -> None:
    body = (FIXTURES / "voipbin" / "call_updated.json").read_bytes()
    assert normalize("voipbin", body).id == "voipbin:" + hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("provider_type", sorted(t for t in PROVIDERS["voipbin"].samples() if t.endswith("_updated")))
def test_voipbin_updated_events_of_one_resource_get_distinct_ids(provider_type: str) -> None:
    first = sample("voipbin", provider_type)
    second = copy.deepcopy(first)
    second["data"]["tm_update"] = "2030-01-01 00:00:00.000001"
    assert first["data"]["id"] == second["data"]["id"]
    assert normalize("voipbin", body_of(first)).id != normalize("voipbin", body_of(second)).id


def test_voipbin_non_updated_events_are_identified_by_type_and_resource_id() -> None:
    payload = sample("voipbin", "call_hungup")
    one = normalize("voipbin", body_of(payload))
    payload["data"]["tm_update"] = "2030-01-01 00:00:00.000001"  # a redelivery that re-rendered the resource
    assert normalize("voipbin", body_of(payload)).id == one.id == f"voipbin:call_hungup:{payload['data']['id']}"


def test_voipbin_same_resource_different_events_get_distinct_ids() -> None:
    kicking = normalize("voipbin", body_of(sample("voipbin", "queuecall_kicking")))
    serviced = normalize("voipbin", body_of(sample("voipbin", "queuecall_serviced")))
    assert kicking.raw["data"]["id"] == serviced.raw["data"]["id"]
    assert kicking.id != serviced.id


@pytest.mark.parametrize(("provider", "provider_type", "path"), [
    ("volumereach", "call.completed", ("data", "call_id")),
    ("voxpria", "call.completed", ("data", "callId")),
    ("voxpria", "campaign.finished", ("data", "campaignId")),
    ("volubile", "COMPLETED", ("id",)),
    ("voipbin", "call_hungup", ("data", "id")),
    ("voicekit", "call_ended", ("data", "call_id")),
])
def test_missing_natural_id_falls_back_to_the_body_hash(provider: str, provider_type: str,
                                                        path: tuple[str, ...]) -> None:
    payload = sample(provider, provider_type)
    target = payload
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    body = body_of(payload)
    assert normalize(provider, body).id == f"{provider}:{hashlib.sha256(body).hexdigest()}"


def test_voxpria_call_identity_ignores_the_delivery_timestamp() -> None:
    payload = sample("voxpria", "call.completed")
    one = normalize("voxpria", body_of(payload)).id
    payload["timestamp"] = "2025-02-09T12:00:05Z"
    assert normalize("voxpria", body_of(payload)).id == one == "voxpria:call.completed:call_xyz789"


def test_voxpria_a_campaign_paused_twice_is_two_events() -> None:
    payload = sample("voxpria", "campaign.paused")
    first = normalize("voxpria", body_of(payload)).id
    payload["timestamp"] = "2025-02-09T15:10:00Z"
    assert normalize("voxpria", body_of(payload)).id != first


def test_volubile_identity_is_call_id_and_status() -> None:
    payload = sample("volubile", "COMPLETED")
    assert normalize("volubile", body_of(payload)).id == f"volubile:{payload['id']}:COMPLETED"
    payload["status"] = "FAILED"
    assert normalize("volubile", body_of(payload)).id == f"volubile:{payload['id']}:FAILED"


def test_voicekit_numeric_call_id_becomes_a_string() -> None:
    event = normalize("voicekit", body_of(sample("voicekit", "call_started")))
    assert event.call.id == "123"
    assert event.id == "voicekit:call_started:123"


# --------------------------------------------------------------------------- mapping decisions


@pytest.mark.parametrize(("reason", "expected"), [
    ("normal", "call.completed"),
    ("timeout", "call.completed"),  # max call duration reached after answer
    ("amd", "call.completed"),  # answered, by a machine
    ("failed", "call.failed"),
    ("busy", "call.failed"),
    ("cancel", "call.failed"),
    ("noanswer", "call.failed"),
    ("unanswer", "call.failed"),
    ("dialout", "call.failed"),
    ("BUSY", "call.failed"),
    ("", "call.completed"),
])
def test_voipbin_hangup_reason_decides_completed_or_failed(reason: str, expected: str) -> None:
    payload = sample("voipbin", "call_hungup")
    payload["data"]["hangup_reason"] = reason
    assert normalize("voipbin", body_of(payload)).type == expected


@pytest.mark.parametrize(("status", "expected"), [
    ("initiating", "voipbin.recording_updated"),
    ("recording", "voipbin.recording_updated"),
    ("stopping", "voipbin.recording_updated"),
    ("ended", "recording.ready"),
])
def test_voipbin_recording_is_ready_only_once_ended(status: str, expected: str) -> None:
    payload = sample("voipbin", "recording_updated")
    payload["data"]["status"] = status
    assert normalize("voipbin", body_of(payload)).type == expected


@pytest.mark.parametrize(("direction", "phone"), [
    ("incoming", "+821100000002"), ("outgoing", "+821100000001"), ("", None), ("sideways", None),
])
def test_voipbin_phone_is_the_remote_party(direction: str, phone: str | None) -> None:
    payload = sample("voipbin", "call_hungup")  # source +821100000002, destination +821100000001
    payload["data"]["direction"] = direction
    assert normalize("voipbin", body_of(payload)).call.phone == phone


def test_voipbin_not_yet_timestamps_are_null() -> None:
    event = normalize("voipbin", body_of(sample("voipbin", "call_created")))
    assert event.call.ended_at is None
    assert event.call.duration_seconds is None
    assert event.occurred_at == "2022-04-11T00:23:53.636000Z"


def test_voipbin_hangup_happened_at_tm_hangup_not_at_a_later_update() -> None:
    payload = sample("voipbin", "call_hungup")
    payload["data"]["tm_update"] = "2022-04-11 06:11:30.000000"
    event = normalize("voipbin", body_of(payload))
    assert event.occurred_at == event.call.ended_at == "2022-04-11T06:10:58.431000Z"


def test_voipbin_transcript_speech_direction_is_not_a_call_direction() -> None:
    event = normalize("voipbin", body_of(sample("voipbin", "transcript_created")))
    assert event.call.direction is None
    assert event.call.transcript == "Hi, good to see you. How are you today."


@pytest.mark.parametrize(("outcome", "expected"), [
    ("INTERESTED", "call.completed"), ("DNC", "call.completed"), ("NO_ANSWER", "call.failed"),
    ("busy", "call.failed"), (None, "call.completed"),
])
def test_volumereach_outcome_decides_completed_or_failed(outcome: str | None, expected: str) -> None:
    payload = sample("volumereach", "call.completed")
    payload["data"]["outcome"] = outcome
    assert normalize("volumereach", body_of(payload)).type == expected


@pytest.mark.parametrize(("duration", "expected"), [
    (150, "call.completed"), (0, "call.failed"), (0.0, "call.failed"), (None, "call.completed"),
    ("<missing>", "call.completed"),
])
def test_voicekit_zero_duration_call_ended_is_failed(duration: Any, expected: str) -> None:
    payload = sample("voicekit", "call_ended")
    if duration == "<missing>":
        del payload["data"]["duration_seconds"]
    else:
        payload["data"]["duration_seconds"] = duration
    assert normalize("voicekit", body_of(payload)).type == expected


def test_volubile_classifiers_cannot_overwrite_extractors_and_win_the_classifiers_key() -> None:
    payload = sample("volubile", "COMPLETED")
    payload["extractorData"]["Sentiment"] = "extracted"
    payload["extractorData"]["classifiers"] = "an extractor named classifiers"
    extraction = normalize("volubile", body_of(payload)).call.extraction
    assert extraction["Sentiment"] == "extracted"
    assert extraction["classifiers"] == {"Customer's request": "Refund", "Sentiment": "Positive"}


def test_voxpria_explicit_inbound_direction_uses_the_caller_number() -> None:
    payload = sample("voxpria", "call.completed")
    payload["data"].update(direction="inbound", fromNumber="+14155550000")
    call = normalize("voxpria", body_of(payload)).call
    assert (call.direction, call.phone) == ("inbound", "+14155550000")
