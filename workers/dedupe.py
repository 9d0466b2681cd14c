"""Dedupe: a redelivered event fans out once; a re-run of the same delivery resumes.

One Redis hash per event id, ``<prefix>:seen:<event id>``, expiring after the
dedupe window (7 days by default):

    owner      the delivery id (envelope id) that claimed the event
    h:<name>   settled handler: "done", "retrying" (handed to a retry job) or "dead"
    done       "1" once every routed handler is settled

`claim` decides, atomically in one round trip:

    no hash                          -> NEW: this delivery owns the event, fan out
    owner == this delivery, no done  -> RESUME: the same delivery again (RQ retry after a
                                        crash or Redis error, or an operator replay of a
                                        dead-lettered delivery); skip the settled handlers
      ... but another run of it alive -> RUNNING: the same delivery runs in another job at this
                                        moment (its job id queued twice, two workers or threads
                                        took both); that run fans out, this one is retried later
    owner == this delivery, done     -> DUPLICATE: the job ran to the end already
                                        (e.g. ingest's transaction was retried by the client)
    owner != this delivery           -> DUPLICATE: the provider delivered the event again

Crash cases covered (tests/test_dedupe.py, tests/test_worker_pipeline.py, and a real SIGKILL in
tests/test_worker_processes.py):
- killed after the claim, before any handler: RQ re-runs the job -> RESUME -> all handlers run;
- killed between two handlers: RESUME skips the first (settled "done"), runs the second;
- killed after handing a failure to a retry job: the handler is settled "retrying",
  so the re-run does not schedule a second retry chain;
- a redelivery while the first delivery is still retrying or dead-lettered: DUPLICATE;
  the first copy is the one that is retried or replayed, so nothing is lost.
`run` holds the RQ execution (job id:execution id) that last claimed the event. It is alive
while it is in the queue's StartedJobRegistry: settling the job removes it, and so does
RQ's maintenance when the run died (before that job is retried, so a retry always resumes).
The window bounds memory: ~150 bytes per event for 7 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis

NEW, RESUME, DUPLICATE, RUNNING = "new", "resume", "duplicate", "running"

# KEYS: the event's hash, the StartedJobRegistry. ARGV: delivery id, window, this run ("" outside RQ).
_CLAIM = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'run', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if owner ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'done') == 1 then
  return {'duplicate'}
end
local run = redis.call('HGET', KEYS[1], 'run')
if run and run ~= '' and run ~= ARGV[3] then
  local expires = redis.call('ZSCORE', KEYS[2], run)
  if expires then
    return {'running', tostring(math.ceil(tonumber(expires) - tonumber(redis.call('TIME')[1])))}
  end
end
redis.call('HSET', KEYS[1], 'run', ARGV[3])
local out = {'resume'}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'h:' then table.insert(out, string.sub(all[i], 3)) end
end
return out
"""


@dataclass
class Claim:
    state: str
    settled: set[str] = field(default_factory=set)
    running_for: int = 0  # RUNNING: seconds until the other run counts as abandoned, unless it beats again

    @property
    def duplicate(self) -> bool:
        return self.state == DUPLICATE


def seen_key(prefix: str, event_id: str) -> str:
    return f"{prefix}:seen:{event_id}"


class Deduper:
    def __init__(self, redis: Redis, prefix: str, window_seconds: int, started_registry: str = "") -> None:
        """`started_registry`: the key of the queue's RQ StartedJobRegistry (where live runs are)."""
        self.redis = redis
        self.prefix = prefix
        self.window = window_seconds
        self.started_registry = started_registry or f"rq:wip:{prefix}"
        self._claim = redis.register_script(_CLAIM)

    def claim(self, event_id: str, delivery_id: str, run: str = "") -> Claim:
        """`run`: the RQ execution claiming, "<job id>:<execution id>"; "" outside a worker."""
        reply = self._claim(keys=[seen_key(self.prefix, event_id), self.started_registry],
                            args=[delivery_id, self.window, run])
        state, *rest = [x.decode() if isinstance(x, bytes) else x for x in reply]
        if state == RUNNING:
            return Claim(state, running_for=int(rest[0]))
        return Claim(state, set(rest))

    def settle(self, event_id: str, handler: str, state: str, *, pipeline=None, final: bool = False) -> None:
        """Record that `handler` needs nothing more from this delivery; `final` marks the event done."""
        mapping = {f"h:{handler}": state}
        if final:
            mapping["done"] = "1"
        (pipeline if pipeline is not None else self.redis).hset(seen_key(self.prefix, event_id), mapping=mapping)

    def finish(self, event_id: str, *, pipeline=None) -> None:
        (pipeline if pipeline is not None else self.redis).hset(seen_key(self.prefix, event_id), "done", "1")
