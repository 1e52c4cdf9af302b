"""Campaigns as plain values: the dataclasses, the status machine and the small decisions.

Nothing here touches the database or the network. A campaign moves through

    draft ──send──▶ sending ──(all recipients settled)──▶ sent
    draft ──(created with --at)──▶ scheduled ──(due)──▶ sending
    sending ──pause / Ctrl-C / failure threshold──▶ paused ──resume──▶ scheduled (due now)
    draft | scheduled | sending | paused ──cancel──▶ cancelled

and each operator action is a pure function of the current status (`next_status`), which
either names the new status or raises `CampaignRefused` with one line saying why.

Errors the service raises, by the exit code the CLI gives them (see `mailer.cli_support`):

    CampaignError
     ├── CampaignNotFound   (1) no such campaign, or no such customer to preview for
     ├── CampaignRefused    (1) the action does not apply to the campaign's status, or another
     │                          process holds the campaign's sending lease
     └── CampaignInvalid    (2) bad input: kind, time, template, or missing secret/unsubscribe URL
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from mailer.categories import CATEGORIES
from mailer.errors import CampaignInvalid as CampaignInvalid
from mailer.errors import CampaignNotFound as CampaignNotFound
from mailer.errors import CampaignRefused as CampaignRefused

# A campaign operation that cannot be done (any of the three below); str() is one line.
CampaignError = CampaignInvalid | CampaignNotFound | CampaignRefused

KINDS: tuple[str, ...] = CATEGORIES
STATUSES: tuple[str, ...] = ("draft", "scheduled", "sending", "paused", "sent", "cancelled",
                             "failed")
Action = Literal["send", "pause", "resume", "cancel"]

# Which statuses each operator action applies to, and the status it leads to.
_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "send": (frozenset({"draft", "scheduled", "paused", "sending"}), "sending"),
    "pause": (frozenset({"scheduled", "sending"}), "paused"),
    "resume": (frozenset({"paused"}), "scheduled"),
    "cancel": (frozenset({"draft", "scheduled", "paused", "sending"}), "cancelled"),
}
_ORDER = {status: i for i, status in enumerate(STATUSES)}


@dataclass(frozen=True)
class Campaign:
    id: int
    kind: str
    template: str
    subject: str
    status: str
    scheduled_at: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    status_reason: str
    audience_at: str | None


@dataclass(frozen=True)
class Counts:
    """The ledger in numbers. `pending` includes rows claimed ('sending') but not settled."""

    audience: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0

    @property
    def attempted(self) -> int:
        return self.sent + self.failed


def next_status(campaign: Campaign, action: Action) -> str:
    """The status `action` leads to from the campaign's status, or CampaignRefused."""
    allowed, target = _TRANSITIONS[action]
    if campaign.status not in allowed:
        choices = sorted(allowed, key=_ORDER.__getitem__)
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"
        raise CampaignRefused(
            f"campaign {campaign.id} is {campaign.status}; only a {listed} campaign can be "
            f"{_PAST[action]}"
        )
    return target


_PAST = {"send": "sent", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise CampaignInvalid(f"unknown kind {kind!r} (expected {' or '.join(KINDS)})")
    return kind


def parse_schedule(text: str) -> str:
    """An ISO 8601 time as the store's UTC text; a time without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CampaignInvalid(
            f"--at {text!r}: expected an ISO 8601 time such as 2025-03-01T09:00 or "
            "2025-03-01T09:00+01:00"
        ) from exc
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def failure_threshold_passed(
    counts: Counts, *, threshold: float, min_sample: int
) -> bool:
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


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """The pause before retry number `attempt` (1, 2, ...): exponential, capped."""
    return float(min(base_s * 2 ** max(attempt - 1, 0), max_s))
