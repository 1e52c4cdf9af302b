"""Every call the console makes into other areas, in one place, so that a change of those
areas' interfaces is adapted here and nowhere else.

    campaigns   mailer.campaigns.service (the functions `mailer campaign …` calls)
    review      mailer.inbox.review (`mailer review resolve`), the review folder over IMAP
    import      mailer.consent.imports (`mailer customers import`)
    status      the daemon's heartbeat (`mailer status`, see `daemon_state`)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from mailer.campaigns import service
from mailer.campaigns.model import Campaign
from mailer.campaigns.sender import SendConfig, send_config
from mailer.campaigns.templates import SAMPLE_CUSTOMER_NAME
from mailer.campaigns.templates import sample_subjects as _sample_subjects
from mailer.clock import Clock
from mailer.consent import imports
from mailer.errors import ImapError, MailerError, MalformedMessage
from mailer.health import status as status_module
from mailer.inbox import review as review_ops
from mailer.inbox.body import html_to_text, parse_message
from mailer.inbox.imap import ImapClient
from mailer.inbox.lookup import look_up
from mailer.inbox.match import extract_clues
from mailer.inbox.worker import imap_config, inbox_config
from mailer.mail.templates import packaged_defaults
from mailer.settings import Settings
from mailer.store import campaigns as campaign_store
from mailer.store import console as console_store
from mailer.store import customers as customer_store
from mailer.store.customers import Customer
from mailer.store.db import Connection, Location
from mailer.store.imports import ImportReport
from mailer.store.inbox import ReviewItem

log = logging.getLogger(__name__)

IMAP_TIMEOUT_S = 15.0

# --- campaigns ------------------------------------------------------------------------------

CampaignReport = service.CampaignReport
list_campaigns = service.list_campaigns
show_campaign = service.show_campaign
schedule = service.schedule
pause = service.pause
resume = service.resume
cancel = service.cancel


async def active_campaigns(
    conn: Connection,
) -> list[tuple[Campaign, console_store.Progress]]:
    """Campaigns sending, scheduled or paused, with their ledger counts (no audience count:
    the overview must not count a million customers per campaign)."""
    return [(c, await console_store.campaign_progress(conn, c.id))
            for c in await campaign_store.list_campaigns(conn)
            if c.status in ("sending", "scheduled", "paused")]


def campaign_templates(settings: Settings) -> list[str]:
    """The campaign template names a person can choose (`campaigns/NAME.txt`), from the
    `[templates] dir` folder and the shipped templates alike."""
    folders = [f / "campaigns" for f in (settings.templates.dir, packaged_defaults())
               if f is not None]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.iterdir()
                   if p.suffix == ".txt" and not p.name.startswith(".")})


def sample_subjects(settings: Settings, subjects: list[str]) -> list[str]:
    """Subject lines as the sample customer `SAMPLE_CUSTOMER_NAME` reads them."""
    return _sample_subjects(settings.templates.dir, subjects)


async def create_campaign(conn: Connection, settings: Settings, *, kind: str,
                          template: str, subject: str, at_utc: str | None,
                          clock: Clock) -> Campaign:
    return await service.create_campaign(conn, settings.templates.dir, kind=kind,
                                         template=template, subject=subject, at=at_utc,
                                         clock=clock)


def _config(settings: Settings) -> SendConfig:
    return send_config(settings)


@dataclass(frozen=True)
class Preview:
    text: str
    html: str | None
    subject: str
    opted_in: bool


async def preview(conn: Connection, settings: Settings, campaign_id: int,
                  customer_email: str) -> Preview:
    raw, opted_in = await service.preview(conn, _config(settings), campaign_id, customer_email)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    return Preview(
        text=text_part.get_content() if text_part is not None else "",
        html=html_part.get_content() if html_part is not None else None,
        subject=str(message.get("Subject", "")),
        opted_in=opted_in,
    )


async def send_test(conn: Connection, settings: Settings, campaign_id: int,
                    address: str) -> str:
    return await service.send_test(conn, _config(settings), campaign_id, address)


# --- review ---------------------------------------------------------------------------------


async def resolve(conn: Connection, settings: Settings, item_id: int,
                  emails: Sequence[str], actor: str) -> ReviewItem:
    return await review_ops.resolve(conn, inbox_config(settings), item_id, emails, actor=actor)


async def record_opt_in(conn: Connection, item_id: int, email: str,
                        categories: Sequence[str], actor: str) -> ReviewItem:
    return await review_ops.record_opt_in(conn, item_id, email, categories, actor=actor)


async def dismiss(conn: Connection, item_id: int) -> ReviewItem:
    return await review_ops.dismiss(conn, item_id)


async def file_settled(settings: Settings, message_id: str) -> str:
    """Move a settled request out of the review folder (the CLI's function); '' when done,
    else one line saying why it stays there for now (the settlement stands either way)."""
    problem = await review_ops.file_settled(imap_config(settings), inbox_config(settings),
                                            message_id, timeout_s=IMAP_TIMEOUT_S)
    return problem[:1].upper() + problem[1:]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class RequestMessage:
    """A request as a person may see it: text only, attachments named, never opened."""

    text: str
    from_html: bool  # the text was taken from an HTML part (shown as text, never rendered)
    attachments: list[Attachment]
    candidates: list[Customer]


async def fetch_request(conn: Connection, settings: Settings,
                        message_id: str) -> RequestMessage | None:
    """The request in the review folder with this Message-ID, or None when it is not there.
    Raises ImapError when the server cannot be reached."""
    if not message_id:
        return None
    config = inbox_config(settings)
    try:
        async with asyncio.timeout(IMAP_TIMEOUT_S):
            client = await ImapClient.connect(imap_config(settings))
            try:
                await client.select(config.review_folder)
                uids = await client.uids_with_message_id(message_id)
                raw = await client.fetch_message(uids[0]) if uids else None
            finally:
                await client.close()
    except TimeoutError as exc:
        raise ImapError(f"IMAP server {settings.imap.host}: timed out") from exc
    if raw is None:
        return None
    return await _readable(conn, settings, raw)


async def _readable(conn: Connection, settings: Settings,
                    raw: bytes) -> RequestMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    attachments = [
        Attachment(part.get_filename() or "(no name)", part.get_content_type(),
                   len(part.get_payload(decode=True) or b""))
        for part in message.iter_attachments()
        if part.get_content_maintype() != "multipart"
    ]
    text, from_html = "", False
    try:
        body = message.get_body(("plain", "html"))
        if body is not None:
            content = body.get_content()
            from_html = body.get_content_subtype() == "html"
            text = html_to_text(content) if from_html else content
    except (LookupError, ValueError, AssertionError):
        text = "(the text of this message cannot be decoded)"
    return RequestMessage(text=text, from_html=from_html, attachments=attachments,
                          candidates=await _candidates(conn, settings, raw))


async def _candidates(conn: Connection, settings: Settings,
                      raw: bytes) -> list[Customer]:
    """The customers the matcher considered: every customer any clue of the message names."""
    try:
        parsed = parse_message(raw, max_bytes=settings.imap.max_message_bytes)
    except MalformedMessage:
        return []
    clues = extract_clues(parsed, own_addresses=settings.own_addresses)
    found = await look_up(conn, [clues])
    return await customer_store.get_many(conn, found.customer_ids()[:50])


# --- customers import -----------------------------------------------------------------------


async def import_csv(conn: Connection, data: bytes, filename: str, *,
                     consent: bool | None, actor: str,
                     suppression_key: bytes | None = None) -> ImportReport:
    """Import an uploaded CSV exactly as `mailer customers import` does (the same function):
    all rows or none, bad rows reported by line, erased addresses suppressed. CsvError for a
    file that cannot be read, ConsentNotNamed for one without a consent column when `consent`
    is None."""
    return await imports.import_csv(conn, io.BytesIO(data), name=filename, consent=consent,
                                    actor=actor, suppression_key=suppression_key)


# --- the daemon's state -------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonState:
    known: bool
    summary: str
    parts: list[tuple[str, str]]


async def daemon_state(settings: Settings, db_location: Location) -> DaemonState:
    """The facts `mailer status` gives (running, each part's state, last errors), read from
    the daemon's heartbeat by `mailer.health.status`."""
    del settings
    try:
        status = await status_module.gather(db_location)
    except MailerError as exc:
        return DaemonState(known=False, parts=[], summary=f"Cannot tell: {exc}")
    summary = status.label.capitalize() + (": " + "; ".join(status.reasons)
                                           if status.reasons else "")
    parts = status.data.get("parts") or {}
    return DaemonState(known=True, summary=summary, parts=[
        (name, str(part.get("state", "?")) + (f" (last error: {part['last_error']})"
                                              if part.get("last_error") else ""))
        for name, part in sorted(parts.items())])


__all__ = ["SAMPLE_CUSTOMER_NAME", "CampaignReport", "MailerError"]
