"""`suppression`: add the call's phone to a Redis set when its outcome is one of `outcomes`.

The seeds' DNC / NOT_OWNER / WRONG_NUMBER case. Numbers are stored in one
normalised form (digits, leading + kept) so "+1 (555) 123-4567" and
"+15551234567" are the same entry; `hooklane suppression check NUMBER` reads it.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from redis import Redis

from hooklane.shared.config import HandlerConfig

_NOT_DIGITS = re.compile(r"[^0-9]")


def normalize_phone(phone: str) -> str:
    digits = _NOT_DIGITS.sub("", phone)
    return ("+" + digits) if phone.strip().startswith("+") else digits


def set_key(prefix: str, name: str) -> str:
    return f"{prefix}:{name}"


def is_suppressed(redis: Redis, prefix: str, name: str, phone: str) -> dict[str, Any] | None:
    """The suppression record of `phone`, or None."""
    raw = redis.hget(set_key(prefix, name) + ":info", normalize_phone(phone))
    if raw is None:
        return None
    return json.loads(raw)


class SuppressionHandler:
    def __init__(self, cfg: HandlerConfig, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.key = set_key(prefix, cfg.suppression_key)
        self.outcomes = {o.upper() for o in cfg.outcomes}

    def __call__(self, event: dict[str, Any]) -> None:
        call = event.get("call") or {}
        outcome, phone = call.get("outcome"), call.get("phone")
        if not outcome or not phone or str(outcome).upper() not in self.outcomes:
            return
        number = normalize_phone(str(phone))
        if not number.lstrip("+"):
            return
        record = json.dumps({"event_id": event["id"], "outcome": outcome, "phone": phone, "at": time.time()})
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.key, number)
        pipe.hsetnx(self.key + ":info", number, record)
        pipe.execute()
