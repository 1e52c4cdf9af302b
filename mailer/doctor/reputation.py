"""Reputation we can see: the complaint rate over 1, 7 and 30 days (Gmail and Yahoo ask for
under 0.1% and never 0.3%), hard bounces of the latest campaigns, the oldest opt-out request
waiting for a person (providers ask for opt-outs honoured within two days); and, named rather
than guessed, what only the providers see.

`judge_*` and `pause_decision` are pure; `reputation_checks` and `reputation_pause_check` read
the store. The daemon calls `reputation_pause_check` on each pass and, when it says
pause, `pause_campaigns` (every campaign sending or scheduled, with the reason `mailer status`,
`campaign show` and the console show, and the cause "complaint-rate"); the daemon's
reputation part (`mailer.doctor.watch`) does so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailer.doctor.report import Check, failed, info, passed, warn
from mailer.store import campaigns as campaign_store
from mailer.store import reputation as store
from mailer.store.db import Connection, Location, open_db, transaction
from mailer.store.reputation import CampaignBounces, ComplaintWindow

COMPLAINT_WARN = 0.001
COMPLAINT_FAIL = 0.003
WINDOWS_DAYS = (1, 7, 30)
BOUNCE_WARN = 0.02
BOUNCE_FAIL = 0.05
# Providers ask for opt-outs to be honoured within two days; warn at half of that.
OPT_OUT_WARN = timedelta(days=1)
OPT_OUT_FAIL = timedelta(days=2)


def _percent(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def _complaints(window: ComplaintWindow) -> str:
    noun = "complaint" if window.complaints == 1 else "complaints"
    return f"{window.complaints} {noun} / {window.sent} sent"


def judge_complaints(days: int, window: ComplaintWindow) -> Check:
    name = f"Complaints {days}d"
    if window.sent == 0:
        period = "day" if days == 1 else f"{days} days"
        return passed("reputation", name, f"no mail sent in the last {period}")
    rate = window.complaints / window.sent
    found = f"{_complaints(window)} = {_percent(rate)}"
    fix = ("send only to customers who opted in and engaged recently, make the unsubscribe "
           "link prominent, and read the complaints: `mailer bounces list`")
    if rate >= COMPLAINT_FAIL:
        return failed("reputation", name, f"{found} (providers refuse mail at 0.30%)", fix)
    if rate >= COMPLAINT_WARN:
        return warn("reputation", name, f"{found} (keep it under 0.10%)", fix)
    return passed("reputation", name, found)


def judge_bounces(campaigns: list[CampaignBounces]) -> Check:
    counted = [c for c in campaigns if c.sent]
    if not counted:
        return passed("reputation", "Hard bounces", "no campaign sent yet")
    worst = max(counted, key=lambda c: c.hard / c.sent)
    rate = worst.hard / worst.sent
    found = (f"worst of the last {len(counted)} campaigns: campaign {worst.campaign_id}, "
             f"{worst.hard} / {worst.sent} = {_percent(rate)}")
    fix = ("clean the list before sending: remove addresses not mailed for a year and "
           "import only addresses confirmed by their owner")
    if rate >= BOUNCE_FAIL:
        return failed("reputation", "Hard bounces", found, fix)
    if rate >= BOUNCE_WARN:
        return warn("reputation", "Hard bounces", found, fix)
    return passed("reputation", "Hard bounces", found)


def judge_opt_outs(oldest_open: str | None, now: datetime) -> Check:
    if oldest_open is None:
        return passed("reputation", "Opt-outs waiting", "no request waits in review")
    age = now - datetime.fromisoformat(oldest_open)
    hours = age.total_seconds() / 3600
    found = f"the oldest request in review has waited {hours:.0f} h"
    fix = "settle the review items now: `mailer review list`, then `mailer review resolve`"
    if age >= OPT_OUT_FAIL:
        return failed("reputation", "Opt-outs waiting", f"{found} (providers ask for 48 h "
                      "at most)", fix)
    if age >= OPT_OUT_WARN:
        return warn("reputation", "Opt-outs waiting", found, fix)
    return passed("reputation", "Opt-outs waiting", found)


def unseen(from_domain: str) -> list[Check]:
    """What decides delivery but only the providers can see: named, with where to look."""
    return [
        info("reputation", "Gmail Postmaster Tools",
             "Gmail's spam rate and domain reputation are not visible to mailer",
             f"verify {from_domain} at https://postmaster.google.com and read its "
             "Compliance status and Spam rate pages"),
        info("reputation", "Yahoo and Outlook.com",
             "their complaint feeds and reputation are not visible to mailer",
             "Yahoo Sender Hub (https://senders.yahooinc.com), Microsoft SNDS "
             "(https://sendersupport.olc.protection.outlook.com/snds/)"),
    ]


def since(now: datetime, days: float) -> str:
    return (now - timedelta(days=days)).astimezone(UTC).isoformat(timespec="microseconds")


async def reputation_checks(db_location: Location, from_domain: str, *, now: datetime | None = None
                            ) -> list[Check]:
    now = now or datetime.now(UTC)
    async with open_db(db_location) as conn:
        windows = [(d, await store.complaint_window(conn, since(now, d))) for d in WINDOWS_DAYS]
        campaigns = await store.recent_campaign_bounces(conn)
        oldest = await store.oldest_open_review(conn)
    return [*(judge_complaints(d, w) for d, w in windows), judge_bounces(campaigns),
            judge_opt_outs(oldest, now), *unseen(from_domain)]


@dataclass(frozen=True)
class PauseDecision:
    """What the daemon does about the sender-wide complaint rate of the last day."""

    pause: bool  # pause every campaign in progress
    warning: bool  # at or over 0.1%: a WARNING in status and the metrics
    rate: float
    window: ComplaintWindow
    reason: str  # the campaigns' status reason when pausing; the warning's text otherwise


def pause_decision(window: ComplaintWindow, *, min_sample: int) -> PauseDecision:
    """Pause at 0.3% over the last day once `min_sample` messages went out (`[bounces]
    pause_min_sample`: a handful of sends says nothing); warn from 0.1%."""
    rate = window.complaints / window.sent if window.sent else 0.0
    text = (f"sender-wide complaint rate {_percent(rate)} over the last day "
            f"({_complaints(window)})")
    pause = window.sent >= min_sample and rate >= COMPLAINT_FAIL
    warning = window.sent >= min_sample and rate >= COMPLAINT_WARN
    return PauseDecision(pause=pause, warning=warning, rate=rate, window=window,
                         reason=f"{text}: providers refuse mail at 0.30%" if pause else text)


async def reputation_pause_check(conn: Connection, *, now: datetime,
                                 min_sample: int) -> PauseDecision:
    """For the daemon's pass: the decision about the last day's complaint rate."""
    return pause_decision(await store.complaint_window(conn, since(now, 1)),
                          min_sample=min_sample)


# A campaign sending stops before its next message once its status changes (the sender reads
# it per batch); a scheduled one would start into the same complaints, so it is held too.
_IN_PROGRESS = ("sending", "scheduled")


async def pause_campaigns(conn: Connection, decision: PauseDecision) -> list[int]:
    """Pause every campaign in progress for the complaint rate; the ids paused (none unless
    `decision.pause`)."""
    if not decision.pause:
        return []
    paused = []
    async with transaction(conn, "pause campaigns for the complaint rate"):
        for campaign in await campaign_store.list_campaigns(conn):
            if campaign.status in _IN_PROGRESS and await campaign_store.set_status(
                    conn, campaign.id, "paused", reason=f"paused: {decision.reason}",
                    expected=(campaign.status,), paused_by="complaint-rate"):
                paused.append(campaign.id)
    return paused
