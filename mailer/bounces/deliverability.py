"""What a delivery report or complaint does: tie it to a message we sent, decide, apply.

A report acts only when it is tied to a message we sent: through the verified
VERP tag it was addressed to (`mailer.mail.verp`, read by `mailer.bounces.reports`), or through an
original Message-ID it quotes being in the campaign ledger or the outbox. Anything else is
recorded as ignored and changes nobody: bounce processing must not become a way to suppress
or unsubscribe someone else.

- hard bounce: the address is undeliverable at once (consent untouched: a fact about the
  address, not a choice);
- soft bounce: counted per different message; `soft_limit` of them within
  `soft_window_days` (since the last reactivation, if later) make it undeliverable;
- complaint: opted out of every category through `mailer.consent.change` (source `complaint`, no
  confirmation: a confirmation to someone who just reported us as spam makes it worse).

`decide` is the pure rule; `apply_report` does it in one transaction (record, undeliverable or
soft count, opt-out), and a report whose key was seen before changes nothing more.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from mailer.bounces.reports import Kind, Report
from mailer.categories import CATEGORIES
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.consent.change import Refusal, opt_out
from mailer.settings import BouncesSettings
from mailer.store import deliverability as store
from mailer.store.db import Connection, transaction
from mailer.store.deliverability import ReportCounts, SentMessage

log = logging.getLogger(__name__)

Outcome = Literal["undeliverable", "soft-counted", "opted-out", "ignored"]
TiedBy = Literal["verp", "message-id"]


@dataclass(frozen=True)
class Tie:
    """The message of ours a report is about, and how we know."""

    sent: SentMessage
    by: TiedBy


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    undeliverable: bool = False
    opt_out: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Applied:
    """What `apply_report` did; `duplicate`: the report was seen before, nothing changed."""

    report_id: int
    outcome: Outcome
    customer_id: int | None
    duplicate: bool = False
    kind: Kind = "hard"
    tied_by: str = ""

    @property
    def tied(self) -> bool:
        """Tied to a message of ours: the caller moves it to `[bounces] folder`."""
        return self.outcome != "ignored"


def decide(
    kind: Kind, tied: bool, *, soft_messages: int, soft_limit: int, soft_window_days: float,
    status: str = "", diagnostic: str = "",
) -> Decision:
    """The bounce rule (`[bounces]` hard and soft limits). `soft_messages`: different
    messages to this address that soft-bounced within the window, this one included."""
    if not tied:
        return Decision("ignored", reason="not tied to a message we sent")
    if kind == "complaint":
        return Decision("opted-out", opt_out=True, reason="complaint")
    if kind == "hard":
        return Decision("undeliverable", undeliverable=True,
                        reason=_one_line(f"hard bounce {status} {diagnostic}"))
    if soft_messages >= soft_limit:
        return Decision("undeliverable", undeliverable=True, reason=_one_line(
            f"{soft_messages} soft bounces within {soft_window_days:g} days, last {status} "
            f"{diagnostic}"))
    return Decision("soft-counted", reason=_one_line(
        f"soft bounce {soft_messages} of {soft_limit}: {status} {diagnostic}"))


async def resolve(conn: Connection, report: Report) -> Tie | None:
    """The message of ours `report` is about, or None (then it changes nobody)."""
    tag = report.tag
    if tag is not None:
        sent: SentMessage | None = None
        if tag.kind == "campaign" and tag.campaign_id is not None and tag.customer_id is not None:
            sent = await store.campaign_message(conn, tag.campaign_id, tag.customer_id)
        elif tag.kind == "confirmation" and tag.confirmation_id is not None:
            sent = await store.outbox_message(conn, tag.confirmation_id)
        if sent is not None:
            return Tie(sent, "verp")
    sent = await store.message_by_id(conn, report.original_message_ids)
    return Tie(sent, "message-id") if sent is not None else None


async def apply_report(
    conn: Connection,
    report: Report,
    bounces: BouncesSettings,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> Applied:
    """Record `report` and do what it calls for, in one transaction (see the module)."""
    async with transaction(conn):
        applied = await apply_report_in(conn, report, bounces, clock=clock)
    log_applied(applied)
    return applied


def log_applied(applied: Applied) -> None:
    """The one log line per report: kind, outcome, customer id (never an address)."""
    if applied.duplicate:
        log.info("report %s: %s seen before: nothing more", applied.report_id, applied.kind)
        return
    log.info("report %s: %s kind=%s customer=%s tied_by=%s", applied.report_id,
             applied.outcome, applied.kind, applied.customer_id, applied.tied_by or "-")


async def apply_report_in(
    conn: Connection,
    report: Report,
    bounces: BouncesSettings,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> Applied:
    """`apply_report` inside the caller's transaction (the inbox pass records a batch's
    reports with its high-water mark); the caller logs with `log_applied` once committed."""
    seen = await store.report_by_key(conn, report.key)
    if seen is not None:
        return Applied(seen.id, _outcome(seen.outcome), seen.customer_id, duplicate=True,
                       kind=report.kind, tied_by=seen.tied_by)
    moment = clock.now()
    now = moment.isoformat(timespec="microseconds")
    tie = await resolve(conn, report)
    soft_messages = 0
    if tie is not None and report.kind == "soft":
        since = (moment - timedelta(days=bounces.soft_window_days)).isoformat(
            timespec="microseconds")
        reactivated = await store.last_reactivated(conn, tie.sent.customer_id)
        if reactivated is not None and reactivated > since:
            since = reactivated
        soft_messages = 1 + await store.soft_bounced_messages(
            conn, tie.sent.customer_id, since, besides=tie.sent)
    decision = decide(report.kind, tie is not None, soft_messages=soft_messages,
                      soft_limit=bounces.soft_limit,
                      soft_window_days=bounces.soft_window_days,
                      status=report.status, diagnostic=report.diagnostic)
    report_id = await store.insert_report(
        conn, report_key=report.key, now=now, kind=report.kind, format=report.format,
        status=report.status, diagnostic=_one_line(report.diagnostic),
        sent=tie.sent if tie else None, tied_by=tie.by if tie else "",
        outcome=decision.outcome, reason=decision.reason)
    customer_id = tie.sent.customer_id if tie else None
    if customer_id is not None and decision.undeliverable:
        await store.mark_undeliverable(
            conn, customer_id, now=now, reason=decision.reason, report_id=report_id,
            source="bounce" if report.kind == "hard" else "soft bounces")
    if customer_id is not None and decision.opt_out:
        await opt_out(conn, [Refusal((customer_id,), reference=report.key)], CATEGORIES,
                      source="complaint")
    return Applied(report_id, decision.outcome, customer_id, kind=report.kind,
                   tied_by=tie.by if tie else "")


async def reactivate(
    conn: Connection, customer_id: int, *, actor: str, source: str = "operator",
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """Make the address deliverable again (`mailer customers reactivate`), in its own
    transaction; False if it was deliverable already."""
    now = clock.now().isoformat(timespec="microseconds")
    async with transaction(conn):
        changed = await store.reactivate(conn, customer_id, now=now, actor=actor, source=source)
    log.info("customer %s reactivated by %s: %s", customer_id, actor or "-",
             "changed" if changed else "was deliverable")
    return changed


def pause_reason(counts: ReportCounts, sent: int, bounces: BouncesSettings) -> str | None:
    """Why a campaign should pause itself now , or None."""
    if sent < bounces.pause_min_sample:
        return None
    if counts.hard / sent > bounces.pause_bounce_rate:
        return (f"hard-bounce rate {counts.hard / sent:.1%} of {sent} sent is above "
                f"[bounces] pause_bounce_rate {bounces.pause_bounce_rate:.1%}")
    if counts.complaints / sent > bounces.pause_complaint_rate:
        return (f"complaint rate {counts.complaints / sent:.2%} of {sent} sent is above "
                f"[bounces] pause_complaint_rate {bounces.pause_complaint_rate:.2%}")
    return None


_OUTCOMES: dict[str, Outcome] = {o: o for o in typing.get_args(Outcome)}


def _outcome(value: str) -> Outcome:
    return _OUTCOMES[value]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
