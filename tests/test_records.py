"""Typed records keep the stored format: today's dicts read back and write out unchanged, bad ones are refused.

The dicts below are what workers wrote before the records existed (and still write): dead
letters in Redis, attempts and replays in RQ job meta, handler tasks in RQ job args. Their
keys are also the output of `hooklane dlq show --json` and the admin API.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from hooklane.shared.records import Attempt, DeadLetter, HandlerTask, RecordError, Replay

ATTEMPT = {"at": "2026-11-30T10:00:00.123456Z", "error_class": "TransientError", "message": "answered 503",
           "status": 503, "duration_ms": 12.5}
EVENT = {"id": "vr:call.completed:call_1", "type": "call.completed", "source": "vr", "provider": "volumereach",
         "delivery_id": "dlv-1", "call": {"id": "call_1", "phone": "+15551234567"}}
DELIVERY = {"v": 1, "id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "source": "vr", "provider": "volumereach",
            "received_at": "2026-11-30T09:59:59.000001Z", "body_b64": "eyJldmVudCI6ICJjYWxsLmNvbXBsZXRlZCJ9"}
HANDLER_ENTRY = {
    "id": "5c0ffee5c0ffee5c0ffee5c0ffee5c0f",
    "stage": "handler",
    "died_at": "2026-11-30T10:00:02.5Z",
    "source": "vr",
    "provider": "volumereach",
    "event_id": "vr:call.completed:call_1",
    "event_type": "call.completed",
    "handler": "crm",
    "error": {"class": "PermanentError", "message": "answered 400", "status": 400},
    "attempts": [ATTEMPT, {"at": "2026-11-30T10:00:02.4Z", "error_class": "KeyError", "message": "'x'",
                           "status": None, "duration_ms": 0.042},
                 {**ATTEMPT, "error_class": "PermanentError", "message": "answered 400", "status": 400,
                  "duration_ms": 3}],
    "traceback": "Traceback (most recent call last):\n  ...\nPermanentError: answered 400\n",
    "event": EVENT,
    "delivery": DELIVERY,
    "replays": [{"at": "2026-11-30T09:00:00Z", "job_id": "a" * 32, "entry_id": "b" * 32}],
}
# A body that never became an event: no event, handler or type; RQ's start time unknown.
NORMALIZE_ENTRY = {
    **HANDLER_ENTRY, "id": "inline-x", "stage": "normalize", "event_id": None, "event_type": None, "handler": None,
    "error": {"class": "NormalizeFailed", "message": "not JSON", "status": None},
    "attempts": [{**ATTEMPT, "error_class": "NormalizeFailed", "status": None, "duration_ms": None}],
    "event": None, "replays": [],
}
# A job whose argument was not an envelope at all is dead-lettered with that argument kept as it was.
POISON_ENTRY = {**NORMALIZE_ENTRY, "source": None, "provider": None, "delivery": ["not", "an", "envelope"],
                "attempts": []}


@pytest.mark.parametrize("stored", [HANDLER_ENTRY, NORMALIZE_ENTRY, POISON_ENTRY], ids=["handler", "normalize",
                                                                                        "poison"])
def test_a_dead_letter_in_the_stored_format_round_trips_unchanged(stored: dict[str, Any]) -> None:
    written = DeadLetter.from_dict(json.loads(json.dumps(stored))).to_dict()

    assert written == stored
    # Same keys in the same order: `dlq show --json` and the admin API print what is stored.
    assert json.dumps(written) == json.dumps(stored)


def test_a_dead_letter_reads_into_typed_fields() -> None:
    entry = DeadLetter.from_dict(HANDLER_ENTRY)

    assert entry.error.error_class == "PermanentError" and entry.error.status == 400
    assert [a.error_class for a in entry.attempts] == ["TransientError", "KeyError", "PermanentError"]
    assert entry.attempts[1].seconds == pytest.approx(0.000042)
    assert entry.replays == (Replay(at="2026-11-30T09:00:00Z", job_id="a" * 32, entry_id="b" * 32),)


@pytest.mark.parametrize(("record", "stored"), [
    (Attempt, ATTEMPT),
    (Replay, HANDLER_ENTRY["replays"][0]),
    (HandlerTask, {"event": EVENT, "handler": "crm", "delivery": DELIVERY}),
    (HandlerTask, {"event": EVENT, "handler": "crm", "delivery": None}),
], ids=["attempt", "replay", "handler task", "handler task without delivery"])
def test_job_args_and_meta_in_the_stored_format_round_trip_unchanged(record: Any, stored: dict[str, Any]) -> None:
    assert record.from_dict(json.loads(json.dumps(stored))).to_dict() == stored


NAMED = f"dead letter {HANDLER_ENTRY['id']}"  # how an error names the entry it is about


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(("stored", "reason"), [
    ("not an object", "dead letter: expected a JSON object, got str"),
    (_without(HANDLER_ENTRY, "died_at"), f"{NAMED}: missing died_at"),
    ({**HANDLER_ENTRY, "attempt": []}, f"{NAMED}: unknown attempt"),
    ({**HANDLER_ENTRY, "handler": 7}, f"{NAMED}.handler: expected str or null, got int 7"),
    ({**HANDLER_ENTRY, "stage": "retry"},
     f"{NAMED}.stage: expected one of normalize, delivery, handler, got 'retry'"),
    ({**HANDLER_ENTRY, "error": {"class": "X", "message": "m"}},
     f"{NAMED}.error: missing status"),
    ({**HANDLER_ENTRY, "attempts": [ATTEMPT, {**ATTEMPT, "status": True}]},
     f"{NAMED}.attempts[1].status: expected int or null, got bool True"),
    ({**HANDLER_ENTRY, "attempts": [ATTEMPT, "retried"]},
     f"{NAMED}.attempts[1]: expected a JSON object, got str"),
    ({**HANDLER_ENTRY, "replays": [{"at": "x", "job_id": "y"}]},
     f"{NAMED}.replays[0]: missing entry_id"),
], ids=["not an object", "missing key", "unknown key", "wrong type", "unknown stage", "bad error", "bool status",
        "attempt not an object", "bad replay"])
def test_a_malformed_dead_letter_is_refused_naming_what_is_wrong(stored: Any, reason: str) -> None:
    with pytest.raises(RecordError) as err:
        DeadLetter.from_dict(stored)
    assert str(err.value) == reason


@pytest.mark.parametrize(("stored", "reason"), [
    ({"handler": "crm", "delivery": None}, "handler task: missing event"),
    ({"event": {"type": "call.completed"}, "handler": "crm", "delivery": None},
     "handler task.event.id: expected str, got None"),
    ({"event": EVENT, "handler": None, "delivery": None}, "handler task.handler: expected str, got NoneType None"),
], ids=["no event", "event without id", "no handler"])
def test_a_malformed_handler_task_is_refused_naming_what_is_wrong(stored: Any, reason: str) -> None:
    with pytest.raises(RecordError) as err:
        HandlerTask.from_dict(stored)
    assert str(err.value) == reason


class _Refused(Exception):
    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self.status = status


def test_a_failure_becomes_an_attempt_with_its_message_redacted_and_capped() -> None:
    attempt = Attempt.of_failure(_Refused("token s3cret " + "x" * 5000, 429), time.monotonic() - 0.25,
                                 lambda text: text.replace("s3cret", "***"))

    assert attempt.error_class == "_Refused" and attempt.status == 429
    assert attempt.message.startswith("token *** x") and len(attempt.message) == 2000
    assert attempt.duration_ms is not None and attempt.duration_ms >= 250
    assert Attempt.from_dict(attempt.to_dict()) == attempt


@pytest.mark.parametrize("status", ["503", object(), True], ids=["str", "object", "bool"])
def test_an_exception_status_that_is_not_an_http_status_is_stored_as_null(status: Any) -> None:
    # A user's python handler may raise anything with a `status` attribute; the entry must still store as JSON.
    attempt = Attempt.of_failure(_Refused("no", status), None, str)

    assert attempt.status is None
    json.dumps(attempt.to_dict())


def test_a_dead_letter_written_for_a_failure_has_the_stored_keys() -> None:
    try:
        raise _Refused("answered 400", 400)
    except _Refused as exc:
        entry = DeadLetter.of_failure(entry_id="j1-crm", stage="handler", exc=exc, tb=exc.__traceback__,
                                      attempts=[Attempt.from_dict(ATTEMPT)], event=EVENT, delivery=DELIVERY,
                                      handler="crm", replays=[], redact=str)

    written = entry.to_dict()
    assert list(written) == list(HANDLER_ENTRY)
    assert written["error"] == {"class": "TransientError", "message": "answered 503", "status": 503}, \
        "the error shown is the last attempt's"
    assert (written["source"], written["provider"], written["event_id"], written["event_type"]) == (
        "vr", "volumereach", EVENT["id"], "call.completed")
    assert "_Refused: answered 400" in written["traceback"]
    assert DeadLetter.from_dict(written) == entry
