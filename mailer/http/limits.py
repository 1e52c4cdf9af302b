"""Token buckets per key: `per_min` a minute, with bursts of as many.

Pure bookkeeping over a clock (tests move time instead of sleeping). Memory is bounded by
forgetting buckets that have refilled completely (the same as no bucket) once there are many.
"""

from __future__ import annotations

import math

from mailer.clock import Clock


class RateLimiter:
    """`retry_after_s(key)`: 0 if the request may go ahead (and it is counted), else the
    seconds until it may (RFC 6585 §4's Retry-After). `per_min` 0 means no limit."""

    _MAX_KEYS = 50_000

    def __init__(self, per_min: int, clock: Clock) -> None:
        self._capacity = float(per_min)
        self._rate_per_s = per_min / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def retry_after_s(self, key: str) -> int:
        if self._capacity <= 0:
            return 0
        now = self._clock.monotonic()
        tokens, at = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - at) * self._rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._rate_per_s))
        if len(self._buckets) >= self._MAX_KEYS and key not in self._buckets:
            self._forget_idle(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0

    def _forget_idle(self, now: float) -> None:
        full_after_s = self._capacity / self._rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after_s}
