"""Retry schedule for (event, handler) pairs: exponential, capped, jittered.

With the defaults (60 s base, x4, 8 h cap, 8 attempts) the seven waits are about
1 min, 4 min, 16 min, 64 min, 4.3 h, 8 h, 8 h: roughly a day before the dead
letter. ±20 % jitter keeps a recovered CRM from being hit by every retry at once.
"""

from __future__ import annotations

import random

from hooklane.shared.config import WorkerConfig


def delays(config: WorkerConfig, retries: int, rng: random.Random | None = None) -> list[float]:
    """The waits before retries 1..`retries`, in seconds (rounded to 10 ms)."""
    rng = rng or random
    out = []
    for n in range(retries):
        base = min(config.backoff_cap_seconds, config.backoff_base_seconds * config.backoff_multiplier**n)
        jitter = 1.0 + rng.uniform(-config.backoff_jitter, config.backoff_jitter)
        out.append(round(max(0.0, base * jitter), 2))
    return out
