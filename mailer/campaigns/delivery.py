"""One pooled connection's loop of deliveries: consent, build, send, retry, result.

For each claimed recipient a `Worker` (one per connection, `max_connections` of them in a
run) waits for its connection and the rate limiter, asks the consent gate, builds the message
and starts the SMTP transaction; the message itself goes out only once the previous result is
committed (that commit runs while the server reads the envelope); 4xx replies,
drops and timeouts are retried after `backoff.CAMPAIGN_SEND` on a fresh connection, deciding
consent again first. Each message goes out from its own VERP envelope sender
(`SendConfig.mail_from`), so a bounce names the campaign and customer. See `sender` for why
the steps come in this order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import Literal, Protocol

from mailer.campaigns.failures import SMTP_UNAVAILABLE, retry_delay_s
from mailer.campaigns.messages import Built, CampaignMessages, SendConfig
from mailer.campaigns.pool import Connection, RateLimiter, sleep_unless
from mailer.clock import Clock
from mailer.errors import (
    HeaderInjection,
    PermanentSmtpError,
    TemplateError,
    TemplateTooSlow,
    TransientSmtpError,
)
from mailer.mail.dkim_pool import SigningPool
from mailer.store.campaigns import Campaign, PauseCause, Recipient, RecipientResult
from mailer.store.consent import FRESH_S, ConsentGate
from mailer.store.ledger import Ledger

log = logging.getLogger(__name__)


class Run(Protocol):
    """What a worker needs of the run it belongs to (`sender`'s run over one campaign)."""

    config: SendConfig
    campaign: Campaign
    messages: CampaignMessages
    clock: Clock
    halted: asyncio.Event
    rate: RateLimiter
    ledger: Ledger
    gate: ConsentGate | None
    signing: SigningPool | None

    def halt(self, final: Literal["complete", "pause", "leave", "lost"],
             reason: str, cause: PauseCause = "") -> None:
        ...

    def lease_short(self) -> bool:
        ...

    async def wait_for_lease(self) -> bool:
        ...


class Worker:
    """One pooled connection and the messages that go through it, one at a time."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.connection = Connection(run.config.smtp, index)
        # The commit of this worker's last result: awaited before its next SMTP transaction.
        self.committed: asyncio.Future[None] | None = None

    async def _open(self) -> bool:
        """The connection, (re)opened with backoff; False if the run must stop."""
        run = self.run
        try:
            client = await self.connection.open(
                retry=run.config.retry, max_attempts=run.config.max_attempts,
                halted=run.halted, what=f"campaign {run.campaign.id}")
        except PermanentSmtpError as exc:
            run.halt("pause", f"paused: SMTP server refused us: {exc}", "smtp-refused")
            return False
        except TransientSmtpError as exc:
            run.halt("pause", f"{SMTP_UNAVAILABLE}: {exc}", "smtp-unavailable")
            return False
        return client is not None

    async def _prepare(self, customer_id: int
                       ) -> tuple[Recipient, Built, float] | RecipientResult | None:
        """Decide consent and build the message, right before the send: the recipient, the
        message and when the decision's read started; a result (skipped, failed) instead, or
        None if the run is stopping."""
        run = self.run
        assert run.gate is not None
        if run.halted.is_set():
            return None
        if run.lease_short() and not await run.wait_for_lease():
            return None
        # The consent check: from here to the message going out, only building it (its
        # signature made by a signing process), the envelope's round trip to the server and,
        # meanwhile, the previous result's commit (`_ready`).
        verdict = await run.gate.check(customer_id)
        if verdict.stop_reason:
            run.halt("leave", verdict.stop_reason)
            return None
        recipient = verdict.recipient
        if recipient is None:
            return RecipientResult(customer_id, "skipped", 0, verdict.skip_reason)
        try:
            built = await run.messages.build_signed(
                customer_id=customer_id, email=recipient.email, name=recipient.name,
                company=recipient.company, signing=run.signing)
        except TemplateTooSlow as exc:
            # The same template for everyone: the next recipient would stall the process as
            # long again. Stop the campaign and say why.
            run.halt("pause", f"paused: {exc}", "failures")
            return None
        except (TemplateError, HeaderInjection) as exc:
            return RecipientResult(customer_id, "failed", 0, f"not sent: {exc}")
        return recipient, built, verdict.read_at

    async def _ready(self, recipient: Recipient, decided_at: float) -> bool:
        """With the server waiting for the message: may it go out now? First the previous
        result's commit (at most one delivered-but-unrecorded message per connection), then,
        if the decision is older than `FRESH_S` by now (a busy database, a slow machine),
        consent decided again: the message goes out only if nothing about the recipient
        changed meanwhile; otherwise it is withdrawn and prepared again."""
        run = self.run
        if self.committed is not None:
            await run.ledger.wait(self.committed)
            self.committed = None
        if run.clock.monotonic() - decided_at <= FRESH_S:
            return True
        assert run.gate is not None
        return (await run.gate.check(recipient.customer_id)).recipient == recipient

    async def deliver(self, customer_id: int) -> RecipientResult | None:
        """Send to one claimed recipient; the result to record, or None to leave the row
        claimed (the run is stopping; it goes back to pending at the end)."""
        run, config = self.run, self.run.config
        attempts = 0
        last_reply = ""
        message_id = ""
        while True:
            if self.connection.client is None and not await self._open():
                return _unsent(customer_id, attempts, last_reply, message_id)
            if run.rate.limited:
                await run.rate.acquire()
            prepared = await self._prepare(customer_id)
            if prepared is None:
                return _unsent(customer_id, attempts, last_reply, message_id)
            if isinstance(prepared, RecipientResult):
                return dataclasses.replace(prepared, attempts=attempts, message_id=message_id)
            recipient, built, decided_at = prepared
            message_id = built.message_id
            if self.committed is not None:
                # The previous result's commit runs while the server reads the envelope.
                run.ledger.hurry(self.committed)
            try:
                reply = await self.connection.send(
                    config.mail_from(run.campaign.id, customer_id), recipient.email,
                    built.data, functools.partial(self._ready, recipient, decided_at))
            except PermanentSmtpError as exc:
                return RecipientResult(customer_id, "failed", attempts + 1, str(exc),
                                       message_id)
            except TransientSmtpError as exc:
                attempts += 1
                last_reply = str(exc)
                delay = retry_delay_s(config.retry, attempts, config.max_attempts)
                if delay is None:
                    return RecipientResult(customer_id, "failed", attempts, last_reply,
                                           message_id)
                log.info("campaign %s customer %s: %s; retry %s in %.1f s", run.campaign.id,
                         customer_id, last_reply, attempts + 1, delay)
                await sleep_unless(run.halted, delay)
                continue
            if reply is None:
                continue  # withdrawn before it went out: decided (and built) again
            return RecipientResult(customer_id, "sent", attempts + 1, reply, message_id)


def _unsent(customer_id: int, attempts: int, last_reply: str,
            message_id: str) -> RecipientResult | None:
    # Attempts already made are kept; the row returns to pending either way.
    if attempts == 0:
        return None
    return RecipientResult(customer_id, "pending", attempts, last_reply, message_id)

