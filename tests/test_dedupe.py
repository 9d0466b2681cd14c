"""The dedupe claim's state table (workers/dedupe.py) on a real Redis: it runs a Lua script."""

from __future__ import annotations

import time

import pytest

from hooklane.workers.dedupe import DUPLICATE, NEW, RESUME, RUNNING, Deduper, seen_key

pytestmark = pytest.mark.redis


@pytest.fixture
def dedupe(real_redis) -> Deduper:
    return Deduper(real_redis, "hl", window_seconds=3600)


def test_the_first_delivery_of_an_event_claims_it(dedupe):
    assert dedupe.claim("vr:e1", "delivery-a").state == NEW


def test_another_delivery_of_the_same_event_is_a_duplicate(dedupe):
    dedupe.claim("vr:e1", "delivery-a")
    assert dedupe.claim("vr:e1", "delivery-b").state == DUPLICATE


def test_the_same_delivery_again_resumes_with_its_settled_handlers(dedupe):
    dedupe.claim("vr:e1", "delivery-a")
    dedupe.settle("vr:e1", "crm", "done")
    dedupe.settle("vr:e1", "dnc", "retrying")
    claim = dedupe.claim("vr:e1", "delivery-a")
    assert claim.state == RESUME and claim.settled == {"crm", "dnc"}


def test_the_same_delivery_after_it_finished_is_a_duplicate(dedupe):
    dedupe.claim("vr:e1", "delivery-a")
    dedupe.settle("vr:e1", "crm", "done", final=True)
    assert dedupe.claim("vr:e1", "delivery-a").state == DUPLICATE


def test_a_claim_expires_with_the_dedupe_window(real_redis):
    dedupe = Deduper(real_redis, "hl", window_seconds=120)
    dedupe.claim("vr:e1", "delivery-a")
    assert 0 < real_redis.ttl(seen_key("hl", "vr:e1")) <= 120


def test_distinct_events_do_not_interfere(dedupe):
    dedupe.claim("vr:e1", "delivery-a")
    assert dedupe.claim("vr:e2", "delivery-b").state == NEW


def test_the_same_delivery_while_another_run_of_it_is_alive_is_running_not_resumed(dedupe, real_redis):
    real_redis.zadd(dedupe.started_registry, {"job-a:run-1": time.time() + 50})  # RQ: a live execution
    dedupe.claim("vr:e1", "delivery-a", run="job-a:run-1")
    claim = dedupe.claim("vr:e1", "delivery-a", run="job-a:run-2")
    assert claim.state == RUNNING and 45 <= claim.running_for <= 51


def test_the_same_delivery_resumes_once_the_run_that_claimed_it_is_gone(dedupe, real_redis):
    dedupe.claim("vr:e1", "delivery-a", run="job-a:run-1")  # settled, or found dead by RQ's maintenance
    dedupe.settle("vr:e1", "crm", "done")
    claim = dedupe.claim("vr:e1", "delivery-a", run="job-a:run-2")
    assert claim.state == RESUME and claim.settled == {"crm"}
    real_redis.zadd(dedupe.started_registry, {"job-a:run-2": time.time() + 50})
    assert dedupe.claim("vr:e1", "delivery-a", run="job-a:run-3").state == RUNNING, \
        "the resumed run is now the live one"
