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
The window bounds memory: ~150 bytes per event for 7 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis

NEW, RESUME, DUPLICATE = "new", "resume", "duplicate"

_CLAIM = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if owner ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'done') == 1 then
  return {'duplicate'}
end
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

    @property
    def duplicate(self) -> bool:
        return self.state == DUPLICATE


def seen_key(prefix: str, event_id: str) -> str:
    return f"{prefix}:seen:{event_id}"


class Deduper:
    def __init__(self, redis: Redis, prefix: str, window_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window = window_seconds
        self._claim = redis.register_script(_CLAIM)

    def claim(self, event_id: str, delivery_id: str) -> Claim:
        reply = self._claim(keys=[seen_key(self.prefix, event_id)], args=[delivery_id, self.window])
        state, *settled = [x.decode() if isinstance(x, bytes) else x for x in reply]
        return Claim(state, set(settled))

    def settle(self, event_id: str, handler: str, state: str, *, pipeline=None, final: bool = False) -> None:
        """Record that `handler` needs nothing more from this delivery; `final` marks the event done."""
        mapping = {f"h:{handler}": state}
        if final:
            mapping["done"] = "1"
        (pipeline if pipeline is not None else self.redis).hset(seen_key(self.prefix, event_id), mapping=mapping)

    def finish(self, event_id: str, *, pipeline=None) -> None:
        (pipeline if pipeline is not None else self.redis).hset(seen_key(self.prefix, event_id), "done", "1")
