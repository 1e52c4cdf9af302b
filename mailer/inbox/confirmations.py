"""Sending the confirmations queued in the outbox.

The opt-out has already committed when a confirmation is queued, so nothing here can undo it.
Each item is sent at most once it succeeds; a transient failure (4xx, dropped connection,
timeout) is retried with exponential backoff, a permanent one (5xx) is marked failed with the
server's reply. One connection serves the whole batch.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import aiosqlite

from mailer import smtp
from mailer.outgoing import build_confirmation
from mailer.settings import Settings
from mailer.store import inbox as inbox_store
from mailer.store.db import transaction
from mailer.templates import TemplateError, render_confirmation

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
_BACKOFF_BASE_S = 30.0
_BACKOFF_MAX_S = 3600.0


@dataclass(frozen=True)
class ConfirmationSettings:
    sender: str            # the From header, may carry a display name
    envelope_sender: str   # MAIL FROM: the bare address
    templates_dir: Path | None
    smtp: smtp.SmtpConfig


def confirmation_settings(settings: Settings) -> ConfirmationSettings:
    return ConfirmationSettings(sender=settings.smtp.sender,
                                envelope_sender=settings.smtp.sender_address,
                                templates_dir=settings.templates.dir,
                                smtp=smtp.smtp_config(settings))


@dataclass
class OutboxReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def check_templates(settings: ConfirmationSettings) -> None:
    """Render the confirmation once with sample values; raises TemplateError (one line naming
    the template and line) so a broken template stops the program at start, not mid-outbox."""
    render_confirmation(settings.templates_dir, customer_name="Ann Example",
                        categories=("announcements", "offers"),
                        request_subject="Unsubscribe special offers")


def retry_at(attempts: int, now: datetime) -> datetime | None:
    """When to try again after `attempts` failed tries, or None to give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    delay = min(_BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), _BACKOFF_MAX_S)
    return now + timedelta(seconds=delay)


def confirmation_message_id(item_id: int, sender: str) -> str:
    domain = sender.rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(f"{item_id}:{sender}".encode()).hexdigest()[:12]
    return f"<confirm.{item_id}.{digest}@{domain}>"


async def send_due(conn: aiosqlite.Connection, settings: ConfirmationSettings) -> OutboxReport:
    """Send every due confirmation; return counts. Never raises for SMTP trouble."""
    report = OutboxReport()
    items = await inbox_store.due_confirmations(conn)
    if not items:
        return report
    client: aiosmtplib.SMTP | None = None
    try:
        for item in items:
            now = datetime.now(UTC)
            try:
                subject, text, html = render_confirmation(
                    settings.templates_dir, customer_name=item.to_name,
                    categories=item.categories, request_subject=item.request_subject)
                message = build_confirmation(
                    sender=settings.sender, to_address=item.to_address, to_name=item.to_name,
                    subject=subject, text=text, html=html,
                    in_reply_to=item.in_reply_to or None, references=item.refs,
                    message_id=confirmation_message_id(item.id, settings.envelope_sender),
                    date=now)
            except (TemplateError, ValueError) as exc:
                # This one cannot be built (e.g. an address on file no header can carry):
                # record why and go on with the rest, rather than stall the whole outbox.
                async with transaction(conn):
                    await inbox_store.mark_confirmation_failed(
                        conn, item.id, error=f"cannot build the message: {exc}", retry_at=None)
                report.failed += 1
                log.error("confirmation %s to customer %s cannot be built: %s",
                          item.id, item.customer_id, exc)
                continue
            try:
                if client is None:
                    client = await smtp.connect(settings.smtp)
                await smtp.send(client, settings.envelope_sender, item.to_address, message,
                                settings.smtp.timeout_s)
            except smtp.PermanentSmtpError as exc:
                async with transaction(conn):
                    await inbox_store.mark_confirmation_failed(
                        conn, item.id, error=str(exc), retry_at=None)
                report.failed += 1
                log.warning("confirmation %s to customer %s failed: %s",
                            item.id, item.customer_id, exc)
                continue
            except smtp.TransientSmtpError as exc:
                when = retry_at(item.attempts + 1, now)
                async with transaction(conn):
                    await inbox_store.mark_confirmation_failed(
                        conn, item.id, error=str(exc), retry_at=when)
                if when is None:
                    report.failed += 1
                else:
                    report.retrying += 1
                log.warning("confirmation %s to customer %s not sent (%s); retry at %s",
                            item.id, item.customer_id, exc, when)
                if client is not None:
                    await smtp.close(client)
                    client = None
                continue
            async with transaction(conn):
                await inbox_store.mark_confirmation_sent(conn, item.id)
            report.sent += 1
            log.info("confirmation %s sent to customer %s", item.id, item.customer_id)
    finally:
        if client is not None:
            await smtp.close(client)
    return report
