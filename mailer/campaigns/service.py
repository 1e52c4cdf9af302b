"""The campaign operations the CLI calls, one async function per command.

    create_campaign   draft, or scheduled with --at (never in the past); the template is
                      compiled and checked first
    list_campaigns / show_campaign   campaigns with their ledger counts (`report_json` for --json);
                      `show` adds bounces (hard, soft) and complaints and their rates
    preview           the complete message one customer would get
    send_test         one copy marked as a test to any address, a few a day (only counted)
    send_now          the foreground send (Ctrl-C pauses); the daemon uses the scheduler instead
    pause / resume / cancel   status changes, refused with one line where they do not apply

Each takes an open connection and the values it needs; errors are `model.CampaignError`
subclasses whose exit codes the model's docstring lists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.campaigns.messages import CampaignMessages, SendConfig
from mailer.campaigns.model import Action, Campaign, Counts, check_kind, next_status, parse_schedule
from mailer.campaigns.sender import SendOutcome, SendProgress, send_campaign
from mailer.campaigns.templates import CampaignTemplate
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import CampaignInvalid, CampaignNotFound, CampaignRefused, TemplateError
from mailer.mail import smtp
from mailer.store import campaigns as store
from mailer.store import customers
from mailer.store import deliverability as deliverability_store
from mailer.store.campaigns import PauseCause
from mailer.store.db import Connection, transaction, utcnow
from mailer.store.deliverability import ReportCounts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CampaignReport:
    """A campaign with its ledger counts, and (before the audience is taken) how many
    customers are opted in to its kind right now."""

    campaign: Campaign
    counts: Counts
    opted_in_now: int | None = None
    # Bounces and complaints tied to this campaign (distinct customers); `show` only.
    reports: ReportCounts | None = None

    def rate(self, count: int) -> float:
        """`count` as a share of the messages sent (0 before any)."""
        return count / self.counts.sent if self.counts.sent else 0.0


async def create_campaign(
    conn: Connection, templates_dir: Path | None, *, kind: str, template: str,
    subject: str, at: str | None = None, clock: Clock = SYSTEM_CLOCK,
) -> Campaign:
    """Create a draft (or, with `at`, a campaign scheduled then: never a time already past)
    after compiling and checking its template and subject; CampaignInvalid names the
    template, line and variable at fault."""
    check_kind(kind)
    if not subject.strip():
        raise CampaignInvalid("--subject: must not be empty", field="subject")
    scheduled_at = parse_schedule(at, now=clock.now()) if at is not None else None
    try:
        # Off the event loop: a subject typed into the console is untrusted work (bounded by
        # the sandbox's limits, a second at most), and the console and daemon share the loop.
        await asyncio.to_thread(lambda: CampaignTemplate.load(templates_dir, template,
                                                              subject).check())
    except TemplateError as exc:
        at_fault = "subject" if exc.template == CampaignTemplate.subject_label(template) \
            else "template"
        raise CampaignInvalid(str(exc), field=at_fault) from exc
    async with transaction(conn, "creating a campaign"):
        campaign_id = await store.insert_campaign(conn, kind=kind, template=template,
                                                  subject=subject, scheduled_at=scheduled_at)
    campaign = await store.get_campaign(conn, campaign_id)
    assert campaign is not None
    log.info("campaign %s created (%s, %s)", campaign.id, campaign.kind, campaign.status)
    return campaign


async def get(conn: Connection, campaign_id: int) -> Campaign:
    campaign = await store.get_campaign(conn, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return campaign


async def _report(conn: Connection, campaign: Campaign) -> CampaignReport:
    counts = await store.counts(conn, campaign.id)
    opted_in = None
    if campaign.audience_at is None:
        opted_in = await store.opted_in_count(conn, campaign.kind)
    return CampaignReport(campaign, counts, opted_in)


async def list_campaigns(conn: Connection) -> list[CampaignReport]:
    return [await _report(conn, c) for c in await store.list_campaigns(conn)]


async def show_campaign(conn: Connection, campaign_id: int) -> CampaignReport:
    report = await _report(conn, await get(conn, campaign_id))
    reports = await deliverability_store.campaign_report_counts(conn, campaign_id)
    return dataclasses.replace(report, reports=reports)


def report_json(report: CampaignReport) -> dict[str, Any]:
    c, n = report.campaign, report.counts
    data: dict[str, Any] = {
        "id": c.id, "kind": c.kind, "subject": c.subject, "status": c.status,
        "scheduled_at": c.scheduled_at,
        "counts": {"audience": n.audience, "sent": n.sent, "failed": n.failed,
                   "skipped": n.skipped, "pending": n.pending},
    }
    if report.reports is not None:
        r = report.reports
        data["status_reason"] = c.status_reason
        data["deliverability"] = {
            "sent": n.sent,
            "bounced": {"hard": r.hard, "soft": r.soft},
            "complaints": r.complaints,
            "rates": {"hard_bounce": report.rate(r.hard), "soft_bounce": report.rate(r.soft),
                      "complaint": report.rate(r.complaints)},
        }
    return data


async def preview(
    conn: Connection, config: SendConfig, campaign_id: int, email: str
) -> tuple[bytes, bool]:
    """The message the customer with `email` would get, and whether they are opted in to the
    campaign's kind now (if not, they would get nothing)."""
    campaign = await get(conn, campaign_id)
    customer = await customers.get_by_email(conn, email)
    if customer is None:
        raise CampaignNotFound(f"no customer with email {email}")

    def build() -> bytes:  # off the event loop, as for create_campaign
        messages = CampaignMessages(campaign, config, date=datetime.now(UTC))
        # The sample link, never the customer's own: a preview is not a message we sent.
        return messages.build(customer_id=customer.id, email=customer.email,
                              name=customer.name, company=customer.company, sample=True).data

    try:
        message = await asyncio.to_thread(build)
    except TemplateError as exc:
        raise CampaignInvalid(str(exc)) from exc
    return message, customer.preferences.get(campaign.kind, False)


async def send_test(
    conn: Connection, config: SendConfig, campaign_id: int, address: str, *,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """Send one copy marked as a test ([TEST] subject, its own Message-ID) to `address`;
    rendered for the customer with that address if there is one, else for a sample customer.
    At most `config.test_copies_per_day` per campaign per UTC day (CampaignRefused beyond):
    only that count is recorded. Returns the server's reply."""
    campaign = await get(conn, campaign_id)
    customer = await customers.get_by_email(conn, address)

    def build() -> bytes:  # off the event loop, as for create_campaign
        messages = CampaignMessages(campaign, config, date=clock.now())
        if customer is not None:
            return messages.build(customer_id=customer.id, email=address, name=customer.name,
                                  company=customer.company, test=True).data
        return messages.build(customer_id=0, email=address, name="Test Recipient", company="",
                              test=True).data

    try:
        message = await asyncio.to_thread(build)
    except TemplateError as exc:
        raise CampaignInvalid(str(exc)) from exc
    except ValueError as exc:  # HeaderInjection: not a plain address
        raise CampaignInvalid(f"--to: {exc}") from exc
    day = clock.now().astimezone(UTC).date().isoformat()
    async with transaction(conn, f"campaign {campaign_id}: counting a test copy"):
        taken = await store.take_test_copy(conn, campaign_id, day, config.test_copies_per_day)
    if taken is None:
        raise CampaignRefused(
            f"campaign {campaign_id}: {config.test_copies_per_day} test copies sent today, the "
            "most [campaigns] test_copies_per_day allows; send more tomorrow (UTC)")
    try:
        client = await smtp.connect(config.smtp)
        try:
            reply = await client.send(config.envelope_from, address, message,
                                      config.smtp.timeout_s)
        finally:
            await client.close()
    except Exception:
        # Not sent: the copy does not count (the error itself goes to the caller).
        async with transaction(conn, f"campaign {campaign_id}: uncounting a test copy"):
            await store.give_back_test_copy(conn, campaign_id, day)
        raise
    log.info("campaign %s: test copy %s of %s today sent", campaign_id, taken,
             config.test_copies_per_day)
    return reply


async def send_now(
    conn: Connection, config: SendConfig, campaign_id: int, *,
    stop: asyncio.Event, progress: SendProgress | None = None,
) -> SendOutcome:
    """Send in the foreground until done; `stop` (Ctrl-C) pauses the campaign cleanly."""
    return await send_campaign(conn, config, campaign_id, stop=stop, on_stop="pause",
                               progress=progress)


async def _change(
    conn: Connection, campaign_id: int, action: Action, reason: str,
    *, scheduled_at: str | None = None, paused_by: PauseCause = "",
) -> Campaign:
    async with transaction(conn, f"campaign {campaign_id}"):
        campaign = await get(conn, campaign_id)
        target = next_status(campaign, action)
        moved = await store.set_status(conn, campaign_id, target, reason=reason,
                                       expected=(campaign.status,), scheduled_at=scheduled_at,
                                       paused_by=paused_by)
        if not moved:  # pragma: no cover - the transaction holds the write lock
            raise CampaignRefused(f"campaign {campaign_id} changed meanwhile; try again")
    log.info("campaign %s: %s -> %s", campaign_id, campaign.status, target)
    return await get(conn, campaign_id)


async def schedule(conn: Connection, campaign_id: int, at: str, *,
                   clock: Clock = SYSTEM_CLOCK) -> Campaign:
    """Draft, scheduled or paused -> scheduled for `at` (ISO 8601; no zone is UTC; never a
    time already past): a draft once it has been previewed and tested, a new time for a
    scheduled one, or a paused one resumed later rather than now."""
    return await _change(conn, campaign_id, "schedule", "",
                         scheduled_at=parse_schedule(at, now=clock.now()))


async def pause(conn: Connection, campaign_id: int) -> Campaign:
    """Stop sending (a running sender stops before its next message) or hold a schedule."""
    return await _change(conn, campaign_id, "pause", "paused by operator",
                         paused_by="operator")


async def resume(conn: Connection, campaign_id: int) -> Campaign:
    """Paused -> scheduled for now: `mailer run` picks it up, or `campaign send` does."""
    return await _change(conn, campaign_id, "resume", "", scheduled_at=utcnow())


async def cancel(conn: Connection, campaign_id: int) -> Campaign:
    """Nothing more goes out; unsent recipients stay pending, marked by the campaign's
    status as never to be sent."""
    return await _change(conn, campaign_id, "cancel", "cancelled by operator")
