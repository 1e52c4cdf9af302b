"""Time, passed in where leases, windows and backoffs are computed, so tests move it instead
of sleeping.

`SystemClock` is the real one. `Clock` is what code takes; a test passes its own object with
the same three methods (see `tests.helpers.FakeClock`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (for leases stored as numbers)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations and rates)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
