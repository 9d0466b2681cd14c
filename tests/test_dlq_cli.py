"""`hooklane dlq`: list, show, replay and purge, against dead letters made by the real pipeline.

Dead letters come from signed volumereach deliveries through the ingest app and
an in-process RQ worker, with http handlers posting to a local sink whose
answers each test controls; the listing tests write entries directly in the
stored format, so they can pin `died_at`.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import BASE_CONFIG, TEST_ENV, add_dead_letter
from http_sink import HttpSink, SinkRequest

from hooklane.ingest.app import create_app
from hooklane.operators import actions as operator
from hooklane.operators.cli import main
from hooklane.shared import deadletters
from hooklane.shared.config import Config
from hooklane.shared.envelope import iso_utc
from hooklane.shared.providers import PROVIDERS, volumereach
from hooklane.shared.queueing import queue_name
from hooklane.workers import runtime
from hooklane.workers.main import build_worker

pytestmark = pytest.mark.redis

SOURCES = BASE_CONFIG.split("[handlers.log]")[0]
HANDLERS = """
[handlers.crm]
type = "http"
url = "{sink}/crm"
secret = "env:CRM_SECRET"
max_attempts = 1
timeout_seconds = 5

[handlers.warehouse]
type = "http"
url = "{sink}/warehouse"
max_attempts = 1
timeout_seconds = 5

[[routes]]
events = ["call.*"]
handlers = ["crm", "warehouse"]
"""


@dataclass
class Env:
    config: Config
    path: Path
    redis: redis.Redis
    sink: HttpSink

    def deliver(self, call_id: str, *, outcome: str = "INTERESTED", data: Any = None,
                metadata: dict[str, Any] | None = None) -> None:
        body = volumereach.samples()["call.completed"]
        body["data"] = {**body["data"], "call_id": call_id, "outcome": outcome,
                        "metadata": metadata or {"crmLeadId": "lead_1"}} if data is None else data
        raw = json.dumps(body).encode()
        headers = {**volumereach.sign(raw, TEST_ENV["VR_SECRET"].encode()),
                   "X-Webhook-Delivery-Id": f"dlv-{uuid.uuid4().hex[:8]}"}
        resp = create_app(self.config, self.redis).test_client().post("/webhooks/vr", data=raw, headers=headers)
        assert resp.status_code == 200, resp.get_json()

    def work(self) -> None:
        build_worker(self.config, redis=self.redis).work(burst=True)

    def entries(self, **filters: Any) -> list[dict[str, Any]]:
        return deadletters.list_entries(self.redis, self.config, deadletters.Filters(**filters), limit=None)

    def queued(self) -> int:
        return int(self.redis.llen(f"rq:queue:{queue_name(self.config)}"))

    def hits(self, path: str) -> list[SinkRequest]:
        """Every request the sink had on `path`, whatever it answered."""
        return [r for r in self.sink.requests if r.path == path]


@pytest.fixture
def env(make_config: Any, real_redis: redis.Redis, redis_server: Any, http_sink: HttpSink, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    text = SOURCES + HANDLERS.format(sink=http_sink.url)
    path = tmp_path / "hooklane.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("REDIS_URL", redis_server.url)  # what the CLI reads, like an operator's shell
    yield Env(make_config(text, redis_url=redis_server.url), path, real_redis, http_sink)
    runtime.install(None)


def cli(env: Env, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--config", str(env.path), *argv])
    out, err = capsys.readouterr()
    return code, out, err


class TtyInput(io.StringIO):
    """An operator at a terminal typing `text`."""

    def isatty(self) -> bool:
        return True


class TtyOutput(io.StringIO):
    def isatty(self) -> bool:
        return True


def write_entry(env: Env, **kw: Any) -> str:
    return add_dead_letter(env.redis, env.config, **kw)


def list_json(env: Env, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = cli(env, capsys, "dlq", "list", "--json", *argv)
    assert code == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- list


def test_list_shows_newest_first_and_counts_by_handler_and_error(env: Env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    old = write_entry(env, minutes_ago=30, handler="crm")
    mid = write_entry(env, minutes_ago=20, handler="warehouse", error_class="PermanentError", message="answered 400",
                      status=400)
    new = write_entry(env, minutes_ago=10, handler="crm")
    norm = write_entry(env, minutes_ago=5, stage="normalize", handler=None, error_class="NormalizeFailed",
                       message="volumereach payload field 'data' must be an object", status=None)

    code, out, _ = cli(env, capsys, "dlq", "list")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["ID", "DIED"]
    order = [line.split()[0] for line in lines[1:5]]
    assert order == [norm, new, mid, old]
    assert "4 dead letters, by handler and error:" in out
    summary = [line.split() for line in lines if line.startswith("  ")]
    assert ["crm", "TransientError", "2"] in summary
    assert ["warehouse", "PermanentError", "1"] in summary
    assert ["[normalize]", "NormalizeFailed", "1"] in summary


def test_list_json_has_rows_total_and_summary_over_every_match(env: Env, capsys) -> None:
    ids = [write_entry(env, minutes_ago=m, attempts=3) for m in (3, 2, 1)]

    data = list_json(env, capsys, "--limit", "2")

    assert data["total"] == 3 and data["count"] == 2
    assert [e["id"] for e in data["entries"]] == [ids[2], ids[1]]
    row = data["entries"][0]
    assert set(row) >= {"id", "died_at", "stage", "source", "provider", "event_id", "event_type", "handler",
                        "attempts", "replays", "error"}
    assert row["attempts"] == 3 and row["error"]["class"] == "TransientError"
    assert data["summary"] == [{"handler": "crm", "error": "TransientError", "count": 3}]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source", "vox"], {"vox"}),
        (["--provider", "voxpria"], {"vox"}),
        (["--type", "call.failed"], {"failed"}),
        (["--type", "call.*"], {"crm", "wh", "vox", "failed"}),
        (["--handler", "warehouse"], {"wh"}),
        (["--stage", "normalize"], {"norm"}),
        (["--error", "TIMEOUT"], {"wh"}),
        (["--since", "25m"], {"vox", "failed", "norm"}),
        (["--until", "25m"], {"crm", "wh"}),
        (["--since", "45m", "--until", "15m"], {"wh", "vox"}),
        (["--handler", "crm", "--source", "vr"], {"crm", "failed"}),
    ],
)
def test_list_filters_narrow_the_matches(env: Env, capsys, args: list[str], expected: set[str]) -> None:
    made = {
        "crm": write_entry(env, minutes_ago=60),
        "wh": write_entry(env, minutes_ago=40, handler="warehouse", message="timeout posting to http://x/"),
        "vox": write_entry(env, minutes_ago=20, source="vox", provider="voxpria"),
        "failed": write_entry(env, minutes_ago=10, event_type="call.failed"),
        "norm": write_entry(env, minutes_ago=5, stage="normalize", handler=None, error_class="NormalizeFailed"),
    }
    names = {v: k for k, v in made.items()}

    data = list_json(env, capsys, *args)

    assert {names[e["id"]] for e in data["entries"]} == expected
    assert data["total"] == len(expected)


def test_list_since_accepts_iso_8601(env: Env, capsys) -> None:
    write_entry(env, minutes_ago=120)
    recent = write_entry(env, minutes_ago=1)
    cutoff = iso_utc(datetime.now(UTC) - timedelta(hours=1))

    data = list_json(env, capsys, "--since", cutoff)

    assert [e["id"] for e in data["entries"]] == [recent]


def test_list_cuts_the_error_column_to_the_terminal_width(env: Env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    entry_id = write_entry(env, minutes_ago=1, message="x" * 500)

    code, out, _ = cli(env, capsys, "dlq", "list")

    assert code == 0
    table = out.split("\n\n")[0].splitlines()
    assert all(len(line) <= 120 for line in table), table
    assert table[1].startswith(entry_id + " ")  # the id is never cut: show/replay need it whole
    assert table[1].endswith("…")


def test_list_of_an_empty_queue_says_so(env: Env, capsys) -> None:
    code, out, _ = cli(env, capsys, "dlq", "list")
    assert code == 0 and "No dead letters" in out


@pytest.mark.parametrize(
    "args",
    [["--since", "yesterday"], ["--since", "1h", "--until", "2h"], ["--stage", "bogus"], ["--handler", ""],
     ["--limit", "-1"]],
)
def test_list_bad_filter_exits_2_with_a_reason(env: Env, capsys, args: list[str]) -> None:
    try:
        code, _, err = cli(env, capsys, "dlq", "list", *args)
    except SystemExit as exc:  # argparse's own usage errors
        code, err = exc.code, capsys.readouterr().err
    assert code == 2
    assert err.strip()


# --------------------------------------------------------------------------- show


def test_show_prints_event_delivery_attempts_and_traceback_with_secrets_redacted(env: Env, capsys) -> None:
    env.sink.status_by_path["/crm"] = 500
    # A provider echoing a credential back in its metadata: it reaches the event, the raw body and the entry.
    env.deliver("call_secret", metadata={"apiKey": TEST_ENV["CRM_SECRET"], "vr": TEST_ENV["VR_SECRET"]})
    env.work()
    [entry] = env.entries()
    assert TEST_ENV["CRM_SECRET"] in json.dumps(entry["event"])  # the stored entry really holds it

    code, out, _ = cli(env, capsys, "dlq", "show", entry["id"])
    code_json, out_json, _ = cli(env, capsys, "dlq", "show", entry["id"], "--json")

    assert code == code_json == 0
    for value in TEST_ENV.values():
        assert value not in out
        assert value not in out_json
    assert "[redacted]" in out
    for part in ("stage         handler", "handler       crm", "attempts (1):", "canonical event:", "raw delivery:",
                 "traceback:", '"call_id": "call_secret"', "TransientError"):
        assert part in out
    shown = json.loads(out_json)
    assert shown["event"]["call"]["metadata"]["apiKey"] == "[redacted]"
    assert shown["delivery"]["body_encoding"] == "utf-8"
    assert json.loads(shown["delivery"]["body"])["data"]["call_id"] == "call_secret"
    assert "body_b64" not in shown["delivery"]
    assert shown["attempts"][0]["status"] == 500
    assert "Traceback" in shown["traceback"]


def test_show_of_an_unknown_id_exits_1(env: Env, capsys) -> None:
    code, out, err = cli(env, capsys, "dlq", "show", "nope")
    assert code == 1 and out == "" and "no dead letter" in err


# --------------------------------------------------------------------------- replay


def test_replay_of_a_handler_entry_reruns_only_that_handler_and_delivers_once_fixed(env: Env, capsys) -> None:
    env.sink.status_by_path["/crm"] = 503
    env.deliver("call_1")
    env.work()
    [entry] = env.entries()
    assert entry["stage"] == "handler" and entry["handler"] == "crm"
    assert len(env.sink.delivered("/warehouse")) == 1

    env.sink.status_by_path["/crm"] = 200  # the CRM is back
    code, out, _ = cli(env, capsys, "dlq", "replay", entry["id"])
    assert code == 0, out
    assert f"replayed      {entry['id']} -> job" in out
    assert env.entries() == []  # left the queue once its job was enqueued
    assert env.queued() == 1
    env.work()

    [delivered] = env.sink.delivered("/crm")
    assert delivered.key == entry["event_id"] == delivered.event["id"]
    assert len(env.hits("/crm")) == 2  # the failed first try, then the replay
    assert len(env.hits("/warehouse")) == 1  # the handler that had succeeded did not run again
    assert env.entries() == []


def test_replay_of_a_normalize_entry_renormalizes_with_the_fixed_code(env: Env, capsys, monkeypatch) -> None:
    body = volumereach.samples()["call.completed"]
    env.deliver("ignored", data="call_77")  # "data" must be an object: this normalizer refuses it
    env.work()
    [entry] = env.entries()
    assert entry["stage"] == "normalize" and entry["event"] is None
    assert env.sink.requests == []

    original = PROVIDERS["volumereach"]

    def fixed_normalize(payload: Any, delivery: Any) -> Any:
        if isinstance(payload.get("data"), str):
            payload = {**payload, "data": {**body["data"], "call_id": payload["data"]}}
        return original.normalize(payload, delivery)

    monkeypatch.setitem(PROVIDERS, "volumereach", replace(original, normalize=fixed_normalize))
    code, _, err = cli(env, capsys, "dlq", "replay", entry["id"])
    assert code == 0, err
    env.work()

    assert [r.event["call"]["id"] for r in env.sink.delivered("/crm")] == ["call_77"]
    assert [r.event["call"]["id"] for r in env.sink.delivered("/warehouse")] == ["call_77"]
    assert env.entries() == []


def test_concurrent_replays_of_one_entry_enqueue_exactly_one_job(env: Env) -> None:
    env.sink.status_by_path["/crm"] = 503
    env.deliver("call_1")
    env.work()
    [entry] = env.entries()
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[dict[str, Any]] = []

    def operator_replays() -> None:
        barrier.wait()
        results.append(operator.replay_one(env.redis, env.config, entry["id"]))

    threads = [threading.Thread(target=operator_replays) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = sorted(r["status"] for r in results)
    assert statuses.count("replayed") == 1, statuses
    assert set(statuses) <= {"replayed", "not_found", "conflict"}
    assert env.queued() == 1
    assert env.entries() == []


def test_replaying_an_already_replayed_id_is_reported_and_exits_1(env: Env, capsys) -> None:
    env.sink.status_by_path["/crm"] = 503
    env.deliver("call_1")
    env.work()
    [entry] = env.entries()
    assert cli(env, capsys, "dlq", "replay", entry["id"])[0] == 0

    code, _, err = cli(env, capsys, "dlq", "replay", entry["id"], "missing-id")

    assert code == 1
    assert f"not found     {entry['id']}" in err and "not found     missing-id" in err
    assert env.queued() == 1  # still only the first replay's job


def test_a_replay_that_fails_again_comes_back_with_its_history(env: Env, capsys) -> None:
    env.sink.status_by_path["/crm"] = 503
    env.deliver("call_1")
    env.work()
    [first] = env.entries()

    assert cli(env, capsys, "dlq", "replay", first["id"])[0] == 0
    env.work()
    [second] = env.entries()
    assert cli(env, capsys, "dlq", "replay", second["id"])[0] == 0
    env.work()
    [third] = env.entries()

    assert len({first["id"], second["id"], third["id"]}) == 3
    assert third["event_id"] == first["event_id"] and third["handler"] == "crm"
    assert [a["status"] for a in third["attempts"]] == [503, 503, 503]
    assert [r["entry_id"] for r in third["replays"]] == [first["id"], second["id"]]
    assert len(env.hits("/crm")) == 3 and len(env.hits("/warehouse")) == 1


def test_bulk_replay_with_filters_and_yes_replays_only_the_matches(env: Env, capsys) -> None:
    env.sink.status_by_path["/crm"] = 503
    env.sink.status_by_path["/warehouse"] = 500
    for i in range(3):
        env.deliver(f"call_{i}")
    env.work()
    assert len(env.entries()) == 6

    code, out, _ = cli(env, capsys, "dlq", "replay", "--handler", "crm", "--yes")

    assert code == 0
    assert "3 dead letters: 3 replayed" in out
    assert env.queued() == 3
    assert {e["handler"] for e in env.entries()} == {"warehouse"}


def test_bulk_replay_dry_run_lists_the_plan_and_changes_nothing(env: Env, capsys) -> None:
    ids = {write_entry(env, minutes_ago=m) for m in (1, 2)}

    code, out, _ = cli(env, capsys, "dlq", "replay", "--all", "--dry-run")

    assert code == 0
    assert {line.split()[2] for line in out.splitlines() if line.startswith("would replay")} == ids
    assert "dry run: 2 dead letters: 2 would replay" in out
    assert len(env.entries()) == 2 and env.queued() == 0


def test_bulk_replay_refuses_without_yes_when_stdin_is_not_a_terminal(env: Env, capsys, monkeypatch) -> None:
    write_entry(env, minutes_ago=1)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # piped input is not a confirmation

    code, _, err = cli(env, capsys, "dlq", "replay", "--all")

    assert code == 2 and "--yes" in err
    assert len(env.entries()) == 1 and env.queued() == 0


@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 1, 2), ("\n", 1, 2), ("y\n", 0, 0)])
def test_bulk_replay_asks_the_operator_at_a_terminal(env: Env, capsys, monkeypatch, answer: str, code: int,
                                                     left: int) -> None:
    write_entry(env, minutes_ago=1)
    write_entry(env, minutes_ago=2)
    monkeypatch.setattr(sys, "stdin", TtyInput(answer))

    got, _, err = cli(env, capsys, "dlq", "replay", "--all")

    assert got == code
    assert "Replay 2 dead letters" in err
    assert len(env.entries()) == left


def test_bulk_replay_draws_a_progress_bar_only_on_a_terminal(env: Env, capsys, monkeypatch) -> None:
    for m in range(3):
        write_entry(env, minutes_ago=m)
    code, _, err = cli(env, capsys, "dlq", "replay", "--all", "--yes", "--dry-run")
    assert code == 0 and "\r" not in err

    tty = TtyOutput()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["--config", str(env.path), "dlq", "replay", "--all", "--yes"]) == 0

    assert "\rreplaying [" in tty.getvalue() and "3/3" in tty.getvalue()


def test_replay_json_reports_each_result(env: Env, capsys) -> None:
    entry_id = write_entry(env, minutes_ago=1)

    code, out, _ = cli(env, capsys, "dlq", "replay", entry_id, "gone", "--json")

    data = json.loads(out)
    assert code == 1
    assert data["counts"] == {"replayed": 1, "not_found": 1}
    ok = next(r for r in data["results"] if r["id"] == entry_id)
    assert ok["job_id"] and ok["handler"] == "crm" and ok["stage"] == "handler"


@pytest.mark.parametrize("args", [[], ["abc", "--all"], ["abc", "--handler", "crm"]])
def test_replay_usage_errors_exit_2(env: Env, capsys, args: list[str]) -> None:
    write_entry(env, minutes_ago=1)
    code, _, err = cli(env, capsys, "dlq", "replay", *args)
    assert code == 2 and err.strip()
    assert len(env.entries()) == 1


# --------------------------------------------------------------------------- purge


def test_purge_asks_for_confirmation_and_keeps_the_entry_on_no(env: Env, capsys, monkeypatch) -> None:
    entry_id = write_entry(env, minutes_ago=1)
    monkeypatch.setattr(sys, "stdin", TtyInput("n\n"))

    code, _, err = cli(env, capsys, "dlq", "purge", entry_id)

    assert code == 1 and "Delete 1 dead letter" in err
    assert deadletters.get(env.redis, env.config, entry_id) is not None


def test_purge_deletes_on_yes_at_the_terminal(env: Env, capsys, monkeypatch) -> None:
    entry_id = write_entry(env, minutes_ago=1)
    monkeypatch.setattr(sys, "stdin", TtyInput("yes\n"))

    code, out, _ = cli(env, capsys, "dlq", "purge", entry_id)

    assert code == 0 and f"purged        {entry_id}" in out
    assert deadletters.get(env.redis, env.config, entry_id) is None
    assert deadletters.count(env.redis, env.config) == 0


def test_purge_without_a_terminal_needs_yes(env: Env, capsys, monkeypatch) -> None:
    entry_id = write_entry(env, minutes_ago=1)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))

    code, _, err = cli(env, capsys, "dlq", "purge", entry_id)
    assert code == 2 and "--yes" in err
    assert deadletters.get(env.redis, env.config, entry_id) is not None

    code, _, _ = cli(env, capsys, "dlq", "purge", entry_id, "--yes")
    assert code == 0
    assert deadletters.get(env.redis, env.config, entry_id) is None


def test_purge_all_with_a_filter_deletes_only_the_matches(env: Env, capsys) -> None:
    keep = write_entry(env, minutes_ago=1, handler="crm")
    for m in (2, 3):
        write_entry(env, minutes_ago=m, handler="warehouse")

    code, out, _ = cli(env, capsys, "dlq", "purge", "--all", "--handler", "warehouse", "--yes", "--json")

    assert code == 0
    assert json.loads(out)["counts"] == {"purged": 2}
    assert [e["id"] for e in env.entries()] == [keep]


def test_purge_of_an_unknown_id_exits_1(env: Env, capsys) -> None:
    code, _, err = cli(env, capsys, "dlq", "purge", "nope", "--yes")
    assert code == 1 and "not found     nope" in err


def test_redis_unreachable_is_one_line_and_exit_2(env: Env, capsys, monkeypatch) -> None:
    from conftest import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, out, err = cli(env, capsys, "dlq", "list")
    assert code == 2 and out == ""
    assert err.startswith("hooklane dlq: Redis error: ConnectionError") and len(err.splitlines()) == 1
