"""The confirmation outbox: sending the confirmations `mailer.consent.change`
queued, each exactly once.

The opt-out has already committed when a confirmation is queued, so nothing here can undo it.
Every sender (`mailer inbox process` from cron, the daemon's outbox part, a second daemon) goes
through `send_due_confirmations`, and each row goes through three steps:

1. claim: one transaction picks the oldest due row nobody holds and writes the claim (owner =
   this host and pid, expiry = now + `claim_ttl_s`), so no other process can pick it meanwhile;
2. send it over SMTP;
3. mark it sent (or failed, or due again later), which clears the claim.

A process killed between 2 and 3 leaves a claimed, unmarked row: it is picked again once the
claim expires, at once when the owner was a process on this host that no longer exists, or
once a daemon owner on another host has been silent for `SILENT_DAEMON_S` (its heartbeat). So
a kill -9 costs at most one duplicate confirmation, never a lost one. A transient SMTP failure
is retried on the one `backoff.CONFIRMATION` policy; a permanent one (5xx) is marked failed
with the server's reply. Time comes from a `Clock`, so tests move it instead of sleeping.

`Outbox` is the outbox as a part of the daemon (`mailer.lifecycle.worker`): `run_once` is one
`send_due_confirmations` round (the burst), `run(stop)` one every `interval_s`, or at once
when the inbox wakes it after queueing confirmations. On PostgreSQL queueing a confirmation
also notifies `mailer_outbox` (`store.notify`) at commit, which wakes the outbox of every host
at once: whichever is free sends it, each row still claimed by one of them only.

Deliverability: the claim also records the confirmation's Message-ID (random,
`outgoing.message_id`, random), so a report quoting it is tied to the row; MAIL FROM is the VERP
address of the row (`verp.Tag.confirmation`) under `[bounces] address` (the bare address with
`verp = false`, `[smtp] sender` without one); the message is DKIM-signed when `[dkim]` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

from mailer import backoff
from mailer.backoff import Backoff
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import PermanentSmtpError, TemplateError, TransientSmtpError
from mailer.instance import instance_name
from mailer.lifecycle.supervise import Part, wait_any
from mailer.mail import smtp, verp
from mailer.mail.dkim import Signer, load_signer
from mailer.mail.outgoing import build_confirmation, message_id
from mailer.mail.templates import render_confirmation
from mailer.mail.tokens import confirmation_token, unsubscribe_link
from mailer.settings import Settings
from mailer.store import leases
from mailer.store import outbox as outbox_store
from mailer.store.db import Connection, Location, open_db, transaction
from mailer.store.notify import OUTBOX_CHANNEL, wake_on
from mailer.store.outbox import ClaimOwner

__all__ = [
    "ClaimOwner",
    "Outbox",
    "OutboxConfig",
    "OutboxReport",
    "check_templates",
    "outbox_config",
    "owner_is_gone",
    "send_due_confirmations",
    "this_process",
]

log = logging.getLogger(__name__)

# Long enough for one connect and one send under the SMTP timeouts; after a crash the row is
# picked again this long after the claim (at once when the dead owner ran on this host).
DEFAULT_CLAIM_TTL_S = 300.0
# A daemon beats every 5 s (its heartbeat part); one silent for this long (as `mailer status`
# judges a stale heartbeat), on any host, is gone, and the confirmations it had claimed are
# taken back.
SILENT_DAEMON_S = 30.0
# How often the daemon's outbox looks for due rows (retries) when nothing wakes it.
DEFAULT_INTERVAL_S = 30.0


@dataclass(frozen=True)
class OutboxConfig:
    sender: str            # the From header, may carry a display name
    envelope_sender: str   # MAIL FROM: the bare address
    templates_dir: Path | None
    smtp: smtp.SmtpConfig
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S
    batch: int = 50        # at most this many rows per `send_due_confirmations` call
    # `[bounces] address` and `[campaigns] secret` when confirmations are VERP-tagged.
    verp_address: str = ""
    verp_secret: str = field(default="", repr=False)
    signer: Signer | None = None  # `[dkim]`
    # `[campaigns] unsubscribe_url` and `secret`: each confirmation carries a signed link to
    # the customer's preference page (the way back in); none when either is unset.
    preferences_url: str = ""
    link_secret: str = field(default="", repr=False)

    def preferences_link(self, customer_id: int, outbox_id: int) -> str:
        if not (self.preferences_url and self.link_secret):
            return ""
        return unsubscribe_link(self.preferences_url,
                                confirmation_token(self.link_secret, customer_id, outbox_id))

    def mail_from(self, outbox_id: int) -> str:
        """The envelope sender of one confirmation (RFC 5321 §4.5.5: reports go there)."""
        if self.verp_address and self.verp_secret:
            return verp.address(self.verp_address, verp.Tag.confirmation(outbox_id),
                                self.verp_secret)
        return self.envelope_sender

    @property
    def message_id_domain(self) -> str:
        return self.sender_domain(self.sender)

    @staticmethod
    def sender_domain(sender: str) -> str:
        return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def outbox_config(settings: Settings) -> OutboxConfig:
    """The outbox's config, from the settings; loads the DKIM key (SettingsError: one line
    naming it)."""
    bounces = settings.bounces
    return OutboxConfig(
        sender=settings.smtp.sender,
        envelope_sender=bounces.address or settings.smtp.sender_address,
        templates_dir=settings.templates.dir,
        smtp=smtp.smtp_config(settings),
        verp_address=bounces.address if bounces.verp else "",
        verp_secret=settings.campaigns.secret if bounces.verp else "",
        signer=load_signer(settings.dkim),
        preferences_url=settings.campaigns.unsubscribe_url,
        link_secret=settings.campaigns.secret)


@dataclass
class OutboxReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def check_templates(config: OutboxConfig) -> None:
    """Render the confirmation once with sample values; raises TemplateError (one line naming
    the template and line) so a broken template stops the program at start, not mid-outbox."""
    render_confirmation(config.templates_dir, customer_name="Ann Example",
                        categories=("announcements", "offers"),
                        request_subject="Unsubscribe special offers",
                        preferences_url="https://example.com/u/1.o1.sample")


def this_process() -> ClaimOwner:
    return ClaimOwner(host=instance_name(), pid=os.getpid())


def owner_is_gone(owner: ClaimOwner, here: ClaimOwner) -> bool:
    """True when `owner` was a process on this host that no longer exists. A process on
    another host cannot be checked from here: its claims wait for their expiry."""
    if owner.host != here.host or owner.pid == here.pid:
        return False
    try:
        os.kill(owner.pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


async def _claim(
    conn: Connection, owner: ClaimOwner, clock: Clock, ttl_s: float, domain: str
) -> outbox_store.OutboxItem | None:
    """Take back the claims of dead local owners, then claim the next due row: one
    transaction, so the pick and the claim are one step. Claims expire by the database's
    clock on PostgreSQL (every host judges them by one clock), by `clock` on SQLite."""
    now_s = await leases.now_s(conn, clock)
    # Not exclusive: on PostgreSQL the claim locks its row and skips those other hosts are
    # claiming (`outbox_store.claim_next`), so outboxes on several hosts never wait in line.
    async with transaction(conn, "outbox: claiming a confirmation", exclusive=False):
        dead = [o for o in await outbox_store.claim_owners(conn, now_s=now_s)
                if owner_is_gone(o, owner)]
        # A daemon on another host that fell silent (killed, its host lost) is gone too: its
        # heartbeat says so long before its claims expire.
        silent_since = (clock.now() - timedelta(seconds=SILENT_DAEMON_S)).isoformat(
            timespec="microseconds")
        dead += [o for o in await outbox_store.silent_owners(
            conn, now_s=now_s, silent_since=silent_since) if o not in dead and o != owner]
        if dead:
            released = await outbox_store.release_claims(conn, dead)
            log.info("outbox: took back %d claim(s) of %d gone process(es)", released,
                     len(dead))
        return await outbox_store.claim_next(conn, owner, now=clock.now(), now_s=now_s,
                                             ttl_s=ttl_s, message_id=message_id(domain))


async def send_due_confirmations(
    conn: Connection,
    config: OutboxConfig,
    *,
    clock: Clock = SYSTEM_CLOCK,
    owner: ClaimOwner | None = None,
) -> OutboxReport:
    """Claim, send and mark due confirmations, one row at a time, up to `config.batch`;
    return counts. Never raises for SMTP trouble."""
    owner = owner or this_process()
    report = OutboxReport()
    client: smtp.Session | None = None
    try:
        for _ in range(config.batch):
            item = await _claim(conn, owner, clock, config.claim_ttl_s,
                                config.message_id_domain)
            if item is None:
                break
            now = clock.now()
            try:
                subject, text, html = render_confirmation(
                    config.templates_dir, customer_name=item.to_name,
                    categories=item.categories, request_subject=item.request_subject,
                    preferences_url=config.preferences_link(item.customer_id, item.id))
                message = build_confirmation(
                    sender=config.sender, to_address=item.to_address, to_name=item.to_name,
                    subject=subject, text=text, html=html,
                    in_reply_to=item.in_reply_to or None, references=item.refs,
                    message_id=item.message_id, date=now)
                if config.signer is not None:
                    message = config.signer.sign(message)
            except (TemplateError, ValueError) as exc:
                # This one cannot be built (e.g. an address on file no header can carry):
                # record why and go on with the rest, rather than stall the whole outbox.
                async with transaction(conn, "outbox: settling a confirmation", exclusive=False):
                    await outbox_store.mark_failed(
                        conn, item.id, error=f"cannot build the message: {exc}", retry_at=None)
                report.failed += 1
                log.error("confirmation %s to customer %s cannot be built: %s",
                          item.id, item.customer_id, exc)
                continue
            try:
                if client is None:
                    client = await smtp.connect(config.smtp)
                await client.send(config.mail_from(item.id), item.to_address, message,
                                  config.smtp.timeout_s)
            except PermanentSmtpError as exc:
                async with transaction(conn, "outbox: settling a confirmation", exclusive=False):
                    await outbox_store.mark_failed(conn, item.id, error=str(exc), retry_at=None)
                report.failed += 1
                log.warning("confirmation %s to customer %s failed: %s",
                            item.id, item.customer_id, exc)
                continue
            except TransientSmtpError as exc:
                when = backoff.CONFIRMATION.retry_at(item.attempts + 1, clock.now())
                async with transaction(conn, "outbox: settling a confirmation", exclusive=False):
                    await outbox_store.mark_failed(conn, item.id, error=str(exc), retry_at=when)
                if when is None:
                    report.failed += 1
                else:
                    report.retrying += 1
                log.warning("confirmation %s to customer %s not sent (%s); retry at %s",
                            item.id, item.customer_id, exc, when)
                if client is not None:
                    await client.close()
                    client = None
                continue
            async with transaction(conn, "outbox: settling a confirmation", exclusive=False):
                await outbox_store.mark_sent(conn, item.id, now=clock.now())
            report.sent += 1
            log.info("confirmation %s sent to customer %s", item.id, item.customer_id)
    finally:
        if client is not None:
            await client.close()
    return report


class Outbox:
    """The confirmations outbox as a part of the daemon (see the module docstring)."""

    policy: Backoff = backoff.RECONNECT

    def __init__(self, db_location: Location, config: OutboxConfig, *, part: Part,
                 interval_s: float = DEFAULT_INTERVAL_S, wake: asyncio.Event | None = None,
                 on_round: Callable[[OutboxReport], None] = lambda report: None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.db_location = db_location
        self.config = config
        self.part = part
        self.interval_s = interval_s
        self.wake = wake or asyncio.Event()
        self.on_round = on_round
        self.clock = clock

    async def run_once(self) -> OutboxReport:
        async with open_db(self.db_location) as conn:
            return await send_due_confirmations(conn, self.config, clock=self.clock)

    async def run(self, stop: asyncio.Event) -> None:
        async with open_db(self.db_location) as conn:
            self.part.running()
            # Confirmations queued on any host wake us (nothing to listen to on SQLite).
            listener = asyncio.ensure_future(wake_on(self.db_location, OUTBOX_CHANNEL, self.wake))
            try:
                await self._rounds(conn, stop)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _rounds(self, conn: Connection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Cleared before the round, not after the wait: a wake-up that comes while a
            # round runs must start the next one.
            self.wake.clear()
            report = await send_due_confirmations(conn, self.config, clock=self.clock)
            self.on_round(report)
            self.part.succeeded(last_round_at=self.clock.now().isoformat(timespec="seconds"))
            if report.sent or report.failed or report.retrying:
                log.info("outbox: %s sent, %s to retry, %s failed",
                         report.sent, report.retrying, report.failed)
            await wait_any(stop, self.wake, self.interval_s)
