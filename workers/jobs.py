"""The two RQ jobs and the failure policy that turns every failure into a retry or a dead letter.

process_delivery(envelope)      one job per accepted delivery (ingest writes it):
    normalize -> dedupe claim -> route -> run each handler inline (first attempt).
    A handler that fails is handed, in the same Redis transaction that settles it,
    to its own `run_handler` job (scheduled with backoff) or, if permanent, to the
    dead-letter queue; the other handlers are not affected and never re-run.
    The happy path costs one RQ job per event, whatever the number of handlers.

run_handler(task)               one (event, handler) pair's attempts 2..max_attempts,
    retried by RQ's scheduler with the backoff in job.retry_intervals.

on_failure(job, ...)            the worker's exception handler (also called by RQ for
    abandoned jobs): records the attempt in job.meta, makes permanent errors final
    (retries_left = 0: RQ has no "do not retry" exception) and, when nothing is
    left, writes the dead letter. Exceptions are never swallowed inside a job.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

from rq import get_current_job
from rq.job import Job

from hooklane.shared import counters, deadletters, logs
from hooklane.shared.backoff import delays
from hooklane.shared.config import HandlerConfig
from hooklane.shared.envelope import Delivery, EnvelopeError, log_delivery_id
from hooklane.shared.events import Event
from hooklane.shared.providers import PROVIDERS
from hooklane.shared.providers.base import Provider
from hooklane.shared.queueing import PROCESS_DELIVERY, RUN_HANDLER, enqueue_handler_job
from hooklane.shared.records import Attempt, DeadLetter, HandlerTask, RecordError, Replay
from hooklane.workers import job_metrics, runtime
from hooklane.workers.dedupe import RUNNING
from hooklane.workers.errors import NormalizeFailed, PermanentError, TransientError, is_permanent

log = logs.get_logger("hooklane.worker")


# --------------------------------------------------------------------------- normalize


# Provider payloads nest a handful of levels. Far deeper, whatever walks the event later (json.dumps
# inside RQ's job, the python handler's deepcopy at ~2 frames a level) hits the recursion limit: a
# RecursionError there would be retried as transient, forever the same. So a body is bounded here.
MAX_DEPTH = 64
# An event id travels in a Redis key and in two HTTP headers (percent-encoded: up to 3x longer);
# receivers refuse header lines past ~8 KB, which would fail every attempt alike. Real ids are < 100.
MAX_ID_BYTES = 512


def normalize(delivery: Delivery) -> Event:
    """The delivery's canonical event, or NormalizeFailed: a body that can never become one.

    An event that comes out of here can be sent: it serialises as UTF-8 JSON (no NaN or
    ±Infinity, no lone surrogate anywhere, keys included) and its id can be claimed.
    Anything else is refused now, once, rather than failing the same way on every retry.
    """
    provider = PROVIDERS.get(delivery.provider)
    if provider is None:
        raise NormalizeFailed(f"unknown provider {delivery.provider!r}")
    # A wire format of the provider's own (twilio's forms), else JSON, refused here if no event could carry it.
    payload = _provider_parse(provider, delivery) if provider.parse is not None else _parse_body(delivery.body)
    try:
        event = provider.normalize_payload(payload, delivery, _source_options(provider, delivery))
    except Exception as exc:  # noqa: BLE001 - any normalizer failure is permanent for this body; replay after a fix
        raise NormalizeFailed(f"{delivery.provider} normalizer: {type(exc).__name__}: {exc}") from exc
    try:
        event.to_json().encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise NormalizeFailed(f"the event cannot be sent as UTF-8 JSON: {type(exc).__name__}: {exc}") from exc
    id_bytes = len(event.id.encode("utf-8"))
    if id_bytes > MAX_ID_BYTES:
        raise NormalizeFailed(f"event id is {id_bytes} bytes long, more than {MAX_ID_BYTES}")
    return event


def _provider_parse(provider: Provider, delivery: Delivery) -> Any:
    try:
        return provider.parse(delivery)  # type: ignore[misc]
    except (UnicodeDecodeError, ValueError) as exc:
        raise NormalizeFailed(f"{delivery.provider} body cannot be read: {exc}") from exc


def _parse_body(body: bytes) -> Any:
    try:
        # What json.loads(bytes) does, with one decoder built once rather than one per call.
        payload = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except RecursionError as exc:
        raise NormalizeFailed(f"body nests deeper than {MAX_DEPTH} levels") from exc
    except _NotPortable as exc:
        raise NormalizeFailed(f"body has a value JSON cannot carry on: {exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise NormalizeFailed(f"body is not JSON: {exc}") from exc
    # Counting brackets is a cheap upper bound of the depth (strings count too): most bodies stop here.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise NormalizeFailed(f"body nests deeper than {MAX_DEPTH} levels")
    return payload


class _NotPortable(ValueError):
    """Parses in Python, but the event built from it could not be written as JSON again."""


def _source_options(provider: Provider, delivery: Delivery) -> Any:
    # Only providers with per-source settings look the source up (a removed source: the defaults).
    if not provider.takes_context:
        return None
    source = runtime.get().config.sources.get(delivery.source)
    return source.options if source is not None and source.provider == provider.name else None


def _refuse_constant(name: str) -> float:
    # NaN/Infinity are not JSON (RFC 8259); accepting them would put non-JSON in every event we send.
    raise _NotPortable(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but overflows a double to inf, which no JSON can carry: refused like Infinity.
    value = float(text)
    if math.isinf(value):
        raise _NotPortable(f"number {text[:40]} overflows a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _depth(value: Any) -> int:
    """Nesting of lists and objects, counted without recursion (stops once past MAX_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _read_delivery(envelope: Any) -> Delivery:
    try:
        return Delivery.from_dict(envelope)
    except EnvelopeError as exc:
        raise NormalizeFailed(str(exc)) from exc


# --------------------------------------------------------------------------- jobs


def process_delivery(envelope: dict[str, Any]) -> None:
    rt = runtime.get()
    job = get_current_job()
    if not _should_run(rt, job):
        return
    job_metrics.replay_started(job, "delivery")
    delivery = _read_delivery(envelope)
    logs.clear()
    logs.bind(
        request_id=delivery.id,
        delivery_id=log_delivery_id(delivery.delivery_id, delivery.body),
        source=delivery.source,
        provider=delivery.provider,
        job_id=job.id if job else None,
    )
    event = normalize(delivery)
    job_metrics.EVENTS_NORMALIZED.labels(event.provider, event.type).inc()
    logs.bind(event_id=event.id, event_type=event.type)
    prefix = rt.config.redis.prefix

    claim = rt.deduper.claim(event.id, delivery.id, runtime.current_execution.get())
    if claim.state == RUNNING:
        # Retried once the other run's execution can no longer be alive: by then it settled (DUPLICATE) or died.
        raise TransientError("this delivery is running in another job", retry_after=max(claim.running_for, 1))
    if claim.duplicate:
        log.info("event.duplicate")
        pipe = rt.redis.pipeline(transaction=False)
        counters.bump(pipe, prefix, "duplicates")
        pipe.execute()
        job_metrics.DUPLICATES.labels(event.source).inc()
        return

    targets = rt.config.handlers_for(event.type, event.source)
    pending = [h for h in targets if h.name not in claim.settled]
    # Debug: every handler attempt logs its own line with these ids; one more per event costs ~10% of a worker.
    log.debug("event.normalized", handlers=[h.name for h in targets], resumed=claim.state == "resume")
    if not pending:
        pipe = rt.redis.pipeline(transaction=False)
        rt.deduper.finish(event.id, pipeline=pipe)
        counters.bump(pipe, prefix, "processed")
        if not targets:
            log.info("event.unrouted")
            counters.bump(pipe, prefix, "unrouted")
        pipe.execute()
        return

    event_dict = event.to_dict()
    for i, handler in enumerate(pending):
        _run_inline(rt, handler, event_dict, envelope, job, final=i == len(pending) - 1)


def _should_run(rt: runtime.Runtime, job: Job | None) -> bool:
    """False only for a dead job RQ's tools requeued after its dead letter was replayed or purged.

    hooklane never runs a dead job again: only `rq requeue` or rq-dashboard brings one back.
    Such a run takes the dead letter (it is the replay), or, if the entry is gone, does
    nothing: the event was replayed or purged already (shared/deadletters.py, "One truth").
    """
    entry_id = (job.meta or {}).get("dead_letter") if job else None
    if job is None or entry_id is None:
        return True
    with logs.bound(job_id=job.id):
        if not deadletters.take(rt.redis, rt.config, entry_id):
            log.warning("job.requeue_ignored", reason="its dead letter was replayed or purged already")
            return False
        log.info("job.requeued_from_failed", entry_id=entry_id)
    meta = job.meta
    del meta["dead_letter"]
    meta["replays"] = [*(meta.get("replays") or []), Replay.now(job.id, entry_id).to_dict()]
    job.save_meta()
    return True


def _run_inline(rt: runtime.Runtime, handler: HandlerConfig, event: dict[str, Any], envelope: dict[str, Any],
                job: Job | None, *, final: bool) -> None:
    """A handler's first attempt, inside the delivery job; a failure is handed on, never dropped."""
    started = time.monotonic()
    with logs.bound(handler=handler.name, attempt=1):
        try:
            rt.handlers[handler.name](event)
        except Exception as exc:  # noqa: BLE001 - any handler failure becomes a retry job or a dead letter below
            attempt = Attempt.of_failure(exc, started, rt.redact)
            # One transaction: the hand-off and the "settled" mark land together or not at all.
            pipe = rt.redis.pipeline(transaction=True)
            if is_permanent(exc) or handler.max_attempts <= 1:
                _dead_letter_inline(rt, pipe, handler, event, envelope, job, exc, attempt, final=final)
            else:
                _schedule_retry(rt, pipe, handler, event, envelope, exc, attempt, final=final)
            if final:
                counters.bump(pipe, rt.config.redis.prefix, "processed")
            pipe.execute()
            return
        pipe = rt.redis.pipeline(transaction=False)
        rt.deduper.settle(event["id"], handler.name, "done", pipeline=pipe, final=final)
        if final:
            counters.bump(pipe, rt.config.redis.prefix, "processed")
        pipe.execute()
        log.info("handler.done", duration_ms=round((time.monotonic() - started) * 1000, 3))
        job_metrics.handler_attempt(handler.name, job_metrics.OK, time.monotonic() - started)


def _dead_letter_inline(rt: runtime.Runtime, pipe: Any, handler: HandlerConfig, event: dict[str, Any],
                        envelope: dict[str, Any], job: Job | None, exc: Exception, attempt: Attempt,
                        *, final: bool) -> None:
    entry = DeadLetter.of_failure(
        entry_id=f"{job.id if job else 'inline'}-{handler.name}", stage="handler", exc=exc,
        tb=exc.__traceback__, attempts=[attempt], event=event, delivery=envelope, handler=handler.name, replays=[],
        redact=rt.redact,
    )
    deadletters.add(rt.redis, rt.config, entry, pipeline=pipe)
    rt.deduper.settle(event["id"], handler.name, "dead", pipeline=pipe, final=final)
    counters.bump(pipe, rt.config.redis.prefix, "dead_lettered")
    log.error("handler.dead_lettered", error=attempt.error_class, message=attempt.message, status=attempt.status)
    job_metrics.handler_attempt(handler.name, job_metrics.DEAD_LETTER, attempt.seconds)
    job_metrics.dead_lettered("handler", handler.name)


def _schedule_retry(rt: runtime.Runtime, pipe: Any, handler: HandlerConfig, event: dict[str, Any],
                    envelope: dict[str, Any], exc: Exception, attempt: Attempt, *, final: bool) -> None:
    waits = delays(rt.config.worker, handler.max_attempts - 1)
    first_wait = max(waits[0], getattr(exc, "retry_after", None) or 0.0)
    retry_job = enqueue_handler_job(
        rt.redis, pipe, rt.config,
        task=HandlerTask(event=event, handler=handler.name, delivery=envelope),
        prior_attempts=[attempt], retries=handler.max_attempts - 2, delay=first_wait, intervals=waits[1:],
    )
    rt.deduper.settle(event["id"], handler.name, "retrying", pipeline=pipe, final=final)
    counters.bump(pipe, rt.config.redis.prefix, "retries")
    counters.bump(pipe, rt.config.redis.prefix, "retry_attempts")
    log.warning("handler.retry_scheduled", error=attempt.error_class, message=attempt.message,
                status=attempt.status, retry_in_s=first_wait, retry_job_id=retry_job.id)
    job_metrics.handler_attempt(handler.name, job_metrics.RETRY, attempt.seconds)


def run_handler(arg: dict[str, Any]) -> None:
    rt = runtime.get()
    job = get_current_job()
    if not _should_run(rt, job):
        return
    job_metrics.replay_started(job, "handler")
    try:
        task = HandlerTask.from_dict(arg)
    except RecordError as exc:
        raise PermanentError(f"run_handler job {job.id if job else '?'}: {exc}") from exc
    event, name, delivery = task.event, task.handler, task.delivery or {}
    attempt_no = len((job.meta or {}).get("attempts", [])) + 1 if job else 1
    logs.clear()
    logs.bind(
        request_id=delivery.get("id"),
        delivery_id=log_delivery_id(event.get("delivery_id"), base64.b64decode(delivery.get("body_b64", ""))),
        source=event.get("source"),
        provider=event.get("provider"),
        event_id=event["id"],
        event_type=event.get("type"),
        handler=name,
        attempt=attempt_no,
        job_id=job.id if job else None,
    )
    handler = rt.handlers.get(name)
    if handler is None:
        raise PermanentError(f"handler {name!r} is not configured in this worker")
    started = time.monotonic()
    handler(event)
    log.info("handler.done", duration_ms=round((time.monotonic() - started) * 1000, 3))
    job_metrics.handler_attempt(name, job_metrics.OK, time.monotonic() - started)


# --------------------------------------------------------------------------- failures


def on_failure(job: Job, exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """RQ exception handler: runs before RQ decides between retry and failed (and for abandoned jobs)."""
    if job.func_name not in (PROCESS_DELIVERY, RUN_HANDLER):
        return None
    rt = runtime.get()
    meta = job.meta if job.meta is not None else {}
    attempts = meta.setdefault("attempts", [])
    attempt = Attempt.of_failure(exc, job.started_at, rt.redact)
    attempts.append(attempt.to_dict())
    job.meta = meta
    if is_permanent(exc):
        job.retries_left = 0  # RQ has no "do not retry": this is how a permanent error skips the rest
    retry_after = getattr(exc, "retry_after", None)
    if retry_after and job.retries_left and job.retry_intervals:
        index = max(len(job.retry_intervals) - job.retries_left, 0)
        if index < len(job.retry_intervals):
            job.retry_intervals[index] = max(job.retry_intervals[index], retry_after)

    arg = job.args[0] if job.args else {}
    is_handler = job.func_name == RUN_HANDLER
    task = _handler_task(arg) if is_handler else None
    with logs.bound(job_id=job.id, attempt=len(attempts)):
        if job.retries_left and job.retries_left > 0:
            job.save_meta()
            pipe = rt.redis.pipeline(transaction=False)
            counters.bump(pipe, rt.config.redis.prefix, "retry_attempts")
            pipe.execute()
            log.warning("job.retry_scheduled", stage="handler" if is_handler else "delivery",
                        error=exc_type.__name__, message=attempt.message, retries_left=job.retries_left)
            if is_handler:
                job_metrics.handler_attempt(task.handler if task else None, job_metrics.RETRY, attempt.seconds)
            return None
        if task is not None:
            stage, event, delivery, handler = "handler", task.event, task.delivery, task.handler
        elif is_handler:
            # An argument that is no task (run_handler refused it) is kept whole: nothing is lost.
            stage, event, delivery, handler = "handler", None, arg, None
        else:
            stage = "normalize" if isinstance(exc, NormalizeFailed) else "delivery"
            event, delivery, handler = None, arg, None
        entry = DeadLetter.of_failure(entry_id=job.id, stage=stage, exc=exc, tb=tb,
                                      attempts=[Attempt.from_dict(a) for a in attempts], event=event,
                                      delivery=delivery, handler=handler,
                                      replays=[Replay.from_dict(r) for r in meta.get("replays") or []],
                                      redact=rt.redact)
        # Marks the job, should RQ's tools requeue it: its run must then take this entry, not run twice.
        meta["dead_letter"] = job.id
        pipe = rt.redis.pipeline(transaction=True)
        deadletters.add(rt.redis, rt.config, entry, pipeline=pipe)
        if is_handler and event:
            rt.deduper.settle(event["id"], handler, "dead", pipeline=pipe)
        counters.bump(pipe, rt.config.redis.prefix, "dead_lettered")
        pipe.execute()
        job.save_meta()
        log.error("job.dead_lettered", stage=stage, handler=handler, error=exc_type.__name__,
                  message=attempt.message, attempts=len(attempts))
        if is_handler:
            job_metrics.handler_attempt(handler, job_metrics.DEAD_LETTER, attempt.seconds)
        job_metrics.dead_lettered(stage, handler)
    return None


def _handler_task(arg: Any) -> HandlerTask | None:
    try:
        return HandlerTask.from_dict(arg)
    except RecordError:
        return None
