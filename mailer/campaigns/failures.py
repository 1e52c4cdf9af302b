"""Failure accounting and the auto-pause policy of a campaign send: pure decisions.

A run counts its own results (a campaign resumed after a fix starts with a clean slate) and
pauses itself once more than `threshold` of at least `min_sample` attempted recipients failed,
saying why. Retries of one recipient after a transient SMTP failure wait as
`mailer.backoff.CAMPAIGN_SEND` says, up to `[smtp] max_attempts` attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.backoff import Backoff
from mailer.store.campaigns import Counts

# The reason a person reads when a campaign pauses because the SMTP server stayed unreachable
# through the connection retries (its `paused_by` is "smtp-unavailable": the daemon resumes
# such a campaign by itself once the server answers; a pause by an operator, or for failed
# recipients, is left for a person).
SMTP_UNAVAILABLE = "paused: SMTP server unavailable"


def failure_threshold_passed(counts: Counts, *, threshold: float, min_sample: int) -> bool:
    """True once at least `min_sample` recipients were attempted and more than `threshold`
    of them failed."""
    attempted = counts.attempted
    return attempted >= min_sample and counts.failed > threshold * attempted


def failure_reason(counts: Counts, threshold: float, last_reply: str) -> str:
    share = counts.failed / counts.attempted if counts.attempted else 0.0
    reason = (
        f"paused: {counts.failed} of {counts.attempted} attempted recipients failed "
        f"({share:.0%}, above the failure threshold of {threshold:.0%})"
    )
    return f"{reason}; last reply: {last_reply}" if last_reply else reason


def retry_delay_s(policy: Backoff, attempts: int, max_attempts: int) -> float | None:
    """The pause before trying again after `attempts` failed attempts, or None: give up."""
    if attempts >= max_attempts or policy.gives_up(attempts):
        return None
    return policy.delay_s(attempts)


@dataclass
class FailureTally:
    """One run's results so far, and whether they call for a pause."""

    threshold: float
    min_sample: int
    sent: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, status: str, reply: str) -> str | None:
        """Count one settled recipient; the pause reason if the run must pause now."""
        if status == "sent":
            self.sent += 1
        elif status == "failed":
            self.failed += 1
            this_run = Counts(sent=self.sent, failed=self.failed)
            if failure_threshold_passed(this_run, threshold=self.threshold,
                                        min_sample=self.min_sample):
                return failure_reason(this_run, self.threshold, reply)
        elif status == "skipped":
            self.skipped += 1
        return None
