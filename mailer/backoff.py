"""The one retry policy of `mailer`: exponential backoff, capped, optionally jittered.

Every retry (a campaign recipient after a 4xx, a confirmation in the outbox, a reconnect to
IMAP or SMTP, a supervised loop after a failure) waits `policy.delay_s(attempt)`; the named
policies below are the only place their numbers are written.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backoff:
    base_s: float
    max_s: float
    # None: retry for ever (reconnects); otherwise give up after this many failed attempts.
    max_attempts: int | None = None
    # 0: exact delays. 0.2: each delay is cut by up to 20% at random, so many clients that
    # failed together do not all come back in the same instant.
    jitter: float = 0.0

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The pause before retry number `attempt` (1 after the first failure, 2, ...)."""
        delay = float(min(self.base_s * 2 ** max(attempt - 1, 0), self.max_s))
        if self.jitter:
            delay *= 1.0 - self.jitter * rand()
        return delay

    def gives_up(self, attempts: int) -> bool:
        """True once `attempts` failed attempts are all this policy allows."""
        return self.max_attempts is not None and attempts >= self.max_attempts

    def retry_at(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after `attempts` failed attempts, or None to give up."""
        if self.gives_up(attempts):
            return None
        return now + timedelta(seconds=self.delay_s(attempts, rand=lambda: 0.0))


# A campaign recipient after a transient SMTP failure (attempts capped by [smtp] max_attempts).
CAMPAIGN_SEND = Backoff(base_s=1.0, max_s=60.0)
# A confirmation in the outbox: from 30 s up to an hour apart, for about a day.
CONFIRMATION = Backoff(base_s=30.0, max_s=3600.0, max_attempts=20)
# Restarting a supervised loop after a failure (the database locked, read-only or full).
RECONNECT = Backoff(base_s=1.0, max_s=60.0, jitter=0.2)
# Reconnecting to a server that went away (the daemon's IMAP session; the SMTP probe before a
# campaign paused by an unreachable server is resumed): capped low, so the server's return is
# noticed within seconds, while a months-long outage costs one connect attempt every 3-4 s.
SERVER_RECONNECT = Backoff(base_s=0.5, max_s=4.0, jitter=0.2)

# An erasure's IMAP clean-up (`consent.rights.run_pending_erasures`): retried until done.
ERASURE_CLEANUP = Backoff(base_s=60.0, max_s=6 * 3600.0)
