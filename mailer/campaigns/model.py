"""Campaigns as plain values: the status machine and the small decisions.

Nothing here touches the database or the network. A campaign moves through

    draft ──send──▶ sending ──(all recipients settled)──▶ sent
    draft ──(created with --at)──▶ scheduled ──(due)──▶ sending
    draft | scheduled | paused ──schedule --at──▶ scheduled (for then)
    sending ──pause / Ctrl-C / failure threshold──▶ paused ──resume──▶ scheduled (due now)
    draft | scheduled | sending | paused ──cancel──▶ cancelled

and each operator action is a pure function of the current status (`next_status`), which
either names the new status or raises `CampaignRefused` with one line saying why. The records
themselves (`Campaign`, `Counts`) are the store's (`mailer.store.campaigns`), re-exported here.
The schema also allows a status 'failed', which nothing ever sets: a campaign in trouble is
paused with its reason, so a person can fix the cause and resume it.

Errors the service raises, by the exit code the CLI gives them (see `mailer.cli.support`):

    CampaignError
     ├── CampaignNotFound   (1) no such campaign, or no such customer to preview for
     ├── CampaignRefused    (1) the action does not apply to the campaign's status, or another
     │                          process holds the campaign's sending lease
     └── CampaignInvalid    (2) bad input: kind, time, template, or missing secret/unsubscribe URL
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from mailer.categories import CATEGORIES
from mailer.errors import CampaignInvalid, CampaignNotFound, CampaignRefused
from mailer.store.campaigns import Campaign as Campaign
from mailer.store.campaigns import Counts as Counts

# A campaign operation that cannot be done (any of the three below); str() is one line.
CampaignError = CampaignInvalid | CampaignNotFound | CampaignRefused

KINDS: tuple[str, ...] = CATEGORIES
STATUSES: tuple[str, ...] = ("draft", "scheduled", "sending", "paused", "sent", "cancelled")
Action = Literal["send", "schedule", "pause", "resume", "cancel"]

# Which statuses each operator action applies to, and the status it leads to.
_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "send": (frozenset({"draft", "scheduled", "paused", "sending"}), "sending"),
    "schedule": (frozenset({"draft", "scheduled", "paused"}), "scheduled"),
    "pause": (frozenset({"scheduled", "sending"}), "paused"),
    "resume": (frozenset({"paused"}), "scheduled"),
    "cancel": (frozenset({"draft", "scheduled", "paused", "sending"}), "cancelled"),
}
_ORDER = {status: i for i, status in enumerate(STATUSES)}


def next_status(campaign: Campaign, action: Action) -> str:
    """The status `action` leads to from the campaign's status, or CampaignRefused."""
    allowed, target = _TRANSITIONS[action]
    if campaign.status not in allowed:
        choices = sorted(allowed, key=_ORDER.__getitem__)
        listed = (choices[0] if len(choices) == 1
                  else ", ".join(choices[:-1]) + f" or {choices[-1]}")
        raise CampaignRefused(
            f"campaign {campaign.id} is {campaign.status}; only a {listed} campaign can be "
            f"{_PAST[action]}"
        )
    return target


_PAST = {"send": "sent", "schedule": "scheduled", "pause": "paused", "resume": "resumed",
         "cancel": "cancelled"}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise CampaignInvalid(f"unknown kind {kind!r} (expected {' or '.join(KINDS)})")
    return kind


def parse_schedule(text: str, *, now: datetime) -> str:
    """An ISO 8601 time as the store's UTC text; a time without a zone is taken as UTC.
    A time already past `now` is refused: the scheduler would send it at once, which is
    what `campaign send` is for, not a mistyped date."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CampaignInvalid(
            f"--at {text!r}: expected an ISO 8601 time such as 2025-03-01T09:00 or "
            "2025-03-01T09:00+01:00"
        ) from exc
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # the zone's offset moves it past year 9999 (or before year 1)
        raise CampaignInvalid(f"--at {text!r}: in UTC that is outside the years 1 to 9999") \
            from None
    if when <= now:
        raise CampaignInvalid(
            f"--at {text.strip()!r}: {when:%Y-%m-%d %H:%M} UTC is in the past (it is now "
            f"{now.astimezone(UTC):%Y-%m-%d %H:%M} UTC); choose a later time, or use "
            "`campaign send` to send now")
    return when.isoformat(timespec="microseconds")
