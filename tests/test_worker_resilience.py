"""The pieces behind riding out Redis outages, without a Redis: the retry loop and the abandoned-job intervals.

The real faults (Redis stopped, full, a worker killed) are in tests/test_worker_processes.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import structlog

from hooklane.workers import main, resilience


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[resilience.RedisState]:
    fresh = resilience.RedisState()
    monkeypatch.setattr(resilience, "STATE", fresh)
    monkeypatch.setattr(resilience.time, "sleep", lambda _: None)
    yield fresh


def flaky(errors: list[Exception]):
    calls = []

    def do() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    return do, calls


def test_an_outage_is_retried_until_redis_answers_with_one_line_each_way(state):
    do, calls = flaky([redis.ConnectionError("refused")] * 50 + [redis.exceptions.OutOfMemoryError("OOM")] * 5)
    closed = []
    with structlog.testing.capture_logs() as logs:
        assert resilience.RideOut().call_with_retry(do, closed.append) == "ok"
    assert len(calls) == 56 and len(closed) == 55, "the connection is closed before each new attempt"
    assert [line["event"] for line in logs] == ["redis.unavailable", "redis.recovered"]
    assert not state.down


@pytest.mark.parametrize("error", [redis.ResponseError("WRONGTYPE Operation against a key"),
                                   redis.exceptions.NoScriptError("NOSCRIPT"), redis.WatchError("changed"),
                                   redis.AuthenticationError("invalid username-password pair")])
def test_an_error_in_the_command_itself_is_raised_at_once(state, error):
    do, calls = flaky([error])
    with pytest.raises(type(error)):
        resilience.RideOut().call_with_retry(do, lambda _: None)
    assert len(calls) == 1
    assert not state.down


def test_refusals_reported_as_plain_response_errors_count_as_outages():
    assert resilience.is_outage(redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"))
    assert resilience.is_outage(redis.ResponseError(
        "Command # 1 (HSET k f v) of pipeline caused error: NOREPLICAS Not enough good replicas to write."))
    assert not resilience.is_outage(redis.ResponseError("ERR wrong number of arguments"))


def test_a_stopping_process_does_not_wait_for_redis(state):
    do, calls = flaky([redis.ConnectionError("refused")] * 3)
    with state.not_waiting(), pytest.raises(redis.ConnectionError):
        resilience.RideOut().call_with_retry(do, lambda _: None)
    assert len(calls) == 1
    assert resilience.RideOut().call_with_retry(do, lambda _: None) == "ok", "waiting again after the block"


def test_a_failing_reconnect_in_the_failure_handler_does_not_end_the_wait(state):
    do, _ = flaky([redis.ConnectionError("dropped")] * 2)

    def reconnect(error: Exception) -> None:
        raise redis.ConnectionError("still refused")

    assert resilience.RideOut().call_with_retry(do, reconnect) == "ok"


def test_the_policy_reaches_every_connection_of_the_client():
    client = resilience.install(redis.Redis(port=1))
    assert isinstance(client.connection_pool.make_connection().retry, resilience.RideOut)  # made, not connected


@pytest.mark.parametrize(("intervals", "retries_left", "expected"), [
    ([5, 30, 120, 600], 4, [0, 30, 120, 600]),
    ([5, 30, 120, 600], 2, [0, 600]),
    ([7], 3, [0, 7, 7]),  # RQ repeats a short list's first value: the later retries keep waiting 7
    ([5, 30], 4, [0, 5, 5, 30]),
])
def test_an_abandoned_jobs_next_retry_goes_at_once_and_the_later_ones_wait_as_before(intervals, retries_left,
                                                                                     expected):
    assert main.retry_now_then_as_before(intervals, retries_left) == expected
